package postgres

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

const maskPolicy = `version: 1
targets:
  - {name: db, protocol: postgres, address: "127.0.0.1:5432", credentials: {user: app, password_env: X}}
agents:
  - {name: analyst, roles: [analyst]}
roles:
  - name: analyst
    rules:
      - {id: read, actions: [read], tables: ["public.orders"], decision: allow}
      - {id: mask-customers, actions: [read, insert], tables: ["public.customers"], decision: mask, mask: {columns: {email: partial, "*.ssn": redact}, detectors: [card, email]}}
      - {id: session, actions: [transaction, listen, fetch], decision: allow}
`

// newMaskPipeSession is newPipeSession with maskPolicy and masking on.
func newMaskPipeSession(t testing.TB, masking *MaskingConfig) *pipeSession {
	t.Helper()
	return newPipeSessionFor(t, maskPolicy, Config{Masking: masking})
}

var customerFields = []pgproto3.FieldDescription{
	{Name: []byte("id"), DataTypeOID: 23},
	{Name: []byte("email"), DataTypeOID: 25},
	{Name: []byte("ssn"), DataTypeOID: 25},
	{Name: []byte("note"), DataTypeOID: 25},
}

func customerRow() *pgproto3.DataRow {
	return &pgproto3.DataRow{Values: [][]byte{[]byte("7"), []byte("alice@example.com"), []byte("123-45-6789"), []byte("card 4111 1111 1111 1111, not 4111 1111 1111 1112"), nil}[:4]}
}

// serverSendAsync is serverSend for a goroutine: errors fail the test
// without stopping it there.
func (ps *pipeSession) serverSendAsync(t testing.TB, msgs ...pgproto3.BackendMessage) {
	for _, m := range msgs {
		ps.serverBE.Send(m)
	}
	if err := ps.serverBE.Flush(); err != nil {
		t.Error(err)
	}
}

func binaryFields(fs []pgproto3.FieldDescription) []pgproto3.FieldDescription {
	// The text columns in binary format (their bytes are the text); the
	// others keep text format, since customerRow's values are text.
	out := append([]pgproto3.FieldDescription(nil), fs...)
	for i := range out {
		if out[i].DataTypeOID == 25 {
			out[i].Format = 1
		}
	}
	return out
}

func wantMaskedRow(t *testing.T, m pgproto3.BackendMessage, id string) {
	t.Helper()
	d, ok := m.(*pgproto3.DataRow)
	if !ok {
		t.Fatalf("agent got %T, want a DataRow", m)
	}
	got := []string{string(d.Values[0]), string(d.Values[1]), string(d.Values[2]), string(d.Values[3])}
	want := []string{id, "****@example.com", "[REDACTED:ssn]", "card [REDACTED:card], not 4111 1111 1111 1112"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("row value %d = %q, want %q", i, got[i], want[i])
		}
	}
}

func wantTypes(t *testing.T, ps *pipeSession, types ...string) []pgproto3.BackendMessage {
	t.Helper()
	var got []pgproto3.BackendMessage
	for _, w := range types {
		m := ps.agentReceive(t)
		if typeName(m) != "*pgproto3."+w {
			t.Fatalf("agent got %T (%+v), want %s", m, m, w)
		}
		// The frontend reuses its messages: keep copies.
		switch v := m.(type) {
		case *pgproto3.DataRow:
			c := &pgproto3.DataRow{}
			for _, b := range v.Values {
				c.Values = append(c.Values, append([]byte(nil), b...))
			}
			m = c
		case *pgproto3.ErrorResponse:
			c := *v
			m = &c
		case *pgproto3.NoticeResponse:
			c := *v
			m = &c
		case *pgproto3.NotificationResponse:
			c := *v
			m = &c
		}
		got = append(got, m)
	}
	return got
}

func TestMaskDecisionRefusedWithoutMasking(t *testing.T) {
	ps := newMaskPipeSession(t, nil)
	ps.send(t, &pgproto3.Query{String: "select * from customers"})
	sentinel := ps.serverReceive(t).(*pgproto3.Query).String
	if !strings.HasPrefix(sentinel, "interlock_blocked_") {
		t.Fatalf("masked query forwarded without masking: %q", sentinel)
	}
}

// TestMaskSimpleQueryPipelined: a masked and an unmasked Query pipelined;
// only the first one's rows are rewritten.
func TestMaskSimpleQueryPipelined(t *testing.T) {
	ps := newMaskPipeSession(t, &MaskingConfig{})
	ps.send(t, &pgproto3.Query{String: "select * from customers"}, &pgproto3.Query{String: "select * from orders"})
	ps.serverReceive(t)
	ps.serverReceive(t)
	raw := &pgproto3.DataRow{Values: [][]byte{[]byte("alice@example.com")}}
	ps.serverSend(t,
		&pgproto3.RowDescription{Fields: customerFields}, customerRow(), customerRow(),
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 2")}, &pgproto3.ReadyForQuery{TxStatus: 'I'},
		&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("email"), DataTypeOID: 25}}}, raw,
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	ms := wantTypes(t, ps, "RowDescription", "DataRow", "DataRow", "CommandComplete", "ReadyForQuery", "RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
	wantMaskedRow(t, ms[1], "7")
	wantMaskedRow(t, ms[2], "7")
	if v := string(ms[6].(*pgproto3.DataRow).Values[0]); v != "alice@example.com" {
		t.Fatalf("unmasked query's row rewritten: %q", v)
	}
}

// TestMaskExtendedInjectedDescribe: pgx's cached statements execute
// without a Describe; the relay injects one, swallows its answer and masks
// binary-format text values.
func TestMaskExtendedInjectedDescribe(t *testing.T) {
	ps := newMaskPipeSession(t, &MaskingConfig{})
	ps.send(t,
		&pgproto3.Parse{Name: "s1", Query: "select * from customers"},
		&pgproto3.Bind{PreparedStatement: "s1", ResultFormatCodes: []int16{1}},
		&pgproto3.Execute{},
		&pgproto3.Sync{})
	ps.serverReceive(t) // Parse
	ps.serverReceive(t) // Bind
	if d, ok := ps.serverReceive(t).(*pgproto3.Describe); !ok || d.ObjectType != 'P' {
		t.Fatalf("no Describe injected before Execute: %#v", d)
	}
	ps.serverReceive(t) // Execute
	ps.serverReceive(t) // Sync
	ps.serverSend(t, &pgproto3.ParseComplete{}, &pgproto3.BindComplete{},
		&pgproto3.RowDescription{Fields: binaryFields(customerFields)},
		customerRow(), &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	ms := wantTypes(t, ps, "ParseComplete", "BindComplete", "DataRow", "CommandComplete", "ReadyForQuery")
	wantMaskedRow(t, ms[2], "7")

	// The agent describes the portal itself: nothing injected, its
	// RowDescription reaches it.
	ps.send(t,
		&pgproto3.Bind{PreparedStatement: "s1"},
		&pgproto3.Describe{ObjectType: 'P'},
		&pgproto3.Execute{},
		&pgproto3.Sync{})
	for _, want := range []string{"Bind", "Describe", "Execute", "Sync"} {
		if m := ps.serverReceive(t); typeName(m) != "*pgproto3."+want {
			t.Fatalf("server got %T, want %s", m, want)
		}
	}
	ps.serverSend(t, &pgproto3.BindComplete{}, &pgproto3.RowDescription{Fields: customerFields},
		customerRow(), &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	ms = wantTypes(t, ps, "BindComplete", "RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
	wantMaskedRow(t, ms[2], "7")
}

// TestMaskErrorSkipsToSync: an error in extended mode makes the server skip
// to Sync; the expected answers skipped with it must not shift the masks
// onto the next request's rows.
func TestMaskErrorSkipsToSync(t *testing.T) {
	ps := newMaskPipeSession(t, &MaskingConfig{})
	ps.send(t,
		&pgproto3.Parse{Query: "select * from orders"},
		&pgproto3.Bind{},
		&pgproto3.Describe{ObjectType: 'P'},
		&pgproto3.Execute{},
		&pgproto3.Sync{},
		&pgproto3.Parse{Name: "c", Query: "select * from customers"},
		&pgproto3.Bind{PreparedStatement: "c"},
		&pgproto3.Describe{ObjectType: 'P'},
		&pgproto3.Execute{},
		&pgproto3.Sync{})
	for range 10 {
		ps.serverReceive(t)
	}
	ps.serverSend(t,
		&pgproto3.ParseComplete{},
		&pgproto3.ErrorResponse{Severity: "ERROR", Code: "22P02", Message: "bad parameter"},
		&pgproto3.ReadyForQuery{TxStatus: 'I'},
		&pgproto3.ParseComplete{}, &pgproto3.BindComplete{},
		&pgproto3.RowDescription{Fields: customerFields}, customerRow(),
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	ms := wantTypes(t, ps, "ParseComplete", "ErrorResponse", "ReadyForQuery", "ParseComplete", "BindComplete", "RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
	wantMaskedRow(t, ms[6], "7")

	// And the other way round: the masked request fails, the unmasked
	// one's rows pass untouched.
	ps.send(t,
		&pgproto3.Bind{PreparedStatement: "c"}, &pgproto3.Execute{}, &pgproto3.Sync{},
		&pgproto3.Query{String: "select * from orders"})
	for range 5 {
		ps.serverReceive(t)
	}
	raw := &pgproto3.DataRow{Values: [][]byte{[]byte("alice@example.com")}}
	ps.serverSend(t,
		&pgproto3.ErrorResponse{Severity: "ERROR", Code: "22P02", Message: "bad parameter"}, &pgproto3.ReadyForQuery{TxStatus: 'I'},
		&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("email"), DataTypeOID: 25}}}, raw,
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	ms = wantTypes(t, ps, "ErrorResponse", "ReadyForQuery", "RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
	if v := string(ms[3].(*pgproto3.DataRow).Values[0]); v != "alice@example.com" {
		t.Fatalf("unmasked query's row rewritten: %q", v)
	}
}

// TestMaskErrorsAndNotifications: once the session is subject to a mask,
// error details, notices and notification payloads are masked too.
func TestMaskErrorsAndNotifications(t *testing.T) {
	ps := newMaskPipeSession(t, &MaskingConfig{})
	ps.send(t, &pgproto3.Query{String: "insert into customers (email) values ('alice@example.com')"})
	ps.serverReceive(t)
	ps.serverSend(t,
		&pgproto3.NotificationResponse{PID: 1, Channel: "c", Payload: `{"email": "bob@example.org", "n": 1}`},
		&pgproto3.NoticeResponse{Severity: "NOTICE", Code: "00000", Message: "mail to carol@example.net"},
		&pgproto3.ErrorResponse{Severity: "ERROR", Code: "23505", Message: `duplicate key value violates unique constraint "customers_email_key"`,
			Detail: "Key (email)=(alice@example.com) already exists.", SchemaName: "public", TableName: "customers"},
		&pgproto3.ReadyForQuery{TxStatus: 'I'})
	ms := wantTypes(t, ps, "NotificationResponse", "NoticeResponse", "ErrorResponse", "ReadyForQuery")
	if p := ms[0].(*pgproto3.NotificationResponse).Payload; strings.Contains(p, "bob@") || !strings.Contains(p, `"n": 1`) {
		t.Fatalf("notification payload %q", p)
	}
	if m := ms[1].(*pgproto3.NoticeResponse).Message; strings.Contains(m, "carol@") {
		t.Fatalf("notice %q", m)
	}
	if d := ms[2].(*pgproto3.ErrorResponse).Detail; strings.Contains(d, "alice@") || !strings.HasPrefix(d, "Key (email)=(") {
		t.Fatalf("error detail %q", d)
	}
}

// TestMaskCopyOut: COPY … TO STDOUT rows of a masked request are masked by
// the COPY's format and column list; what cannot be masked is refused.
func TestMaskCopyOut(t *testing.T) {
	ps := newMaskPipeSession(t, &MaskingConfig{})
	for _, q := range []string{
		"copy customers to stdout",                             // columns unknown, the mask has column rules
		"copy (select * from customers) to stdout",             // the same
		"copy customers (id, email) to stdout (format binary)", // binary
	} {
		ps.send(t, &pgproto3.Query{String: q})
		if got := ps.serverReceive(t).(*pgproto3.Query).String; !strings.HasPrefix(got, "interlock_blocked_") {
			t.Fatalf("%q forwarded: %q", q, got)
		}
	}
	ps.send(t,
		&pgproto3.Query{String: "copy customers (id, email, ssn, note) to stdout with (format csv, header)"},
		&pgproto3.Query{String: "copy customers (id, email, ssn, note) to stdout"})
	for range 2 {
		ps.serverReceive(t)
	}
	// The three refusals first. net.Pipe does not buffer: the server side
	// writes while the agent side reads.
	cols := []uint16{0, 0, 0, 0}
	go ps.serverSendAsync(t,
		&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: "syntax error"}, &pgproto3.ReadyForQuery{TxStatus: 'I'},
		&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: "syntax error"}, &pgproto3.ReadyForQuery{TxStatus: 'I'},
		&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: "syntax error"}, &pgproto3.ReadyForQuery{TxStatus: 'I'},
		&pgproto3.CopyOutResponse{ColumnFormatCodes: cols},
		&pgproto3.CopyData{Data: []byte("id,email,ssn,note\n")},
		&pgproto3.CopyData{Data: []byte("7,alice@example.com,123-45-6789,\"card 4111 1111 1111 1111, not 4111 1111 1111 1112\"\n")},
		&pgproto3.CopyDone{}, &pgproto3.CommandComplete{CommandTag: []byte("COPY 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'},
		&pgproto3.CopyOutResponse{ColumnFormatCodes: cols},
		&pgproto3.CopyData{Data: []byte("7\talice@example.com\t123-45-6789\tcard 4111 1111 1111 1111\\nline two\n")},
		&pgproto3.CopyDone{}, &pgproto3.CommandComplete{CommandTag: []byte("COPY 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	var lines []string
	for {
		m := ps.agentReceive(t)
		if d, ok := m.(*pgproto3.CopyData); ok {
			lines = append(lines, string(d.Data))
		}
		if _, ok := m.(*pgproto3.ReadyForQuery); ok && len(lines) == 3 {
			break
		}
	}
	want := []string{
		"id,email,ssn,note\n",
		"7,****@example.com,[REDACTED:ssn],\"card [REDACTED:card], not 4111 1111 1111 1112\"\n",
		"7\t****@example.com\t[REDACTED:ssn]\tcard [REDACTED:card]\\nline two\n",
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("COPY line %d = %q, want %q", i, lines[i], want[i])
		}
	}
}

// TestMaskRowMismatchEndsSession: a row that does not match its description
// never reaches the agent.
func TestMaskRowMismatchEndsSession(t *testing.T) {
	ps := newMaskPipeSession(t, &MaskingConfig{})
	ps.send(t, &pgproto3.Query{String: "select * from customers"})
	ps.serverReceive(t)
	ps.serverSend(t, &pgproto3.RowDescription{Fields: customerFields},
		&pgproto3.DataRow{Values: [][]byte{[]byte("alice@example.com")}})
	ps.agent.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		m, err := ps.agentFE.Receive()
		if err != nil {
			break // the session ended
		}
		if d, ok := m.(*pgproto3.DataRow); ok {
			t.Fatalf("mismatched row reached the agent: %q", d.Values)
		}
	}
}

// TestMaskCursorFetch: rows of a cursor declared for a masked query arrive
// by FETCH, which the policy allows on its own; they are masked too.
func TestMaskCursorFetch(t *testing.T) {
	ps := newMaskPipeSession(t, &MaskingConfig{})
	ps.send(t, &pgproto3.Query{String: "begin; declare c cursor for select * from customers"})
	if q := ps.serverReceive(t).(*pgproto3.Query).String; strings.HasPrefix(q, "interlock_blocked_") {
		t.Fatalf("declare refused: %q", q)
	}
	ps.serverSend(t, &pgproto3.CommandComplete{CommandTag: []byte("BEGIN")}, &pgproto3.CommandComplete{CommandTag: []byte("DECLARE CURSOR")}, &pgproto3.ReadyForQuery{TxStatus: 'T'})
	wantTypes(t, ps, "CommandComplete", "CommandComplete", "ReadyForQuery")
	ps.send(t, &pgproto3.Query{String: "fetch 10 from c"})
	if q := ps.serverReceive(t).(*pgproto3.Query).String; q != "fetch 10 from c" {
		t.Fatalf("fetch forwarded as %q", q)
	}
	go ps.serverSendAsync(t, &pgproto3.RowDescription{Fields: customerFields}, customerRow(),
		&pgproto3.CommandComplete{CommandTag: []byte("FETCH 1")}, &pgproto3.ReadyForQuery{TxStatus: 'T'})
	ms := wantTypes(t, ps, "RowDescription", "DataRow", "CommandComplete", "ReadyForQuery")
	wantMaskedRow(t, ms[1], "7")
}

// TestMaskPortalTableBounded: when the portal table is cleared, a masked
// portal bound before still gets a mask at its Execute.
func TestMaskPortalTableBounded(t *testing.T) {
	ps := newMaskPipeSession(t, &MaskingConfig{})
	// The server side reads while the agent sends: the pipes do not buffer.
	go func() {
		for {
			m, err := ps.serverBE.Receive()
			if err != nil {
				return
			}
			if _, ok := m.(*pgproto3.Sync); ok {
				msgs := []pgproto3.BackendMessage{&pgproto3.ParseComplete{}, &pgproto3.ParseComplete{}}
				for range maxPortals + 1 {
					msgs = append(msgs, &pgproto3.BindComplete{})
				}
				msgs = append(msgs, &pgproto3.RowDescription{Fields: customerFields}, customerRow(), &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
				ps.serverSendAsync(t, msgs...)
				return
			}
		}
	}()
	ps.send(t, &pgproto3.Parse{Name: "c", Query: "select * from customers"}, &pgproto3.Parse{Name: "o", Query: "select * from orders"},
		&pgproto3.Bind{DestinationPortal: "keep", PreparedStatement: "c"})
	for i := range maxPortals {
		ps.send(t, &pgproto3.Bind{DestinationPortal: fmt.Sprint("p", i), PreparedStatement: "o"})
	}
	ps.send(t, &pgproto3.Execute{Portal: "keep"}, &pgproto3.Sync{})
	for {
		m := ps.agentReceive(t)
		if d, ok := m.(*pgproto3.DataRow); ok {
			c := &pgproto3.DataRow{}
			for _, v := range d.Values {
				c.Values = append(c.Values, append([]byte(nil), v...))
			}
			wantMaskedRow(t, c, "7")
			return
		}
	}
}
