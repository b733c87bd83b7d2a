package postgres

// From a review of the transaction-state and restart handling; each test
// failed while the problem it names existed.

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

const txDelete = "delete from orders where id = 1"

// An extended-protocol statement is decided once, at its Parse, with the
// transaction state of that moment; its Bind/Execute is not decided again
// (only after a policy reload). A statement prepared inside a transaction
// block and executed after COMMIT runs in autocommit under a rule that
// allows it only inside a transaction. This is also what a driver with a
// statement cache (pgx's default mode) does on its own.
func TestParsedInTxExecutedAfterCommit(t *testing.T) {
	ps := newPipeSessionAs(t, txPolicy, "analyst", 'T', Config{}, nil)
	ps.send(t, &pgproto3.Parse{Name: "d", Query: txDelete}, &pgproto3.Sync{})
	if p := ps.serverReceive(t).(*pgproto3.Parse); p.Query != txDelete {
		t.Fatalf("DELETE parsed inside a transaction refused (%q); the scenario needs it allowed there", p.Query)
	}
	ps.serverReceive(t) // Sync
	ps.serverSend(t, &pgproto3.ParseComplete{}, &pgproto3.ReadyForQuery{TxStatus: 'T'})
	wantTypes(t, ps, "ParseComplete", "ReadyForQuery")

	ps.send(t, &pgproto3.Query{String: "commit"})
	if q := ps.serverReceive(t).(*pgproto3.Query); q.String != "commit" {
		t.Fatalf("COMMIT forwarded as %q", q.String)
	}
	ps.serverSend(t, &pgproto3.CommandComplete{CommandTag: []byte("COMMIT")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	wantTypes(t, ps, "CommandComplete", "ReadyForQuery")

	// Autocommit now, known for certain (nothing in flight).
	ps.send(t, &pgproto3.Bind{PreparedStatement: "d"}, &pgproto3.Execute{}, &pgproto3.Sync{})
	if b := ps.serverReceive(t).(*pgproto3.Bind); !strings.HasPrefix(b.PreparedStatement, sentinelPrefix) {
		t.Errorf("BYPASS: DELETE allowed only when in_transaction, prepared inside a transaction, was bound and executed after COMMIT (autocommit) as %q", b.PreparedStatement)
	}
}

// The same inside one segment: the DELETE's Parse comes before the
// Execute of the COMMIT, so the Parse is decided "certain, in a
// transaction", and its own Execute runs after the COMMIT.
func TestParseBeforeCommitExecute(t *testing.T) {
	ps := newPipeSessionAs(t, txPolicy, "analyst", 'T', Config{}, nil)
	ps.send(t,
		&pgproto3.Parse{Name: "c", Query: "commit"},
		&pgproto3.Parse{Name: "d", Query: txDelete},
		&pgproto3.Bind{PreparedStatement: "c"}, &pgproto3.Execute{},
		&pgproto3.Bind{PreparedStatement: "d"}, &pgproto3.Execute{},
		&pgproto3.Sync{})
	ps.serverReceive(t) // Parse commit
	p := ps.serverReceive(t).(*pgproto3.Parse)
	ps.serverReceive(t) // Bind c
	ps.serverReceive(t) // Execute
	b := ps.serverReceive(t).(*pgproto3.Bind)
	if !strings.HasPrefix(p.Query, sentinelPrefix) && !strings.HasPrefix(b.PreparedStatement, sentinelPrefix) {
		t.Errorf("BYPASS: Parse(COMMIT), Parse(DELETE), Execute(COMMIT), Execute(DELETE) in one segment: the DELETE (allowed only in a transaction) was forwarded (Parse %q, Bind %q) and runs after the COMMIT", p.Query, b.PreparedStatement)
	}
}

// False positives of the "unsure" rule: an Execute earlier in the segment
// makes every later Parse "unsure", even when the executed statement
// cannot open or end a transaction block (a DELETE), or is a BEGIN whose
// effect is certain (the server skips the rest of the segment if it
// fails). psycopg 3 pipeline mode, JDBC batches and JDBC with
// autocommit=false (BEGIN is sent in the first statement's segment) then
// get rules for in_transaction: true refused.
func TestPipelinedInTxFalsePositive(t *testing.T) {
	t.Run("two DELETEs pipelined inside a transaction block", func(t *testing.T) {
		ps := newPipeSessionAs(t, txPolicy, "analyst", 'T', Config{}, nil)
		ps.send(t,
			&pgproto3.Parse{Query: txDelete}, &pgproto3.Bind{}, &pgproto3.Execute{},
			&pgproto3.Parse{Query: "delete from orders where id = 2"}, &pgproto3.Bind{}, &pgproto3.Execute{},
			&pgproto3.Sync{})
		ps.serverReceive(t) // Parse 1
		ps.serverReceive(t) // Bind
		ps.serverReceive(t) // Execute
		if p := ps.serverReceive(t).(*pgproto3.Parse); strings.HasPrefix(p.Query, sentinelPrefix) {
			t.Errorf("FALSE POSITIVE: second DELETE of a pipeline inside a transaction block refused; a DELETE executed before it cannot end the block")
		}
	})
	t.Run("BEGIN executed earlier in the segment (JDBC autocommit=false)", func(t *testing.T) {
		ps := newPipeSessionAs(t, txPolicy, "analyst", 'I', Config{}, nil)
		ps.send(t,
			&pgproto3.Parse{Query: "begin"}, &pgproto3.Bind{}, &pgproto3.Execute{},
			&pgproto3.Parse{Query: txDelete}, &pgproto3.Bind{}, &pgproto3.Execute{},
			&pgproto3.Sync{})
		ps.serverReceive(t) // Parse begin
		ps.serverReceive(t) // Bind
		ps.serverReceive(t) // Execute
		if p := ps.serverReceive(t).(*pgproto3.Parse); strings.HasPrefix(p.Query, sentinelPrefix) {
			t.Errorf("FALSE POSITIVE: DELETE after an executed BEGIN in the same segment refused; it can only run inside the block")
		}
	})
}
