package postgres

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/interlockhq/interlock/engine/policy"
)

// TestPreparedAttackBindOfSQLPreparedAfterReload: a protocol Bind of a name
// from SQL PREPARE is decided again under the policy in force, like SQL
// EXECUTE of it: a statement the reloaded policy blocks does not run.
func TestPreparedAttackBindOfSQLPreparedAfterReload(t *testing.T) {
	ps := newMaskPipeSession(t, &MaskingConfig{})
	ps.send(t, &pgproto3.Query{String: "prepare p as select * from orders"})
	ps.serverReceive(t)
	ps.serverSend(t, &pgproto3.CommandComplete{CommandTag: []byte("PREPARE")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	wantTypes(t, ps, "CommandComplete", "ReadyForQuery")

	blocked := strings.Replace(maskPolicy, "decision: allow}\n      - {id: mask-customers", "decision: block}\n      - {id: mask-customers", 1)
	if blocked == maskPolicy {
		t.Fatal("policy edit did not apply")
	}
	pol, err := policy.Parse("unit.yaml", []byte(blocked))
	if err != nil {
		t.Fatal(err)
	}
	ps.policy.Store(pol)

	// SQL EXECUTE: refused under the new policy.
	ps.send(t, &pgproto3.Query{String: "execute p"})
	if q := ps.serverReceive(t).(*pgproto3.Query); !strings.HasPrefix(q.String, sentinelPrefix) {
		t.Errorf("SQL EXECUTE of a statement the reloaded policy blocks forwarded as %q", q.String)
	}
	ps.serverSend(t, &pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: "syntax error"}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	// Protocol Bind of the same name.
	ps.send(t, &pgproto3.Bind{PreparedStatement: "p"}, &pgproto3.Execute{}, &pgproto3.Sync{})
	if b := ps.serverReceive(t).(*pgproto3.Bind); !strings.HasPrefix(b.PreparedStatement, sentinelPrefix) {
		t.Errorf("Bind of a SQL-prepared statement the reloaded policy blocks forwarded as %q", b.PreparedStatement)
	}
}

// TestPreparedAttackPendingGrowsWhenSkipped: a refused Parse that the
// server skips (an earlier error in the pipeline segment) never answers
// with the sentinel's error; its entry in ss.pending must still go, at
// the ReadyForQuery of its Sync, or an agent could grow the relay's memory
// one ErrorResponse per message.
func TestPreparedAttackPendingGrowsWhenSkipped(t *testing.T) {
	ps := newMaskPipeSession(t, &MaskingConfig{})
	const n = 200
	go func() {
		for {
			m, err := ps.serverBE.Receive()
			if err != nil {
				return
			}
			switch m.(type) {
			case *pgproto3.Parse:
				// The first Parse fails; the server skips the rest.
			case *pgproto3.Sync:
				ps.serverSendAsync(t, &pgproto3.ErrorResponse{Severity: "ERROR", Code: "42P01", Message: "relation \"nosuch\" does not exist"}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
				return
			}
		}
	}()
	ps.send(t, &pgproto3.Parse{Query: "select * from orders"})
	for range n {
		ps.send(t, &pgproto3.Parse{Query: "drop table orders"}) // refused: a sentinel
	}
	ps.send(t, &pgproto3.Sync{})
	wantTypes(t, ps, "ErrorResponse", "ReadyForQuery")
	ps.ss.mu.Lock()
	left := len(ps.ss.pending)
	ps.ss.mu.Unlock()
	if left >= n {
		t.Errorf("%d sentinel errors left in ss.pending after their messages were skipped", left)
	}
}

// TestPreparedAttackCursorMaskStaleAfterReload: a SQL cursor executed
// through the protocol must not keep the mask its first Execute got (the
// session's masks then): after a reload that masks orders, a cursor of the
// same name over orders gets the new masks and is described again.
func TestPreparedAttackCursorMaskStaleAfterReload(t *testing.T) {
	ps := newMaskPipeSession(t, &MaskingConfig{})
	ps.send(t, &pgproto3.Query{String: "declare c cursor with hold for select * from orders"})
	ps.serverReceive(t)
	ps.serverSend(t, &pgproto3.CommandComplete{CommandTag: []byte("DECLARE CURSOR")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	wantTypes(t, ps, "CommandComplete", "ReadyForQuery")
	ordersFields := []pgproto3.FieldDescription{{Name: []byte("id"), DataTypeOID: 23}, {Name: []byte("secret"), DataTypeOID: 25}}
	ps.send(t, &pgproto3.Execute{Portal: "c"}, &pgproto3.Sync{})
	if d, ok := ps.serverReceive(t).(*pgproto3.Describe); !ok || d.Name != "c" {
		t.Fatalf("no injected Describe")
	}
	ps.serverReceive(t)
	ps.serverReceive(t)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		ps.serverSendAsync(t, &pgproto3.RowDescription{Fields: ordersFields},
			&pgproto3.DataRow{Values: [][]byte{[]byte("1"), []byte("x")}}, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	}()
	wantTypes(t, ps, "DataRow", "CommandComplete", "ReadyForQuery")
	<-sent

	// Reload: orders.secret is now redacted for this agent.
	reloaded := strings.Replace(maskPolicy, `- {id: read, actions: [read], tables: ["public.orders"], decision: allow}`,
		`- {id: mask-orders, actions: [read], tables: ["public.orders"], decision: mask, mask: {columns: {secret: redact}}}`, 1)
	if reloaded == maskPolicy {
		t.Fatal("policy edit did not apply")
	}
	pol, err := policy.Parse("unit.yaml", []byte(reloaded))
	if err != nil {
		t.Fatal(err)
	}
	ps.policy.Store(pol)

	ps.send(t, &pgproto3.Query{String: "close c; declare c cursor with hold for select * from orders"})
	ps.serverReceive(t)
	ps.serverSend(t, &pgproto3.CommandComplete{CommandTag: []byte("CLOSE CURSOR")}, &pgproto3.CommandComplete{CommandTag: []byte("DECLARE CURSOR")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	wantTypes(t, ps, "CommandComplete", "CommandComplete", "ReadyForQuery")
	ps.send(t, &pgproto3.Execute{Portal: "c"}, &pgproto3.Sync{})
	var answer []pgproto3.BackendMessage
	m := ps.serverReceive(t)
	if d, ok := m.(*pgproto3.Describe); ok {
		t.Logf("Describe injected again (%q)", d.Name)
		ps.serverReceive(t)
		answer = append(answer, &pgproto3.RowDescription{Fields: ordersFields})
	}
	ps.serverReceive(t)
	answer = append(answer, &pgproto3.DataRow{Values: [][]byte{[]byte("1"), []byte("s3cr3t")}}, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	sent = make(chan struct{})
	go func() { defer close(sent); ps.serverSendAsync(t, answer...) }()
	got := wantTypes(t, ps, "DataRow")
	defer func() { <-sent }()
	if v := string(got[0].(*pgproto3.DataRow).Values[1]); v == "s3cr3t" {
		t.Errorf("cursor row after the reload reached the agent unmasked: %q", v)
	}
}

// TestPreparedAttackBindSkipsCatalogReads: a Bind of a SQL-prepared
// statement is decided again under the policy in force, with the same
// expansion EXECUTE gets: reading pg_stats reads every table's values.
func TestPreparedAttackBindSkipsCatalogReads(t *testing.T) {
	wide := strings.Replace(maskPolicy, `tables: ["public.orders"], decision: allow}`, `decision: allow}`, 1)
	narrow := strings.Replace(maskPolicy, `tables: ["public.orders"], decision: allow}`, `tables: ["pg_catalog.*", "public.orders"], decision: allow}`, 1)
	if wide == maskPolicy || narrow == maskPolicy {
		t.Fatal("policy edit did not apply")
	}
	ps := newPipeSessionFor(t, wide, Config{})
	ps.send(t, &pgproto3.Query{String: "prepare p as select * from pg_stats"})
	if q := ps.serverReceive(t).(*pgproto3.Query); strings.HasPrefix(q.String, sentinelPrefix) {
		t.Fatalf("PREPARE under a policy allowing every table refused")
	}
	ps.serverSend(t, &pgproto3.CommandComplete{CommandTag: []byte("PREPARE")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	wantTypes(t, ps, "CommandComplete", "ReadyForQuery")

	pol, err := policy.Parse("unit.yaml", []byte(narrow))
	if err != nil {
		t.Fatal(err)
	}
	ps.policy.Store(pol)
	ps.send(t, &pgproto3.Bind{PreparedStatement: "p"}, &pgproto3.Execute{}, &pgproto3.Sync{})
	if b := ps.serverReceive(t).(*pgproto3.Bind); !strings.HasPrefix(b.PreparedStatement, sentinelPrefix) {
		t.Errorf("Bind of a pg_stats read forwarded as %q under a policy that allows pg_catalog but not every table", b.PreparedStatement)
	}
}
