package postgres

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/interlockhq/interlock/engine"
	"github.com/interlockhq/interlock/engine/policy"
)

// These tests drive a session over in-memory pipes: the test plays the
// agent on one side and the server on the other, byte for byte.

const unitPolicy = `version: 1
targets:
  - {name: db, protocol: postgres, address: "127.0.0.1:5432", credentials: {user: app, password_env: X}}
agents:
  - {name: analyst, roles: [analyst]}
roles:
  - name: analyst
    rules:
      - {id: read, actions: [read], tables: ["public.*"], decision: allow}
      - {id: tx, actions: [transaction], decision: allow}
rules:
  - {id: no-drop, actions: [drop], decision: block, message: "no drops"}
`

type pipeSession struct {
	policy   *atomic.Pointer[policy.Policy] // swap to simulate a reload
	ss       *session
	agent    net.Conn // the test's end of the agent connection
	server   net.Conn // the test's end of the upstream connection
	agentFE  *pgproto3.Frontend
	serverBE *pgproto3.Backend
	done     chan error
}

func newPipeSession(t testing.TB) *pipeSession {
	t.Helper()
	return newPipeSessionWith(t, Config{})
}

func newPipeSessionWith(t testing.TB, cfg Config) *pipeSession {
	t.Helper()
	return newPipeSessionFor(t, unitPolicy, cfg)
}

// newPipeSessionFor builds a session under the given policy text, with
// the rest of cfg as given (Policy, MaxMessageSize and Log are set here).
func newPipeSessionFor(t testing.TB, policyText string, cfg Config) *pipeSession {
	t.Helper()
	return newPipeSessionAs(t, policyText, "analyst", 'I', cfg, nil)
}

// newPipeSessionAs builds a session of agent, starting in transaction
// state txStatus; observer, when not nil, builds cfg.Observer from the
// session's policy function.
func newPipeSessionAs(t testing.TB, policyText, agent string, txStatus byte, cfg Config, observer func(func() *policy.Policy) Observer) *pipeSession {
	t.Helper()
	pol, err := policy.Parse("unit.yaml", []byte(policyText))
	if err != nil {
		t.Fatal(err)
	}
	var current atomic.Pointer[policy.Policy]
	current.Store(pol)
	cfg.Policy = current.Load
	cfg.MaxMessageSize = 4096
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	if observer != nil {
		cfg.Observer = observer(cfg.Policy)
	}
	h, err := NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	agentEnd, engineClient := net.Pipe()
	serverEnd, engineUp := net.Pipe()
	s := engine.NewSession(engine.Identity{Agent: agent, Target: "db", Protocol: "postgres",
		OrigDst: netip.MustParseAddrPort("127.0.0.1:5432")}, h.cfg.Log)
	target, _ := pol.Target("db")
	up := &upstream{conn: engineUp, r: bufio.NewReader(engineUp), txStatus: txStatus, params: map[string]string{}}
	ps := &pipeSession{
		policy: &current,
		ss:     newSession(h, s, newClientConn(engineClient, h.cfg.MaxMessageSize, nil), up, target),
		agent:  agentEnd, server: serverEnd,
		agentFE:  pgproto3.NewFrontend(agentEnd, agentEnd),
		serverBE: pgproto3.NewBackend(serverEnd, serverEnd),
		done:     make(chan error, 1),
	}
	go func() { ps.done <- ps.ss.run(context.Background()) }()
	t.Cleanup(func() {
		agentEnd.Close()
		serverEnd.Close()
		select {
		case <-ps.done:
		case <-time.After(5 * time.Second):
			t.Error("session did not end")
		}
	})
	return ps
}

func (ps *pipeSession) send(t testing.TB, msgs ...pgproto3.FrontendMessage) {
	t.Helper()
	for _, m := range msgs {
		ps.agentFE.Send(m)
	}
	if err := ps.agentFE.Flush(); err != nil {
		t.Fatal(err)
	}
}

func (ps *pipeSession) serverReceive(t testing.TB) pgproto3.FrontendMessage {
	t.Helper()
	ps.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := ps.serverBE.Receive()
	if err != nil {
		t.Fatalf("server side: %v", err)
	}
	return m
}

func (ps *pipeSession) serverSend(t testing.TB, msgs ...pgproto3.BackendMessage) {
	t.Helper()
	for _, m := range msgs {
		ps.serverBE.Send(m)
	}
	if err := ps.serverBE.Flush(); err != nil {
		t.Fatal(err)
	}
}

func (ps *pipeSession) agentReceive(t testing.TB) pgproto3.BackendMessage {
	t.Helper()
	ps.agent.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := ps.agentFE.Receive()
	if err != nil {
		t.Fatalf("agent side: %v", err)
	}
	return m
}

func TestAllowedQueryIsForwardedVerbatim(t *testing.T) {
	ps := newPipeSession(t)
	ps.send(t, &pgproto3.Query{String: "select * from orders"})
	q, ok := ps.serverReceive(t).(*pgproto3.Query)
	if !ok || q.String != "select * from orders" {
		t.Fatalf("server got %#v", q)
	}
	ps.serverSend(t, &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("x"), DataTypeOID: 25, Format: 0}}},
		&pgproto3.DataRow{Values: [][]byte{[]byte("hello")}},
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")},
		&pgproto3.ReadyForQuery{TxStatus: 'I'})
	want := []string{"*pgproto3.RowDescription", "*pgproto3.DataRow", "*pgproto3.CommandComplete", "*pgproto3.ReadyForQuery"}
	for _, w := range want {
		if got := typeName(ps.agentReceive(t)); got != w {
			t.Fatalf("agent got %s, want %s", got, w)
		}
	}
}

// TestBlockedQueryBecomesSentinel checks the ordering trick: the refused
// statement is replaced by a sentinel the server rejects, and the server's
// error is swapped for the policy's, in the place where it arrives.
func TestBlockedQueryBecomesSentinel(t *testing.T) {
	ps := newPipeSession(t)
	// Pipelined: an allowed query, then a refused one, before any answer.
	ps.send(t, &pgproto3.Query{String: "select 1"}, &pgproto3.Query{String: "select 2; DROP TABLE orders"})
	if q := ps.serverReceive(t).(*pgproto3.Query); q.String != "select 1" {
		t.Fatalf("first: %q", q.String)
	}
	sentinel := ps.serverReceive(t).(*pgproto3.Query).String
	if !strings.HasPrefix(sentinel, "interlock_blocked_") || strings.Contains(sentinel, "select 2") {
		t.Fatalf("refused query reached the server as %q", sentinel)
	}
	ps.serverSend(t,
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'},
		&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: `syntax error at or near "` + sentinel + `"`}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	if _, ok := ps.agentReceive(t).(*pgproto3.CommandComplete); !ok {
		t.Fatal("first answer out of order")
	}
	ps.agentReceive(t)
	e, ok := ps.agentReceive(t).(*pgproto3.ErrorResponse)
	if !ok || e.Code != "42501" || !strings.Contains(e.Message, "no-drop") || strings.Contains(e.Message, "syntax") {
		t.Fatalf("agent got %#v, want the policy's 42501", e)
	}
	if _, ok := ps.agentReceive(t).(*pgproto3.ReadyForQuery); !ok {
		t.Fatal("no ReadyForQuery after the refusal")
	}
	// A server error that merely mentions a foreign sentinel-like token is
	// passed through untouched.
	ps.send(t, &pgproto3.Query{String: "select 3"})
	ps.serverReceive(t)
	ps.serverSend(t, &pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: "interlock_blocked_000000000000_1"}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	if e := ps.agentReceive(t).(*pgproto3.ErrorResponse); e.Code != "42601" {
		t.Fatalf("foreign error rewritten: %#v", e)
	}
}

func TestBlockedParseAndBind(t *testing.T) {
	ps := newPipeSession(t)
	ps.send(t,
		&pgproto3.Parse{Name: "s1", Query: "drop table orders"},
		&pgproto3.Bind{PreparedStatement: "s1"},
		&pgproto3.Execute{},
		&pgproto3.Sync{})
	p := ps.serverReceive(t).(*pgproto3.Parse)
	if !strings.HasPrefix(p.Name, stmtPrefix) || !strings.HasPrefix(p.Query, "interlock_blocked_") {
		t.Fatalf("parse forwarded as %#v", p)
	}
	b := ps.serverReceive(t).(*pgproto3.Bind)
	if !strings.HasPrefix(b.PreparedStatement, "interlock_blocked_") {
		t.Fatalf("bind of a refused statement forwarded as %#v", b)
	}
	ps.serverReceive(t) // Execute
	ps.serverReceive(t) // Sync
	ps.serverSend(t, &pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: `syntax error at or near "` + p.Query + `"`},
		&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if e := ps.agentReceive(t).(*pgproto3.ErrorResponse); e.Code != "42501" {
		t.Fatalf("agent got %#v", e)
	}
}

// TestNamedStatementsRenamed: every Parse of a named statement gets a new
// server-side name, which Bind, Describe and Close of the agent's name use;
// the unnamed statement and names Interlock does not know pass unchanged.
func TestNamedStatementsRenamed(t *testing.T) {
	ps := newPipeSession(t)
	ps.send(t,
		&pgproto3.Parse{Name: "s1", Query: "select * from orders"},
		&pgproto3.Parse{Name: "s1", Query: "select id from orders"},
		&pgproto3.Parse{Name: "", Query: "select 1"},
		&pgproto3.Describe{ObjectType: 'S', Name: "s1"},
		&pgproto3.Bind{PreparedStatement: "s1", DestinationPortal: "p"},
		&pgproto3.Bind{PreparedStatement: ""},
		&pgproto3.Describe{ObjectType: 'P', Name: "s1"},
		&pgproto3.Close{ObjectType: 'S', Name: "s1"},
		&pgproto3.Sync{})
	first := ps.serverReceive(t).(*pgproto3.Parse).Name
	second := ps.serverReceive(t).(*pgproto3.Parse).Name
	if !strings.HasPrefix(first, stmtPrefix) || !strings.HasPrefix(second, stmtPrefix) || first == second {
		t.Fatalf("named parses forwarded as %q and %q", first, second)
	}
	if p := ps.serverReceive(t).(*pgproto3.Parse); p.Name != "" {
		t.Fatalf("unnamed parse forwarded as %q", p.Name)
	}
	if d := ps.serverReceive(t).(*pgproto3.Describe); d.Name != second {
		t.Errorf("describe forwarded as %q, want the latest parse's %q", d.Name, second)
	}
	b := ps.serverReceive(t).(*pgproto3.Bind)
	if b.PreparedStatement != second || !strings.HasPrefix(b.DestinationPortal, portalPrefix) {
		t.Errorf("bind forwarded as %#v", b)
	}
	portal := b.DestinationPortal // the decoder reuses b
	if b := ps.serverReceive(t).(*pgproto3.Bind); b.PreparedStatement != "" || b.DestinationPortal != "" {
		t.Errorf("unnamed bind forwarded as %#v", b)
	}
	// The portal "s1" does not exist (the statement does): the name is
	// passed as it came, where it can reach only a cursor.
	if d := ps.serverReceive(t).(*pgproto3.Describe); d.Name != "s1" {
		t.Errorf("describe of an unbound portal forwarded as %q", d.Name)
	}
	if c := ps.serverReceive(t).(*pgproto3.Close); c.Name != second {
		t.Errorf("close forwarded as %q", c.Name)
	}
	ps.serverReceive(t) // Sync
	// The portal "p" goes by its server-side name, until closed.
	ps.send(t, &pgproto3.Execute{Portal: "p"}, &pgproto3.Describe{ObjectType: 'P', Name: "p"}, &pgproto3.Close{ObjectType: 'P', Name: "p"}, &pgproto3.Execute{Portal: "p"}, &pgproto3.Sync{})
	if e := ps.serverReceive(t).(*pgproto3.Execute); e.Portal != portal {
		t.Errorf("execute forwarded as %q, want %q", e.Portal, portal)
	}
	if d := ps.serverReceive(t).(*pgproto3.Describe); d.Name != portal {
		t.Errorf("portal describe forwarded as %q", d.Name)
	}
	if c := ps.serverReceive(t).(*pgproto3.Close); c.Name != portal {
		t.Errorf("portal close forwarded as %q", c.Name)
	}
	if e := ps.serverReceive(t).(*pgproto3.Execute); e.Portal != "p" {
		t.Errorf("execute of a closed portal forwarded as %q", e.Portal)
	}
	ps.serverReceive(t) // Sync
	// Closed: a Bind of the name is Interlock's refusal, not the server's.
	ps.send(t, &pgproto3.Bind{PreparedStatement: "s1"}, &pgproto3.Sync{})
	if b := ps.serverReceive(t).(*pgproto3.Bind); !strings.HasPrefix(b.PreparedStatement, sentinelPrefix) {
		t.Errorf("bind of a closed name forwarded as %#v", b)
	}
}

// TestSQLPrepareTable: a SQL PREPARE of a name the session may still hold
// is refused, and a DEALLOCATE the server may skip leaves the name unsure
// (EXECUTE refused) instead of forgotten.
func TestSQLPrepareTable(t *testing.T) {
	ps := newPipeSessionFor(t, strings.Replace(unitPolicy, "actions: [transaction]", "actions: [transaction, deallocate]", 1), Config{})
	query := func(sql string) *pgproto3.Query {
		t.Helper()
		ps.send(t, &pgproto3.Query{String: sql})
		return ps.serverReceive(t).(*pgproto3.Query)
	}
	answer := func(status byte) {
		t.Helper()
		ps.serverSend(t, &pgproto3.CommandComplete{CommandTag: []byte("X")}, &pgproto3.ReadyForQuery{TxStatus: status})
		ps.agentReceive(t)
		ps.agentReceive(t)
	}
	refused := func(q *pgproto3.Query, code string) {
		t.Helper()
		if !strings.HasPrefix(q.String, sentinelPrefix) {
			t.Fatalf("forwarded %q, want a refusal", q.String)
		}
		ps.serverSend(t, &pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: `syntax error at or near "` + q.String + `"`}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
		if e := ps.agentReceive(t).(*pgproto3.ErrorResponse); e.Code != code {
			t.Fatalf("agent got %#v, want %s", e, code)
		}
		ps.agentReceive(t)
	}
	if q := query("prepare s as select id from orders"); strings.HasPrefix(q.String, sentinelPrefix) {
		t.Fatal("first PREPARE refused")
	}
	answer('I')
	refused(query("prepare s as select 1"), "42P05")
	if q := query("execute s"); strings.HasPrefix(q.String, sentinelPrefix) {
		t.Fatal("EXECUTE refused")
	}
	answer('I')
	// In a failed transaction the server skips the DEALLOCATE.
	query("begin")
	answer('E')
	query("deallocate s")
	answer('E')
	query("rollback")
	answer('I')
	refused(query("execute s"), "42501")
	refused(query("prepare s as select 1"), "42P05")
	// On its own, outside a failed transaction, it is certain.
	query("deallocate s")
	answer('I')
	if q := query("prepare s as select 1"); strings.HasPrefix(q.String, sentinelPrefix) {
		t.Fatal("PREPARE after a certain DEALLOCATE refused")
	}
	answer('I')
	// Not on its own: a server with an older grammar may reject the whole
	// string, so the name becomes unsure.
	refused(query("deallocate s; prepare s as select 2"), "42P05")
	query("deallocate s; select 1")
	answer('I')
	refused(query("execute s"), "42501")
	// After an extended-protocol message without a Sync the server may be
	// skipping everything: not certain either.
	query("deallocate s")
	answer('I')
	query("prepare s as select 1")
	answer('I')
	ps.send(t, &pgproto3.Parse{Query: "select 1"}, &pgproto3.Query{String: "deallocate s"})
	ps.serverReceive(t) // the Parse, flushed with the Query
	ps.serverReceive(t)
	answer('I')
	refused(query("execute s"), "42501")
}

// TestDeallocateOfParsedStatementRewritten: SQL DEALLOCATE of a protocol
// statement (psycopg, Rails) names its server-side name.
func TestDeallocateOfParsedStatementRewritten(t *testing.T) {
	ps := newPipeSessionFor(t, strings.Replace(unitPolicy, "actions: [transaction]", "actions: [transaction, deallocate]", 1), Config{})
	ps.send(t, &pgproto3.Parse{Name: "_pg3_0", Query: "select 1"}, &pgproto3.Sync{})
	up := strings.Clone(ps.serverReceive(t).(*pgproto3.Parse).Name)
	ps.serverReceive(t)
	ps.serverSend(t, &pgproto3.ParseComplete{}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	ps.agentReceive(t)
	ps.agentReceive(t)
	// psycopg in pipeline mode sends it with the extended protocol.
	ps.send(t, &pgproto3.Parse{Query: "DEALLOCATE _pg3_0"}, &pgproto3.Flush{})
	if p := ps.serverReceive(t).(*pgproto3.Parse); p.Query != "DEALLOCATE "+quoteIdent(up) {
		t.Fatalf("extended: forwarded %q", p.Query)
	}
	ps.serverReceive(t) // Flush
	ps.send(t, &pgproto3.Query{String: "DEALLOCATE _pg3_0"})
	if q := ps.serverReceive(t).(*pgproto3.Query); q.String != "DEALLOCATE "+quoteIdent(up) {
		t.Fatalf("forwarded %q", q.String)
	}
}

// TestReservedNamesRefused: Interlock's own name prefixes, also spelled
// with Unicode escapes, and EXECUTE on the extended protocol are refused.
func TestReservedNamesRefused(t *testing.T) {
	ps := newPipeSession(t)
	for _, sql := range []string{
		`prepare interlock_stmt_00_1 as select 1`,
		`deallocate "Interlock_Portal_x"`,
		`prepare U&"\0069nterlock_stmt_00_1" as select 1`,
		`execute u&"x"`,
	} {
		ps.send(t, &pgproto3.Query{String: sql})
		if q := ps.serverReceive(t).(*pgproto3.Query); !strings.HasPrefix(q.String, sentinelPrefix) {
			t.Errorf("%q forwarded as %q", sql, q.String)
		}
		ps.serverSend(t, &pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: "x"}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
		ps.agentReceive(t)
		ps.agentReceive(t)
	}
	ps.send(t, &pgproto3.Parse{Query: "execute foo"})
	ps.send(t, &pgproto3.Sync{})
	if p := ps.serverReceive(t).(*pgproto3.Parse); !strings.HasPrefix(p.Query, sentinelPrefix) {
		t.Errorf("EXECUTE on the extended protocol forwarded as %q", p.Query)
	}
}

func TestFunctionCallIsRefused(t *testing.T) {
	ps := newPipeSession(t)
	ps.send(t, &pgproto3.FunctionCall{Function: 764, Arguments: [][]byte{[]byte("x")}})
	q, ok := ps.serverReceive(t).(*pgproto3.Query)
	if !ok || !strings.HasPrefix(q.String, "interlock_blocked_") {
		t.Fatalf("fastpath call forwarded as %#v", q)
	}
}

func TestOversizedMessageEndsSessionCleanly(t *testing.T) {
	ps := newPipeSession(t)
	big := encode(&pgproto3.Query{String: strings.Repeat("x", ps.ss.h.cfg.MaxMessageSize+1)})
	go ps.agent.Write(big) // the engine stops reading half-way: ignore the write error
	e, ok := ps.agentReceive(t).(*pgproto3.ErrorResponse)
	if !ok || e.Code != "54000" || e.Severity != "FATAL" {
		t.Fatalf("agent got %#v", e)
	}
	select {
	case err := <-ps.done:
		ps.done <- err
	case <-time.After(5 * time.Second):
		t.Fatal("session still running")
	}
}

func typeName(m any) string { return fmt.Sprintf("%T", m) }

func TestIdleTimeout(t *testing.T) {
	ps := newPipeSessionWith(t, Config{IdleTimeout: 200 * time.Millisecond})
	start := time.Now()
	e, ok := ps.agentReceive(t).(*pgproto3.ErrorResponse)
	if !ok || e.Code != "57P05" || e.Severity != "FATAL" {
		t.Fatalf("agent got %#v, want FATAL 57P05", e)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("idle session closed after %v, before the timeout", d)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	pol, _ := policy.Parse("unit.yaml", []byte(unitPolicy))
	h, err := NewHandler(Config{Policy: func() *policy.Policy { return pol }, HandshakeTimeout: 200 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	agentEnd, engineEnd := net.Pipe()
	defer agentEnd.Close()
	s := engine.NewSession(engine.Identity{Agent: "analyst", Target: "db"}, h.cfg.Log)
	done := make(chan error, 1)
	go func() {
		err := h.Serve(context.Background(), s, engineEnd)
		engineEnd.Close() // as engine.Server does after Serve
		done <- err
	}()
	// A silent client: the engine gives up after the handshake timeout.
	agentEnd.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(agentEnd)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "startup") {
			t.Errorf("Serve = %v, want a startup error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handshake never timed out")
	}
	if !strings.Contains(string(b), "08P01") {
		t.Errorf("agent got %q, want a FATAL protocol error", b)
	}
}

// TestPreparedStatementRedecidedAfterReload: a statement prepared under
// one policy is decided again at its next Bind once the policy changed.
func TestPreparedStatementRedecidedAfterReload(t *testing.T) {
	ps := newPipeSession(t)
	ps.send(t, &pgproto3.Parse{Name: "s1", Query: "select * from orders"}, &pgproto3.Sync{})
	if p := ps.serverReceive(t).(*pgproto3.Parse); p.Query != "select * from orders" {
		t.Fatalf("parse forwarded as %q", p.Query)
	}
	ps.serverReceive(t) // Sync
	stricter, err := policy.Parse("unit.yaml", []byte(strings.Replace(unitPolicy, "{id: read, actions: [read], tables: [\"public.*\"], decision: allow}", "{id: read, actions: [read], tables: [\"other.*\"], decision: allow}", 1)))
	if err != nil {
		t.Fatal(err)
	}
	ps.policy.Store(stricter)
	ps.send(t, &pgproto3.Bind{PreparedStatement: "s1"}, &pgproto3.Execute{}, &pgproto3.Sync{})
	if b := ps.serverReceive(t).(*pgproto3.Bind); !strings.HasPrefix(b.PreparedStatement, "interlock_blocked_") {
		t.Fatalf("bind after a stricter reload forwarded as %#v", b)
	}
}

// TestUnconfirmedUnnamedStatementAfterReload: after a reload, the unnamed
// statement of an earlier pipeline segment that the server never confirmed
// (it may have skipped the Parse and still hold an older statement) is
// refused rather than decided again on a text the server may not hold; one
// of the same segment is decided again as usual.
func TestUnconfirmedUnnamedStatementAfterReload(t *testing.T) {
	ps := newPipeSession(t)
	ps.send(t, &pgproto3.Parse{Query: "select * from orders"}, &pgproto3.Sync{})
	ps.serverReceive(t) // Parse
	ps.serverReceive(t) // Sync
	same := strings.Replace(unitPolicy, "no drops", "no drops at all", 1)
	reloaded, err := policy.Parse("unit.yaml", []byte(same))
	if err != nil {
		t.Fatal(err)
	}
	ps.policy.Store(reloaded)
	ps.send(t, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	if b := ps.serverReceive(t).(*pgproto3.Bind); !strings.HasPrefix(b.PreparedStatement, sentinelPrefix) {
		t.Fatalf("bind of an unconfirmed unnamed statement after a reload forwarded as %#v", b)
	}
	ps.serverReceive(t) // Execute
	ps.serverReceive(t) // Sync
	// Parse and Bind in one segment: the Bind runs what was just parsed.
	ps.send(t, &pgproto3.Parse{Query: "select * from orders"}, &pgproto3.Flush{})
	ps.serverReceive(t) // Parse
	ps.serverReceive(t) // Flush
	again, err := policy.Parse("unit.yaml", []byte(same))
	if err != nil {
		t.Fatal(err)
	}
	ps.policy.Store(again)
	ps.send(t, &pgproto3.Bind{}, &pgproto3.Sync{})
	if b := ps.serverReceive(t).(*pgproto3.Bind); b.PreparedStatement != "" {
		t.Fatalf("bind in the parse's own segment forwarded as %#v", b)
	}
}
