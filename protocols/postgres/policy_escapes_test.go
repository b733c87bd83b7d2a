package postgres

// Statements that used to slip past the policy: fast-path calls of
// categorised functions, pg_catalog functions the classifier does not know,
// row locks taken by a read, two-phase commit as housekeeping, settings the
// engine relies on, and catalogs holding connection passwords.

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/interlockhq/interlock/engine"
	"github.com/interlockhq/interlock/engine/policy"
	"github.com/interlockhq/interlock/test/harness"
)

const escapesHead = `version: 1
targets:
  - {name: db, protocol: postgres, address: "127.0.0.1:5432", credentials: {user: app, password_env: X}}
agents:
  - {name: analyst, roles: [analyst]}
roles:
  - name: analyst
    rules:
`

// escapesFuncPolicy: an agent that may read public tables and call
// functions (no selector), with a global block on dangerous function
// categories.
const escapesFuncPolicy = escapesHead + `
      - {id: read-public, actions: [read], tables: ["public.*"], decision: allow}
      - {id: call-functions, actions: [execute], decision: allow}
rules:
  - {id: no-server-files, function_categories: [server_files, large_objects, backend_signal, remote], decision: block}
`

// escapesReadOnly is the example policy's reader: read public and the
// catalog, session housekeeping, the example's global blocks.
const escapesReadOnly = escapesHead + `
      - {id: read-public, actions: [read], tables: ["public.*"], decision: allow}
      - {id: read-catalog, actions: [read], tables: ["pg_catalog.*", "information_schema.*"], decision: allow}
      - {id: read-session, actions: [transaction, show, set, reset, discard, deallocate], decision: allow}
rules:
  - {id: no-server-files, function_categories: [server_files, large_objects, backend_signal, remote], decision: block}
  - {id: no-privilege-changes, actions: [privilege, set_role, set_session_authorization, do], decision: block}
`

// refusedUnder sends sql as a simple query in a new session under pol and
// reports whether the engine replaced it with its refusal sentinel.
func refusedUnder(t *testing.T, pol, sql string) bool {
	t.Helper()
	ps := newPipeSessionFor(t, pol, Config{})
	ps.send(t, &pgproto3.Query{String: sql})
	q := ps.serverReceive(t).(*pgproto3.Query)
	return strings.HasPrefix(q.String, sentinelPrefix)
}

// fastpathRefusedUnder sends a fast-path call of oid under pol and reports
// whether it was refused.
func fastpathRefusedUnder(t *testing.T, pol string, oid uint32) bool {
	t.Helper()
	ps := newPipeSessionFor(t, pol, Config{})
	ps.send(t, &pgproto3.FunctionCall{Function: oid, ArgFormatCodes: []uint16{0}, Arguments: [][]byte{[]byte("/etc/passwd")}})
	switch m := ps.serverReceive(t).(type) {
	case *pgproto3.FunctionCall:
		return false
	case *pgproto3.Query:
		if !strings.HasPrefix(m.String, sentinelPrefix) {
			t.Fatalf("fast-path call became %q", m.String)
		}
		return true
	default:
		t.Fatalf("fast-path call became %#v", m)
	}
	return false
}

// A fast-path call names its function by OID only: it may be pg_read_file
// (3826 in PostgreSQL 15), so every category block applies to it, and only
// a rule naming fastpath.* (or without selectors) allows it.
func TestFastpathCallMeetsCategoryBlocks(t *testing.T) {
	if !refusedUnder(t, escapesFuncPolicy, "select pg_read_file('/etc/passwd')") {
		t.Fatal("precondition: SQL pg_read_file must be blocked by no-server-files")
	}
	if !fastpathRefusedUnder(t, escapesFuncPolicy, 3826) {
		t.Error("fast-path call forwarded although a category block applies")
	}
	byName := escapesHead + `
      - {id: fastpath, functions: ["fastpath.*"], decision: allow}
`
	if fastpathRefusedUnder(t, byName, 3826) {
		t.Error("fast-path call refused although a rule names fastpath.*")
	}
	byNameButBlocked := byName + `rules:
  - {id: no-lo, function_categories: [large_objects], decision: block}
`
	if !fastpathRefusedUnder(t, byNameButBlocked, 764) {
		t.Error("fast-path call forwarded although a category block applies (block beats allow)")
	}
	byCategory := escapesHead + `
      - {id: lo, function_categories: [large_objects], decision: allow}
`
	if !fastpathRefusedUnder(t, byCategory, 3826) {
		t.Error("fast-path call forwarded by a category allow: the call may be in any category")
	}
}

// The same, end to end against a real PostgreSQL: the call is refused and
// the file's content does not come back.
func TestFastpathCategoryBlockLive(t *testing.T) {
	pg := harness.StartPostgres(t)
	t.Setenv("ESCAPES_PG_PW", pg.Password)
	pol, err := policy.Parse("escapes.yaml", []byte(strings.Replace(escapesFuncPolicy,
		`address: "127.0.0.1:5432", credentials: {user: app, password_env: X}`,
		`address: "`+pg.Addr()+`", database: postgres, tls: {mode: disable}, credentials: {user: postgres, password_env: ESCAPES_PG_PW}`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHandler(Config{Policy: func() *policy.Policy { return pol }})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s := engine.NewSession(engine.Identity{Agent: "analyst", Target: "db", Protocol: "postgres",
				OrigDst: netip.MustParseAddrPort(pg.Addr())}, h.cfg.Log)
			go h.Serve(ctx, s, c)
		}
	}()
	conn, err := pgconn.Connect(ctx, "postgres://agent:whatever@"+ln.Addr().String()+"/postgres?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	res, err := conn.Exec(ctx, "select 'pg_read_file(text)'::regprocedure::oid").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var oid uint32
	for _, c := range string(res[0].Rows[0][0]) {
		oid = oid*10 + uint32(c-'0')
	}
	fe := conn.Frontend()
	fe.Send(&pgproto3.FunctionCall{Function: oid, ArgFormatCodes: []uint16{0}, Arguments: [][]byte{[]byte("PG_VERSION")}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	refused := false
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case *pgproto3.FunctionCallResponse:
			t.Errorf("fast-path pg_read_file('PG_VERSION') returned %q despite rule no-server-files", m.Result)
		case *pgproto3.ErrorResponse:
			refused = strings.Contains(m.Message, "no-server-files")
			if !refused {
				t.Errorf("refused with %q, want rule no-server-files", m.Message)
			}
		case *pgproto3.ReadyForQuery:
			if !refused {
				t.Error("no refusal")
			}
			return
		}
	}
}

// A pg_catalog function the classifier does not know (newer servers,
// extensions installed in pg_catalog) is not an ordinary built-in: it needs
// a rule, like an unknown unqualified function.
func TestUnknownPgCatalogFunctionNeedsARule(t *testing.T) {
	for _, sql := range []string{
		"select pg_catalog.pg_restore_relation_stats('schemaname', 'public', 'relname', 'orders', 'relpages', 1, 'reltuples', 1e9::real)",
		"select pg_catalog.pg_clear_attribute_stats('public', 'orders', 'id', false)",
		"select pg_catalog.pg_log_standby_snapshot()",
		"select pg_catalog.pg_sync_replication_slots()",
		"select pg_catalog.get_raw_page('payroll.salaries', 0)",
		"select pg_sync_replication_slots()", // public.pg_sync_replication_slots
	} {
		if !refusedUnder(t, escapesReadOnly, sql) {
			t.Errorf("read-only agent allowed: %s", sql)
		}
	}
	for _, sql := range []string{
		"select pg_catalog.lower('A'), lower('B') from orders",
		"select pg_catalog.pg_get_viewdef('orders'::regclass)",
	} {
		if refusedUnder(t, escapesReadOnly, sql) {
			t.Errorf("ordinary built-in refused: %s", sql)
		}
	}
}

// SELECT … FOR UPDATE/SHARE locks rows: it needs what LOCK TABLE needs.
func TestRowLocksNeedLock(t *testing.T) {
	locks := []string{
		"select * from orders for update",
		"select * from orders for no key update",
		"select 1 from orders for share nowait",
		"select 1 from orders for key share skip locked",
		"select * from customers where id in (select customer_id from orders for update)",
	}
	if !refusedUnder(t, escapesReadOnly, "lock table orders in row share mode") {
		t.Fatal("precondition: LOCK TABLE must be refused")
	}
	for _, sql := range locks {
		if !refusedUnder(t, escapesReadOnly, sql) {
			t.Errorf("read-only agent allowed row locks: %s", sql)
		}
	}
	if refusedUnder(t, escapesReadOnly, "select * from orders") {
		t.Error("plain read refused")
	}
	withLock := escapesHead + `
      - {id: read-public, actions: [read, lock], tables: ["public.*"], decision: allow}
`
	if refusedUnder(t, withLock, "lock table orders in row share mode") {
		t.Fatal("precondition: LOCK TABLE must be allowed with lock")
	}
	for _, sql := range locks {
		if refusedUnder(t, withLock, sql) {
			t.Errorf("agent with lock refused: %s", sql)
		}
	}
}

// COMMIT PREPARED / ROLLBACK PREPARED act on other sessions' transactions,
// PREPARE TRANSACTION leaves locks behind: not housekeeping, they need a
// rule naming prepare_transaction.
func TestTwoPhaseCommitNeedsARule(t *testing.T) {
	twoPhase := []string{
		"rollback prepared 'app-txn-42'",
		"commit prepared 'app-txn-42'",
		"prepare transaction 'zz'",
	}
	for _, sql := range twoPhase {
		if !refusedUnder(t, escapesReadOnly, sql) {
			t.Errorf("read-only agent allowed: %s", sql)
		}
	}
	for _, sql := range []string{"begin", "commit", "rollback", "savepoint a", "start transaction isolation level serializable"} {
		if refusedUnder(t, escapesReadOnly, sql) {
			t.Errorf("transaction housekeeping refused: %s", sql)
		}
	}
	explicit := escapesHead + `
      - {id: two-phase, actions: [prepare_transaction], decision: allow}
`
	for _, sql := range twoPhase {
		if refusedUnder(t, explicit, sql) {
			t.Errorf("refused although a rule names prepare_transaction: %s", sql)
		}
	}
}

// escapesMaskSet: masked reads plus "set" housekeeping.
const escapesMaskSet = escapesHead + `
      - {id: session, actions: [transaction, show, set, reset], decision: allow}
      - {id: mask-customers, actions: [read], tables: ["public.customers"], decision: mask, mask: {columns: {phone: redact}, detectors: [email]}}
`

// Settings the engine relies on, or that the engine's credentials make
// take effect, cannot be changed whatever the policy says: lc_messages
// (error redaction reads the server's quoting), read-only defaults,
// auditing and activity tracking, catalog changes, library loading.
func TestGuardedSettingsRefused(t *testing.T) {
	for _, sql := range []string{
		"set lc_messages = 'de_DE.UTF-8'",
		"set local lc_messages to 'fr_FR.UTF-8'",
		`set "LC_MESSAGES" = 'de_DE'`,
		"select set_config('lc_messages', 'de_DE.UTF-8', false)",
		"set default_transaction_read_only = off",
		"set transaction_read_only = off",
		"set transaction read write",
		"set session characteristics as transaction read write",
		"begin read write",
		"start transaction isolation level serializable, read write",
		"set track_activities = off",
		"set allow_system_table_mods = on",
		"set dynamic_library_path = '/tmp'",
		"set pgaudit.log = 'none'",
		"select set_config('pgaudit.log_level', 'debug5', true)",
		"set session_replication_role = replica",
		"set log_statement = 'none'",
		"set default_transaction_read_only = default_off_is_unknown",
	} {
		if !refusedUnder(t, escapesMaskSet, sql) {
			t.Errorf("allowed: %s", sql)
		}
	}
	for _, sql := range []string{
		"reset lc_messages",
		"set statement_timeout = '5s'",
		"set transaction isolation level serializable",
		"set transaction read only",
		"begin read only",
		"begin isolation level repeatable read",
		// Read-only mode may be turned on (psycopg2's readonly sessions).
		"set default_transaction_read_only = on",
		"set default_transaction_read_only to 'true'",
		"set transaction_read_only = 1",
	} {
		if refusedUnder(t, escapesMaskSet, sql) {
			t.Errorf("refused: %s", sql)
		}
	}
}

// Turning read-only mode on passes the guard; it does not excuse another
// guarded setting in the same statement.
func TestReadOnlyOnPassesOnlyItself(t *testing.T) {
	set := func(names ...string) *policy.Operation {
		op := &policy.Operation{}
		for _, n := range names {
			op.Objects = append(op.Objects, policy.Object{Kind: policy.KindSetting, Name: n, Action: policy.ActionSet})
		}
		return op
	}
	if name, ok := pinnedSetting(set("default_transaction_read_only"), true); ok {
		t.Errorf("turning read-only on refused (%s)", name)
	}
	if name, ok := pinnedSetting(set("default_transaction_read_only", "log_statement"), true); !ok || name != "log_statement" {
		t.Errorf("read-only on with log_statement: %q, %v", name, ok)
	}
	if _, ok := pinnedSetting(set("default_transaction_read_only"), false); !ok {
		t.Error("turning read-only off allowed")
	}
	// One classifier: its cache must not carry a value's verdict over to
	// the same text with another value.
	cl := NewClassifier(16)
	for _, tc := range []struct {
		sql  string
		want bool
	}{
		{"select set_config('default_transaction_read_only', 'on', false)", true},
		{"select set_config('default_transaction_read_only', 'off', false)", false},
		{"select set_config('default_transaction_read_only', 'on', false), set_config('transaction_read_only', 'off', false)", false},
		{"set default_transaction_read_only = on", true},
		{"set default_transaction_read_only = off", false},
		{"set transaction_read_only = 1", true},
		{"set transaction_read_only = 0", false},
		{"begin read write", false},
	} {
		c, err := cl.Classify(tc.sql)
		if err != nil || len(c.Statements) != 1 {
			t.Fatalf("classify %q: %v", tc.sql, err)
		}
		if got := c.Statements[0].ReadOnlyOn; got != tc.want {
			t.Errorf("%s: ReadOnlyOn = %v, want %v", tc.sql, got, tc.want)
		}
	}
}

// A server whose messages are translated (lc_messages set in its
// configuration) quotes values with other marks: they are redacted too.
func TestTranslatedErrorMessagesMasked(t *testing.T) {
	ps := newPipeSessionFor(t, escapesMaskSet, Config{Masking: &MaskingConfig{}})
	ps.send(t, &pgproto3.Query{String: "select phone::int from customers"})
	ps.serverReceive(t)
	for _, msg := range []string{
		`invalid input syntax for type integer: "+1 415 555 2671"`,
		`ungültige Eingabesyntax für Typ integer: »+1 415 555 2671«`,
		`syntaxe en entrée invalide pour le type integer : « +1 415 555 2671 »`,
		`nieprawidłowa składnia wejścia dla typu integer: „+1 415 555 2671”`,
	} {
		ps.serverSend(t, &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "22P02", Message: msg})
		e := ps.agentReceive(t).(*pgproto3.ErrorResponse)
		if strings.Contains(e.Message, "555 2671") {
			t.Errorf("masked phone value reached the agent in the error message %q", e.Message)
		}
	}
}

// pg_subscription.subconninfo holds the publisher's connection string,
// password included: reading it reads table "*", like pg_authid.
func TestSubscriptionCatalogReadsEverything(t *testing.T) {
	for _, sql := range []string{
		"select subconninfo from pg_catalog.pg_subscription",
		"select * from pg_subscription",
	} {
		if !refusedUnder(t, escapesReadOnly, sql) {
			t.Errorf("read-only agent may read publisher passwords: %s", sql)
		}
	}
	if refusedUnder(t, escapesReadOnly, "select relname from pg_catalog.pg_class") {
		t.Error("ordinary catalog read refused")
	}
}
