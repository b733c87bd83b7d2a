package e2e

// From a review of the transaction-state and restart handling; each test
// failed while the problem it names existed.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/interlockhq/interlock/test/harness"
)

const txstateEnv = "INTERLOCK_E2E_CANCEL_CLOSE"

func init() {
	if os.Getenv(txstateEnv) == "cancel-close" {
		cancelAndClose()
		os.Exit(0)
	}
}

// cancelAndClose: a session runs pg_sleep(3); 300 ms in, a second
// connection sends the session's CancelRequest and closes at once, without
// waiting for the server to close first (as a client that fires and
// forgets does). Prints the sleep's SQLSTATE and duration.
func cancelAndClose() {
	out := map[string]any{}
	defer func() { json.NewEncoder(os.Stdout).Encode(out) }()
	dsn, addr := os.Getenv("HELPER_DSN"), os.Getenv("HELPER_ADDR")
	ctx := context.Background()
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		out["err"] = "connect: " + err.Error()
		return
	}
	defer conn.Close(ctx)
	go func() {
		time.Sleep(300 * time.Millisecond)
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			out["cancel_err"] = err.Error()
			return
		}
		msg := binary.BigEndian.AppendUint32(nil, 16)
		msg = binary.BigEndian.AppendUint32(msg, 80877102)
		msg = binary.BigEndian.AppendUint32(msg, conn.PID())
		msg = append(msg, conn.SecretKey()...)
		c.Write(msg)
		c.Close()
	}()
	start := time.Now()
	_, err = conn.Exec(ctx, "select pg_sleep(3)").ReadAll()
	out["ms"] = time.Since(start).Milliseconds()
	if pe, ok := err.(*pgconn.PgError); ok {
		out["code"] = pe.Code
	} else if err != nil {
		out["err"] = err.Error()
	}
}

// Sound check (5f9cf68's state checks): a CancelRequest whose client
// closes right after sending is still looked up and forwarded.
func TestCancelSendAndClose(t *testing.T) {
	e := setupPG(t, "")
	addr := fmt.Sprintf("127.0.0.1:%d", e.pg.Port)
	cmd := harness.Command(t, e.analyst, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), txstateEnv+"=cancel-close", "HELPER_DSN="+e.dsn("127.0.0.1"), "HELPER_ADDR="+addr)
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("client: %v %s", err, b)
	}
	var res map[string]any
	json.Unmarshal(b, &res)
	t.Logf("client: %v", res)
	if res["code"] != "57014" {
		t.Errorf("fire-and-forget CancelRequest did not cancel the query: %v\n%s", res, grepLogs(e.d.Logs(), "cancel", "refused"))
	}
}

func grepLogs(logs string, words ...string) string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// 7ae62f6: in_transaction is decided at Parse. pgx's default mode caches
// prepared statements per connection: a DELETE first run inside a
// transaction is parsed (and decided) there, and the same SQL run later in
// autocommit is only bound and executed, never decided again. A rule
// that allows deletes only inside a transaction then lets it run in
// autocommit, with an ordinary driver and no intent.
func TestPgxCachedStatementInTransaction(t *testing.T) {
	e := setupPG(t, "")
	pol, _ := os.ReadFile(e.d.PolicyPath)
	old := `      - {id: write, actions: [insert, update, delete, merge], tables: ["public.*"], decision: allow}`
	repl := `      - {id: write, actions: [insert, update, merge], tables: ["public.*"], decision: allow}
      - {id: delete-in-tx, actions: [delete], tables: ["public.*"], when: {in_transaction: true}, decision: allow}`
	if !strings.Contains(string(pol), old) {
		t.Fatal("policy edit did not apply")
	}
	gen := e.d.Metric("interlock_policy_generation")
	e.d.WritePolicy(strings.Replace(string(pol), old, repl, 1))
	e.d.Signal(syscall.SIGHUP)
	if !harness.WaitFor(5*time.Second, func() bool { return e.d.Metric("interlock_policy_generation") > gen }) {
		t.Fatal("policy not reloaded")
	}
	// Control: in autocommit, a fresh DELETE is refused.
	_, res := harness.RunPgx(t, e.writer, e.dsn("127.0.0.1"), harness.PgxStep{SQL: "delete from orders where id = $1", Args: []any{7}})
	if res[0].Err == "" {
		t.Fatalf("control: DELETE in autocommit allowed: %+v", res[0])
	}
	_, res = harness.RunPgx(t, e.writer, e.dsn("127.0.0.1"),
		harness.PgxStep{SQL: "begin"},
		harness.PgxStep{SQL: "delete from orders where id = $1", Args: []any{8}},
		harness.PgxStep{SQL: "commit"},
		harness.PgxStep{SQL: "delete from orders where id = $1", Args: []any{9}},
	)
	t.Logf("steps: %+v", res)
	if len(res) == 4 && res[3].Err == "" {
		t.Errorf("BYPASS: pgx's cached DELETE ran in autocommit (%+v) under a rule allowing deletes only in a transaction; rows left with id 9: %s",
			res[3], e.sql(t, "select count(*) from orders where id = 9"))
	}
}
