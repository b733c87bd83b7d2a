package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/interlockhq/interlock/test/harness"
)

// Attacks on approvals found in a review: each got a statement run without
// the human decision it needed before its fix.

// TestApprovalCoversOneExecution: an approval given for a prepared
// statement's Parse covers its first execution only; each later Bind (a
// named statement, pgx's statement cache) is a new request for a human.
func TestApprovalCoversOneExecution(t *testing.T) {
	e := setupApprovals(t)
	h := e.host(t, "h1", "")
	dba := e.token(t, "alice", "db-admins")
	e.sql(t, "truncate notes")

	ch := agent(t, h.writer, e.agentDSN(),
		harness.PgxStep{Parse: "d", SQL: "delete from orders where id = $1"},
		harness.PgxStep{Prepared: "d", Args: []any{20}},
		harness.PgxStep{Prepared: "d", Args: []any{21}},
		harness.PgxStep{Prepared: "d", Args: []any{22}},
		// pgx's statement cache: the same text three times, one Parse.
		harness.PgxStep{SQL: "insert into notes (body) values ('once')"},
		harness.PgxStep{SQL: "insert into notes (body) values ('once')"},
		harness.PgxStep{SQL: "insert into notes (body) values ('once')"},
	)
	decide := func(verb string) {
		t.Helper()
		reqs := waitPending(t, h.api, dba, 1)
		if out, err := h.d.CLI("approvals", verb, reqs[0].ID, "--reason", "review"); err != nil {
			t.Fatalf("%s %s: %v %s", verb, reqs[0].Statement, err, out)
		}
	}
	// delete: approve (id 20), deny (21), deny (22); insert: approve, deny, deny.
	for _, verb := range []string{"approve", "deny", "deny", "approve", "deny", "deny"} {
		decide(verb)
	}
	res := results(t, ch)
	for i, r := range res {
		t.Logf("step %d: %+v", i, r)
	}
	if left := e.sql(t, "select string_agg(id::text, ',' order by id) from orders where id in (20, 21, 22)"); left != "21,22" {
		t.Errorf("orders left of 20-22: %s, want 21,22 (one approval, one delete)", left)
	}
	if notes := e.sql(t, "select count(*) from notes"); notes != "1" {
		t.Errorf("one approval inserted %s notes, want 1", notes)
	}
	for _, i := range []int{2, 3, 5, 6} {
		if res[i].Code != "42501" {
			t.Errorf("step %d after a denial: %+v, want 42501", i, res[i])
		}
	}
}

// TestStoreTablesRefused: with approvals.store: postgres on the same server
// as a target (no `database` pin on the target), an agent whose role may
// update public.* connects to the store's database through Interlock and
// tries to write the decision of its own held statement: statements naming
// Interlock's tables are refused.
func TestStoreTablesRefused(t *testing.T) {
	e := setupApprovals(t)
	e.sql(t, "create database approvals")
	store := fmt.Sprintf("  store: postgres\n  dsn: postgres://postgres:%s@127.0.0.1:%d/approvals?sslmode=disable\n", e.pg.Password, e.pg.Port)
	h := e.host(t, "h1", store)
	// The writer may insert and update anything in public, deletes of
	// orders need a dba.
	pol := strings.Replace(approvalsPolicy(e.pg.Port, e.pwFile),
		`      - {id: delete-orders,`,
		`      - {id: write, actions: [insert, update], tables: ["public.*"], decision: allow}
      - {id: delete-orders,`, 1)
	pol = strings.Replace(pol, "      - {id: update-orders, actions: [update], tables: [public.orders], decision: approve, approval: {approvers: [dba], timeout: 1s}}\n", "", 1)
	pol = strings.Replace(pol, "      - {id: insert-notes, actions: [insert], tables: [public.notes], decision: approve, approval: {approvers: [dba], timeout: 30s}}\n", "", 1)
	gen := h.d.Metric("interlock_policy_generation")
	h.d.WritePolicy(pol)
	h.d.Signal(syscall.SIGHUP)
	if !harness.WaitFor(5*time.Second, func() bool { return h.d.Metric("interlock_policy_generation") > gen }) {
		t.Fatal("policy not reloaded")
	}
	ch := agent(t, h.writer, e.agentDSN(), harness.PgxStep{SQL: "delete from orders where id = 33", Mode: "simple"})
	time.Sleep(500 * time.Millisecond)
	// The same agent, second connection, asks for the store's database.
	dsn := strings.Replace(e.agentDSN(), "/postgres?", "/approvals?", 1)
	_, res := harness.RunPgx(t, h.writer, dsn,
		harness.PgxStep{SQL: "select id, outcome from interlock_approvals", Mode: "simple"},
		harness.PgxStep{SQL: "update interlock_approvals set outcome = 'approved', decided_by = 'alice', decided_at = now() where outcome is null", Mode: "simple"})
	t.Logf("agent in the store database: %+v", res)
	for i, r := range res {
		if r.Code != "42501" {
			t.Errorf("step %d on Interlock's table: %+v, want 42501", i, r)
		}
	}
	select {
	case r := <-ch:
		t.Logf("held delete: %+v", r)
	case <-time.After(10 * time.Second):
		t.Log("held delete still waiting")
	}
	if e.sql(t, "select count(*) from orders where id = 33") == "0" {
		t.Errorf("the agent approved its own delete through the shared store")
	}
}
