package postgres

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/interlockhq/interlock/engine/approvals"
	"github.com/interlockhq/interlock/engine/policy"
)

const approvalPolicy = `version: 1
targets:
  - {name: db, protocol: postgres, address: "127.0.0.1:5432", credentials: {user: app, password_env: X}}
agents:
  - {name: writer, roles: [writer]}
roles:
  - name: writer
    rules:
      - {id: read, actions: [read], tables: ["public.*"], decision: allow}
      - {id: tx, actions: [transaction], decision: allow}
      - id: delete-needs-approval
        actions: [delete]
        tables: ["public.*"]
        decision: approve
        approval: {approvers: [dba], timeout: 2s, in_transaction_timeout: 300ms, on_timeout_in_transaction: terminate}
      - id: update-needs-approval
        actions: [update]
        tables: ["public.*"]
        decision: approve
        approval: {approvers: [dba], timeout: 2s, in_transaction_timeout: 300ms}
`

// newApprovalSession is a pipe session (see relay_test.go) of agent writer
// with the approval stage, starting in transaction state txStatus.
func newApprovalSession(t *testing.T, txStatus byte) (*pipeSession, *approvals.Manager) {
	t.Helper()
	m, err := approvals.New(approvals.Config{Host: "test", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ps := newPipeSessionAs(t, approvalPolicy, "writer", txStatus, Config{}, func(polf func() *policy.Policy) Observer {
		return Observers{NewApprovals(m, "parameters", polf)}
	})
	return ps, m
}

// pendingID reads the agent's "approval pending" notice and returns the id.
func pendingID(t *testing.T, ps *pipeSession) string {
	t.Helper()
	n, ok := ps.agentReceive(t).(*pgproto3.NoticeResponse)
	if !ok || !strings.Contains(n.Message, "approval pending: id ") {
		t.Fatalf("agent got %#v, want the approval-pending notice", n)
	}
	id, _, _ := strings.Cut(n.Message[strings.Index(n.Message, "id ")+3:], ",")
	return id
}

var dba = approvals.Approver{Subject: "alice", Roles: []string{"dba"}}

func TestApprovalApprovedIsForwarded(t *testing.T) {
	ps, m := newApprovalSession(t, 'I')
	ps.send(t, &pgproto3.Query{String: "delete from orders where id = 42"})
	id := pendingID(t, ps)
	r, err := m.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if r.Statement != "delete from orders where id = $1" || r.Rule != "delete-needs-approval" || r.Agent != "writer" || r.Session != ps.ss.s.UID {
		t.Fatalf("request %+v", r)
	}
	// Nothing reaches the server while the statement is held.
	ps.server.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := ps.serverBE.Receive(); err == nil {
		t.Fatal("the held statement reached the server")
	}
	if _, err := m.Decide(context.Background(), id, dba, true, "ok", r.Digest); err != nil {
		t.Fatal(err)
	}
	if q := ps.serverReceive(t).(*pgproto3.Query); q.String != "delete from orders where id = 42" {
		t.Fatalf("server got %q", q.String)
	}
}

func TestApprovalDeniedIsRefused(t *testing.T) {
	ps, m := newApprovalSession(t, 'I')
	ps.send(t, &pgproto3.Query{String: "delete from orders where id = 42"})
	id := pendingID(t, ps)
	if _, err := m.Decide(context.Background(), id, dba, false, "not today", ""); err != nil {
		t.Fatal(err)
	}
	sentinel := ps.serverReceive(t).(*pgproto3.Query).String
	if !strings.HasPrefix(sentinel, "interlock_blocked_") {
		t.Fatalf("denied statement reached the server as %q", sentinel)
	}
	ps.serverSend(t, &pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: `syntax error at or near "` + sentinel + `"`}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	e, ok := ps.agentReceive(t).(*pgproto3.ErrorResponse)
	if !ok || e.Code != "42501" || !strings.Contains(e.Message, "denied by alice: not today") {
		t.Fatalf("agent got %#v", e)
	}
}

func TestApprovalTimeoutInTransactionAborts(t *testing.T) {
	ps, _ := newApprovalSession(t, 'T')
	ps.send(t, &pgproto3.Query{String: "update orders set amount = 0 where id = 1"})
	pendingID(t, ps)
	start := time.Now()
	sentinel := ps.serverReceive(t).(*pgproto3.Query).String
	if d := time.Since(start); d < 200*time.Millisecond || d > 2*time.Second {
		t.Errorf("in-transaction timeout after %s, want ~300ms", d)
	}
	ps.serverSend(t, &pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: `syntax error at or near "` + sentinel + `"`}, &pgproto3.ReadyForQuery{TxStatus: 'E'})
	if e, ok := ps.agentReceive(t).(*pgproto3.ErrorResponse); !ok || e.Code != "57014" || e.Severity != "ERROR" {
		t.Fatalf("agent got %#v, want ERROR 57014", e)
	}
}

func TestApprovalTimeoutInTransactionTerminates(t *testing.T) {
	ps, _ := newApprovalSession(t, 'T')
	ps.send(t, &pgproto3.Query{String: "delete from orders where id = 1"})
	pendingID(t, ps)
	e, ok := ps.agentReceive(t).(*pgproto3.ErrorResponse)
	if !ok || e.Code != "57014" || e.Severity != "FATAL" || !strings.Contains(e.Message, "terminating the session") {
		t.Fatalf("agent got %#v, want FATAL 57014", e)
	}
	select {
	case err := <-ps.done:
		ps.done <- err
		if _, ok := err.(*Terminate); !ok {
			t.Errorf("session ended with %v, want the Terminate", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("session still open after the terminate")
	}
	// The upstream connection is closed: the server rolls back.
	ps.server.SetReadDeadline(time.Now().Add(time.Second))
	for {
		m, err := ps.serverBE.Receive()
		if err != nil {
			break
		}
		if q, ok := m.(*pgproto3.Query); ok {
			t.Fatalf("server got %q", q.String)
		}
	}
}

// TestApprovedUnnamedStatementIsNamed: an approved statement parsed as the
// unnamed statement goes to the server under a name of its own, so that an
// unnamed Parse the server skips later cannot leave it bindable as "".
func TestApprovedUnnamedStatementIsNamed(t *testing.T) {
	ps, m := newApprovalSession(t, 'I')
	ps.send(t, &pgproto3.Parse{Query: "delete from orders where id = $1"})
	id := pendingID(t, ps)
	r, err := m.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Decide(context.Background(), id, dba, true, "ok", r.Digest); err != nil {
		t.Fatal(err)
	}
	ps.send(t, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	p := ps.serverReceive(t).(*pgproto3.Parse)
	name := strings.Clone(p.Name)
	if !strings.HasPrefix(name, stmtPrefix) {
		t.Fatalf("approved unnamed Parse forwarded as %q", name)
	}
	if b := ps.serverReceive(t).(*pgproto3.Bind); b.PreparedStatement != name {
		t.Fatalf("its Bind forwarded as %q, want %q", b.PreparedStatement, name)
	}
}
