package postgres

// From a third review of the transaction-state tracking; each test failed
// while the problem it names existed.

import (
	"github.com/interlockhq/interlock/engine/policy"
	"github.com/interlockhq/interlock/engine/recording"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// A simple Query inside an open extended-protocol segment runs (the server
// executes it at once and answers with ReadyForQuery) but does not update
// segTxKnown/segInTx. After Execute(BEGIN), Query("commit") ends the block,
// yet a DELETE parsed next in the same segment is decided "certainly in a
// transaction" and runs in autocommit. txPolicy allows the DELETE only in
// a transaction.
func TestQueryInsideSegmentEndsBlock(t *testing.T) {
	ps := newPipeSessionAs(t, txPolicy, "analyst", 'I', Config{}, nil)
	ps.send(t,
		&pgproto3.Parse{Query: "begin"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Query{String: "commit"},
		&pgproto3.Parse{Query: txDelete}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Sync{})
	ps.serverReceive(t) // Parse begin
	ps.serverReceive(t) // Bind
	ps.serverReceive(t) // Execute
	if q := ps.serverReceive(t).(*pgproto3.Query); q.String != "commit" {
		t.Fatalf("COMMIT forwarded as %q", q.String)
	}
	p := ps.serverReceive(t).(*pgproto3.Parse)
	b := ps.serverReceive(t).(*pgproto3.Bind)
	if !strings.HasPrefix(p.Query, sentinelPrefix) && !strings.HasPrefix(b.PreparedStatement, sentinelPrefix) {
		t.Errorf("BYPASS: Execute(BEGIN), Query(COMMIT), Parse/Bind/Execute(DELETE) in one segment: the DELETE (allowed only in a transaction) was forwarded (Parse %q) and runs in autocommit after the simple-query COMMIT", p.Query)
	}
}

// The mirror image with a Query that opens a block: Execute(COMMIT) sets
// "certainly outside", Query("begin") opens a block, and the DELETE
// (blocked inside transactions) is decided outside one.
func TestQueryInsideSegmentOpensBlock(t *testing.T) {
	ps := newPipeSessionAs(t, txBlockPolicy, "analyst", 'T', Config{}, nil)
	ps.send(t,
		&pgproto3.Parse{Query: "commit"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Query{String: "begin"},
		&pgproto3.Parse{Query: txDelete}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Sync{})
	ps.serverReceive(t)
	ps.serverReceive(t)
	ps.serverReceive(t)
	if q := ps.serverReceive(t).(*pgproto3.Query); q.String != "begin" {
		t.Fatalf("BEGIN forwarded as %q", q.String)
	}
	p := ps.serverReceive(t).(*pgproto3.Parse)
	b := ps.serverReceive(t).(*pgproto3.Bind)
	if !strings.HasPrefix(p.Query, sentinelPrefix) && !strings.HasPrefix(b.PreparedStatement, sentinelPrefix) {
		t.Errorf("BYPASS: Execute(COMMIT), Query(BEGIN), DELETE: the DELETE (blocked in a transaction) was forwarded and runs inside the block the Query opened")
	}
}

// txBlockPolicy: DELETE allowed, but not inside a transaction block.
const txBlockPolicy = txPolicyHead + `      - {id: delete, actions: [delete], tables: [public.orders], decision: allow}
      - {id: no-delete-in-tx, actions: [delete], tables: [public.orders], when: {in_transaction: true}, decision: block}
`

// The decision is taken at Parse/Bind, with the state of that moment, and
// the portal runs at its Execute. A portal bound before an Execute(BEGIN)
// of the same segment survives the BEGIN (the implicit transaction becomes
// the block) and runs inside the block, decided "certainly outside".
func TestPortalBoundBeforeBeginExecutedInside(t *testing.T) {
	ps := newPipeSessionAs(t, txBlockPolicy, "analyst", 'I', Config{}, nil)
	ps.send(t,
		&pgproto3.Parse{Name: "b", Query: "begin"}, &pgproto3.Bind{PreparedStatement: "b", DestinationPortal: "pb"},
		&pgproto3.Parse{Name: "d", Query: txDelete}, &pgproto3.Bind{PreparedStatement: "d", DestinationPortal: "pd"},
		&pgproto3.Execute{Portal: "pb"},
		&pgproto3.Execute{Portal: "pd"},
		&pgproto3.Sync{})
	ps.serverReceive(t) // Parse b
	ps.serverReceive(t) // Bind pb
	p := ps.serverReceive(t).(*pgproto3.Parse)
	b := ps.serverReceive(t).(*pgproto3.Bind)
	ps.serverReceive(t) // Execute pb
	e := ps.serverReceive(t)
	if !strings.HasPrefix(p.Query, sentinelPrefix) && !strings.HasPrefix(b.PreparedStatement, sentinelPrefix) {
		if _, isExec := e.(*pgproto3.Execute); isExec {
			t.Errorf("BYPASS: DELETE (blocked inside transactions) bound before Execute(BEGIN) in the same segment and executed after it: forwarded, runs inside the block")
		}
	}
}

// txBothPolicy: DELETE allowed in and out of transactions, but a rule tests
// in_transaction, so a Bind in another state than its Parse decides again.
const txBothPolicy = txPolicyHead + `      - {id: read, actions: [select], decision: allow}
      - {id: delete, actions: [delete], tables: [public.orders], decision: allow}
      - {id: delete-in-tx, actions: [delete], tables: [public.orders], when: {in_transaction: true}, decision: allow}
`

// A Bind decided again (the transaction state moved since the Parse) is
// recorded as a new statement that waits for a result, while the Parse's
// record still waits too. Results are paired first-in first-out, so from
// then on every result is recorded against an earlier statement: here the
// DELETE's row count goes to the Parse's record and the later SELECT's
// result to the re-decided DELETE. A pgx/psycopg batch "BEGIN; DELETE;
// COMMIT" (all Parses first, then Bind/Execute) does this on its own.
func TestRedecideShiftsRecordedResults(t *testing.T) {
	rec, dir := openTestRecorder(t, recording.RedactNone)
	ps := newPipeSessionAs(t, txBothPolicy, "analyst", 'I', Config{}, func(func() *policy.Policy) Observer { return NewRecorder(rec) })
	if err := rec.SessionStarted(ps.ss.s); err != nil {
		t.Fatal(err)
	}
	ps.send(t,
		&pgproto3.Parse{Name: "b", Query: "begin"}, &pgproto3.Parse{Name: "d", Query: txDelete},
		&pgproto3.Bind{PreparedStatement: "b"}, &pgproto3.Execute{},
		&pgproto3.Bind{PreparedStatement: "d"}, &pgproto3.Execute{},
		&pgproto3.Sync{})
	for range 7 {
		ps.serverReceive(t)
	}
	ps.serverSend(t, &pgproto3.ParseComplete{}, &pgproto3.ParseComplete{},
		&pgproto3.BindComplete{}, &pgproto3.CommandComplete{CommandTag: []byte("BEGIN")},
		&pgproto3.BindComplete{}, &pgproto3.CommandComplete{CommandTag: []byte("DELETE 5")},
		&pgproto3.ReadyForQuery{TxStatus: 'T'})
	for range 7 {
		ps.agentReceive(t)
	}
	ps.send(t, &pgproto3.Query{String: "select 1"})
	ps.serverReceive(t)
	ps.serverSend(t, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'T'})
	ps.agentReceive(t)
	ps.agentReceive(t)
	rec.SessionEnded(ps.ss.s, nil)
	rec.Close()

	sts, res := sessionEvents(t, dir, ps.ss.s.UID)
	textOf := map[int]string{}
	for _, s := range sts {
		textOf[s.N] = s.Text
	}
	for _, r := range res {
		if r.Tag == "SELECT 1" && textOf[r.N] != "select 1" {
			t.Errorf("RECORD MISPAIRED: the SELECT's result is recorded as the result of statement %d %q (statements %d, results %d)", r.N, textOf[r.N], len(sts), len(res))
		}
		if r.Tag == "DELETE 5" && !strings.HasPrefix(textOf[r.N], "delete") {
			t.Errorf("RECORD MISPAIRED: the DELETE's result is recorded as the result of statement %d %q", r.N, textOf[r.N])
		}
	}
}
