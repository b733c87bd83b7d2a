package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/interlockhq/interlock/test/harness"
)

// TestHeldStatementEndsWithTheAgent: a statement held for an approval is
// dropped when the agent cancels it or goes away, so an approval given
// afterwards can never run it.
func TestHeldStatementEndsWithTheAgent(t *testing.T) {
	e := setupApprovals(t)
	h := e.host(t, "h1", "")
	dba := e.token(t, "alice", "db-admins")

	t.Run("agent cancels", func(t *testing.T) {
		// pgx sends a CancelRequest when the step's context times out.
		ch := agent(t, h.writer, e.agentDSN(), harness.PgxStep{SQL: "delete from orders where id = 3", TimeoutMS: 1500})
		reqs := waitPending(t, h.api, dba, 1)
		res := results(t, ch)
		if res[0].Code != "57014" {
			t.Fatalf("cancelled held statement: %+v, want 57014", res[0])
		}
		waitPending(t, h.api, dba, 0)
		if code, _ := apiCall(t, "POST", h.api+"/v1/approvals/"+reqs[0].ID+"/approve", dba, map[string]string{"reason": "late"}); code == http.StatusOK {
			t.Errorf("a cancelled request could still be approved")
		}
		if e.sql(t, "select count(*) from orders where id = 3") != "1" {
			t.Error("the cancelled delete ran")
		}
	})

	t.Run("agent disconnects", func(t *testing.T) {
		// psql killed while its DELETE waits: its connection closes.
		cmd := harness.Command(t, h.writer, "psql", "-X", "-d", e.agentDSN(), "-c", "delete from orders where id = 4")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		reqs := waitPending(t, h.api, dba, 1)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		waitPending(t, h.api, dba, 0)
		code, body := apiCall(t, "POST", h.api+"/v1/approvals/"+reqs[0].ID+"/approve", dba, map[string]string{"reason": "late"})
		if code == http.StatusOK {
			t.Errorf("the request of a gone agent could still be approved: %s", body)
		}
		time.Sleep(300 * time.Millisecond)
		if e.sql(t, "select count(*) from orders where id = 4") != "1" {
			t.Error("the delete of a gone agent ran")
		}
		if logs := h.d.Logs(); !strings.Contains(logs, "approval") {
			t.Logf("daemon log lacks approval lines")
		}
	})

	t.Run("agent pipelines more, then disconnects", func(t *testing.T) {
		// A byte sent after the first query was read stays queued on the
		// socket while that query is held: the agent's going away must
		// still be seen.
		var payload []byte
		for _, m := range []pgproto3.FrontendMessage{
			&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "agent", "database": "postgres"}},
			&pgproto3.Query{String: "delete from orders where id = 5"},
		} {
			var err error
			if payload, err = m.Encode(payload); err != nil {
				t.Fatal(err)
			}
		}
		done := make(chan harness.DialResult, 1)
		go func() {
			done <- harness.DialRaw(t, h.writer, "tcp4-late-byte", fmt.Sprintf("127.0.0.1:%d", e.pg.Port), payload)
		}()
		reqs := waitPending(t, h.api, dba, 1)
		<-done // the raw client closes its connection after 3 s of quiet
		waitPending(t, h.api, dba, 0)
		if code, body := apiCall(t, "POST", h.api+"/v1/approvals/"+reqs[0].ID+"/approve", dba, map[string]string{"reason": "late"}); code == http.StatusOK {
			t.Errorf("the request of a gone agent could still be approved: %s", body)
		}
		time.Sleep(300 * time.Millisecond)
		if e.sql(t, "select count(*) from orders where id = 5") != "1" {
			t.Error("the delete of a gone agent ran")
		}
	})
}
