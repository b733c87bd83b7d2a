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
