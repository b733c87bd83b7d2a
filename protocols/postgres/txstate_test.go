package postgres

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// txPolicy allows a DELETE only inside a transaction block.
const txPolicy = txPolicyHead + `      - {id: delete-in-tx, actions: [delete], tables: [public.orders], when: {in_transaction: true}, decision: allow}
`

// txPolicyHead is the transaction tests' policy up to the analyst's rules,
// with transaction control allowed.
const txPolicyHead = `version: 1
targets:
  - {name: db, protocol: postgres, address: "127.0.0.1:5432", credentials: {user: app, password_env: X}}
agents:
  - {name: analyst, roles: [analyst]}
roles:
  - name: analyst
    rules:
      - {id: tx, actions: [transaction], decision: allow}
`

// TestPipelinedStatementInTransactionIsNotGuessed: in_transaction comes
// from the last ReadyForQuery, which is stale for a statement pipelined
// behind a COMMIT. The DELETE must not pass as "in a transaction" when it
// will run after the COMMIT, in autocommit.
func TestPipelinedStatementInTransactionIsNotGuessed(t *testing.T) {
	const del = "delete from orders where id = 1"
	t.Run("answered: in a transaction block", func(t *testing.T) {
		ps := newPipeSessionAs(t, txPolicy, "analyst", 'T', Config{}, nil)
		ps.send(t, &pgproto3.Query{String: del})
		if q := ps.serverReceive(t).(*pgproto3.Query); q.String != del {
			t.Fatalf("DELETE in a transaction forwarded as %q", q.String)
		}
	})
	t.Run("simple queries pipelined behind COMMIT", func(t *testing.T) {
		ps := newPipeSessionAs(t, txPolicy, "analyst", 'T', Config{}, nil)
		ps.send(t, &pgproto3.Query{String: "commit"}, &pgproto3.Query{String: del})
		if q := ps.serverReceive(t).(*pgproto3.Query); q.String != "commit" {
			t.Fatalf("COMMIT forwarded as %q", q.String)
		}
		if q := ps.serverReceive(t).(*pgproto3.Query); !strings.HasPrefix(q.String, sentinelPrefix) {
			t.Errorf("DELETE pipelined behind COMMIT forwarded as %q; it runs outside the transaction", q.String)
		}
	})
	t.Run("extended protocol: COMMIT executed earlier in the segment", func(t *testing.T) {
		ps := newPipeSessionAs(t, txPolicy, "analyst", 'T', Config{}, nil)
		ps.send(t, &pgproto3.Parse{Query: "commit"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Parse{Name: "d", Query: del}, &pgproto3.Sync{})
		ps.serverReceive(t) // Parse commit
		ps.serverReceive(t) // Bind
		ps.serverReceive(t) // Execute
		if p := ps.serverReceive(t).(*pgproto3.Parse); !strings.HasPrefix(p.Query, sentinelPrefix) {
			t.Errorf("DELETE parsed after an executed COMMIT forwarded as %q", p.Query)
		}
	})
}
