package postgres

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/interlockhq/interlock/engine"
	"github.com/interlockhq/interlock/engine/recording"
)

func TestScrubLiterals(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"select 1", "select $1"},
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;", "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"},
		{"select 'it''s', E'a\\'b', $$x$$, $tag$ y $ $tag$, 1.5e-3, .5, 0xFF, 1_000, B'101', x'ff', N'n', U&'d\\0061t'", "select $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12"},
		{"select * from t where a = $1 and b = 'x'", "select * from t where a = $1 and b = $2"},
		{`select "we're"."col1" from t1 -- password 'hunter2'` + "\nwhere x = /* secret /* nested */ still */ 2", `select "we're"."col1" from t1  ` + "\nwhere x =   $1"},
		{"select a$1, t.c2 from t2", "select a$1, t.c2 from t2"},
		{"select 'unterminated", "select $1"},
		{"select $q$ unterminated", "select $1"},
		{"insert into t values (1,'a'),(2,'b')", "insert into t values ($1,$2),($3,$4)"},
		{"select interval '1 day', date '2020-01-01'", "select interval $1, date $2"},
		{"select 1::int, a[1:2]", "select $1::int, a[$2:$3]"},
	} {
		if got := scrubLiterals(c.in); got != c.want {
			t.Errorf("scrub(%q)\n got %q\nwant %q", c.in, got, c.want)
		}
	}
}

// TestScrubLeavesNoLiteral checks the scrubber against libpg_query's own
// scanner on every statement of the classification cases and the test
// data: what it returns has no literal and no comment left.
func TestScrubLeavesNoLiteral(t *testing.T) {
	var corpus []string
	for _, c := range loadCases(t) {
		corpus = append(corpus, c.SQL)
	}
	files, _ := filepath.Glob("testdata/*.sql")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		corpus = append(corpus, strings.Split(string(b), ";\n")...)
	}
	corpus = append(corpus, scrubSeeds...)
	for _, sql := range corpus {
		checkScrubbed(t, sql)
	}
}

var scrubSeeds = []string{
	"select e'\\\\' || 'a' || $a$b$a$ || $$c$$ from t where x in (1, 2.0, -3e4)",
	"select U&'\\0441\\043B' UESCAPE '!', 'a' 'b'",
	"select 1 /* a /* b */ c */ + 2 -- end",
	"select $1, $2 from t where y = 'z' and w = 5",
	"copy t from stdin with (delimiter ',', null '')",
	"$''", "a'b'c", "1'x'2", "$1'x'",
}

func checkScrubbed(t *testing.T, sql string) {
	t.Helper()
	before, err := pg_query.Scan(sql)
	if err != nil {
		return // the scanner refuses it; so does the classifier
	}
	out := scrubLiterals(sql)
	after, err := pg_query.Scan(out)
	if err != nil {
		t.Errorf("scrubbed text does not scan: %v\n in: %q\nout: %q", err, sql, out)
		return
	}
	for _, tok := range after.Tokens {
		switch tok.Token {
		case pg_query.Token_SCONST, pg_query.Token_USCONST, pg_query.Token_BCONST, pg_query.Token_XCONST,
			pg_query.Token_ICONST, pg_query.Token_FCONST, pg_query.Token_SQL_COMMENT, pg_query.Token_C_COMMENT:
			t.Errorf("literal %q (%s) left in the scrubbed text\n in: %q\nout: %q", out[tok.Start:tok.End], tok.Token, sql, out)
		}
	}
	_ = before
}

func FuzzScrubLiterals(f *testing.F) {
	for _, s := range scrubSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		if strings.IndexByte(sql, 0) >= 0 {
			return
		}
		checkScrubbed(t, sql)
	})
}

func TestTagRows(t *testing.T) {
	for tag, want := range map[string]int64{"SELECT 5": 5, "INSERT 0 7": 7, "UPDATE 2": 2, "COPY 10": 10} {
		if got := tagRows(tag); got == nil || *got != want {
			t.Errorf("tagRows(%q) = %v", tag, got)
		}
	}
	for _, tag := range []string{"BEGIN", "CREATE TABLE", "SET"} {
		if got := tagRows(tag); got != nil {
			t.Errorf("tagRows(%q) = %d", tag, *got)
		}
	}
}

func openTestRecorder(t *testing.T, redaction string) (*recording.Recorder, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := recording.OpenFiles(recording.FilesConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	key, err := recording.LoadOrCreateKey(filepath.Join(dir, "key"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := recording.Open(recording.Config{Store: st, Key: key, Host: "h", Redaction: redaction})
	if err != nil {
		t.Fatal(err)
	}
	return r, dir
}

func sessionEvents(t *testing.T, dir, session string) (sts []recording.Statement, res []recording.Result) {
	t.Helper()
	st, err := recording.OpenFilesReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := recording.SessionRecords(context.Background(), st, "", session, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		switch r.Type {
		case recording.TypeStatement:
			var s recording.Statement
			r.Decode(&s)
			sts = append(sts, s)
		case recording.TypeResult:
			var x recording.Result
			r.Decode(&x)
			res = append(res, x)
		}
	}
	return sts, res
}

// TestRecorderObserver runs a session over pipes with the recorder as its
// observer: statements are recorded with their decisions before they are
// forwarded, results are paired with them, the refusal with the refused
// statement.
func TestRecorderObserver(t *testing.T) {
	rec, dir := openTestRecorder(t, recording.RedactParameters)
	ps := newPipeSessionWith(t, Config{Observer: NewRecorder(rec)})
	if err := rec.SessionStarted(ps.ss.s); err != nil {
		t.Fatal(err)
	}
	ps.send(t, &pgproto3.Query{String: "select 1"}, &pgproto3.Query{String: "select 2; DROP TABLE orders"})
	ps.serverReceive(t)
	sentinel := ps.serverReceive(t).(*pgproto3.Query).String
	ps.serverSend(t,
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'},
		&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: `syntax error at or near "` + sentinel + `"`}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	for range 4 {
		ps.agentReceive(t)
	}
	// Extended: parse + execute in one request, then execute again.
	ps.send(t, &pgproto3.Parse{Name: "s1", Query: "select * from orders where id = 42"}, &pgproto3.Bind{PreparedStatement: "s1"}, &pgproto3.Execute{}, &pgproto3.Sync{})
	for range 4 {
		ps.serverReceive(t)
	}
	ps.serverSend(t, &pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	for range 4 {
		ps.agentReceive(t)
	}
	ps.send(t, &pgproto3.Bind{PreparedStatement: "s1"}, &pgproto3.Execute{}, &pgproto3.Sync{})
	for range 3 {
		ps.serverReceive(t)
	}
	ps.serverSend(t, &pgproto3.BindComplete{}, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 0")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	for range 3 {
		ps.agentReceive(t)
	}
	rec.SessionEnded(ps.ss.s, nil)
	rec.Close()

	sts, res := sessionEvents(t, dir, ps.ss.s.UID)
	if len(sts) != 4 {
		t.Fatalf("%d statements: %+v", len(sts), sts)
	}
	want := []struct {
		text, verdict, rule string
		forwarded           bool
	}{
		{"select $1", "allow", "read", true},
		{"select $1", "allow", "read", false},
		{"DROP TABLE orders", "block", "no-drop", false},
		{"select * from orders where id = $1", "allow", "read", true},
	}
	for i, w := range want {
		s := sts[i]
		if s.N != i+1 || s.Text != w.text || s.Verdict != w.verdict || s.Rule != w.rule || s.Forwarded != w.forwarded || s.Redaction != "parameters" {
			t.Errorf("statement %d: %+v, want %+v", i+1, s, w)
		}
	}
	if sts[0].Fingerprint != sts[1].Fingerprint || sts[0].Fingerprint == sts[3].Fingerprint {
		t.Errorf("fingerprints: %s %s %s", sts[0].Fingerprint, sts[1].Fingerprint, sts[3].Fingerprint)
	}
	if len(sts[2].Objects) != 1 || sts[2].Objects[0].Name != "public.orders" || sts[2].Reason == "" {
		t.Errorf("blocked statement: %+v", sts[2])
	}
	if len(res) != 4 {
		t.Fatalf("%d results: %+v", len(res), res)
	}
	if res[0].N != 1 || res[0].Tag != "SELECT 1" || *res[0].Rows != 1 {
		t.Errorf("result 1: %+v", res[0])
	}
	if res[1].N != 3 || !res[1].Refused || res[1].Code != "42501" || !strings.Contains(res[1].Message, "no drops") {
		t.Errorf("refusal: %+v", res[1])
	}
	if res[2].N != 4 || res[3].N != 0 || res[3].Tag != "SELECT 0" {
		t.Errorf("extended results: %+v %+v", res[2], res[3])
	}
}

// TestRecorderFailureRefuses: a statement whose record cannot be written is
// refused, never forwarded.
func TestRecorderFailureRefuses(t *testing.T) {
	rec, _ := openTestRecorder(t, recording.RedactFull)
	ps := newPipeSessionWith(t, Config{Observer: NewRecorder(rec)})
	if err := rec.SessionStarted(ps.ss.s); err != nil {
		t.Fatal(err)
	}
	rec.Close()
	ps.send(t, &pgproto3.Query{String: "select 1"})
	q := ps.serverReceive(t).(*pgproto3.Query)
	if !strings.HasPrefix(q.String, "interlock_blocked_") {
		t.Fatalf("unrecorded statement forwarded: %q", q.String)
	}
	ps.serverSend(t, &pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: `syntax error at or near "` + q.String + `"`}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	e, ok := ps.agentReceive(t).(*pgproto3.ErrorResponse)
	if !ok || e.Code != "42501" || !strings.Contains(e.Message, "could not be recorded") {
		t.Fatalf("agent got %#v", e)
	}
}

func TestBindRecordValues(t *testing.T) {
	ev := &BindEvent{Statement: "s1", Text: "select $1, $2, $3", Params: [][]byte{[]byte("o'k"), nil, {0, 0, 0, 17}}, Formats: []int16{0, 0, 1}}
	b := bindRecord(ev)
	if len(b.Params) != 3 || b.Params[0] == nil || *b.Params[0] != "o'k" || b.Params[1] != nil || b.Params[2] == nil || *b.Params[2] != `\x00000011` || b.Truncated {
		t.Fatalf("bindRecord = %+v", b)
	}
	for _, tc := range []struct {
		formats []int16
		i       int
		want    bool
	}{{nil, 0, false}, {[]int16{1}, 5, true}, {[]int16{0}, 0, false}, {[]int16{0, 1}, 1, true}, {[]int16{0, 1}, 0, false}, {[]int16{0, 1}, 2, false}} {
		if got := (&BindEvent{Formats: tc.formats}).Binary(tc.i); got != tc.want {
			t.Errorf("Binary(%d) with formats %v = %v", tc.i, tc.formats, got)
		}
	}
	big := bytes.Repeat([]byte("x"), recording.MaxText)
	b = bindRecord(&BindEvent{Params: [][]byte{big, []byte("more")}})
	if !b.Truncated || len(*b.Params[0])+len(*b.Params[1]) > recording.MaxText {
		t.Errorf("values over MaxText in all are not cut: truncated %v, %d bytes", b.Truncated, len(*b.Params[0])+len(*b.Params[1]))
	}
}

// failingBinder decides every statement but cannot record a Bind.
type failingBinder struct{ nopObserver }

func (failingBinder) Bound(context.Context, *engine.Session, *BindEvent) error {
	return errors.New("store is down")
}

// TestBindRecordFailureRefuses: when a Bind's values cannot be recorded,
// the server gets a Bind of a statement that cannot exist, without the
// values, and the agent the refusal; the session goes on.
func TestBindRecordFailureRefuses(t *testing.T) {
	ps := newPipeSessionWith(t, Config{Observer: failingBinder{}})
	ps.send(t,
		&pgproto3.Parse{Name: "s1", Query: "select * from orders where id = $1"},
		&pgproto3.Bind{PreparedStatement: "s1", DestinationPortal: "p1", Parameters: [][]byte{[]byte("secret-value")}},
		&pgproto3.Execute{Portal: "p1"},
		&pgproto3.Sync{})
	if p := ps.serverReceive(t).(*pgproto3.Parse); !strings.HasPrefix(p.Name, stmtPrefix) || p.Query != "select * from orders where id = $1" {
		t.Fatalf("allowed parse forwarded as %#v", p)
	}
	b := ps.serverReceive(t).(*pgproto3.Bind)
	if !strings.HasPrefix(b.PreparedStatement, "interlock_blocked_") || !strings.HasPrefix(b.DestinationPortal, portalPrefix) || len(b.Parameters) != 0 {
		t.Fatalf("unrecorded bind forwarded as %#v", b)
	}
	ps.serverReceive(t) // Execute
	ps.serverReceive(t) // Sync
	ps.serverSend(t, &pgproto3.ParseComplete{},
		&pgproto3.ErrorResponse{Severity: "ERROR", Code: "26000", Message: `prepared statement "` + b.PreparedStatement + `" does not exist`},
		&pgproto3.ReadyForQuery{TxStatus: 'I'})
	ps.agentReceive(t) // ParseComplete
	if e, ok := ps.agentReceive(t).(*pgproto3.ErrorResponse); !ok || e.Code != "42501" || !strings.Contains(e.Message, "could not be recorded") {
		t.Fatalf("agent got %#v", e)
	}
	if _, ok := ps.agentReceive(t).(*pgproto3.ReadyForQuery); !ok {
		t.Fatal("no ReadyForQuery after the refusal")
	}
}

// refuseText is an observer that refuses statements whose text contains
// a marker, as the approvals stage refuses a denied statement.
type refuseText struct {
	nopObserver
	marker string
}

func (r refuseText) Decided(_ context.Context, _ *engine.Session, ev *StatementEvent) error {
	if strings.Contains(ev.Text, r.marker) {
		return &Refusal{Code: "42501", Message: "approval denied"}
	}
	return nil
}

// TestRecorderWithdrawsSiblings: the recorder hears a request's statements
// one by one, each as forwarded until a later stage refuses one. Then none
// is forwarded, and the recording must not show the earlier ones as run.
func TestRecorderWithdrawsSiblings(t *testing.T) {
	rec, dir := openTestRecorder(t, recording.RedactNone)
	ps := newPipeSessionWith(t, Config{Observer: Observers{NewRecorder(rec), refuseText{marker: "refuse_me"}}})
	if err := rec.SessionStarted(ps.ss.s); err != nil {
		t.Fatal(err)
	}
	ps.send(t, &pgproto3.Query{String: "select 1; select 2 as refuse_me; select 3"})
	sentinel := ps.serverReceive(t).(*pgproto3.Query).String
	if !strings.HasPrefix(sentinel, sentinelPrefix) {
		t.Fatalf("a request with a refused statement was forwarded: %q", sentinel)
	}
	ps.serverSend(t, &pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: `syntax error at or near "` + sentinel + `"`}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	ps.agentReceive(t)
	ps.agentReceive(t)
	rec.SessionEnded(ps.ss.s, nil)
	rec.Close()

	sts, res := sessionEvents(t, dir, ps.ss.s.UID)
	if len(sts) != 3 {
		t.Fatalf("%d statements: %+v", len(sts), sts)
	}
	byN := map[int]recording.Result{}
	for _, r := range res {
		byN[r.N] = r
	}
	if r, ok := byN[1]; !ok || !r.Refused || !strings.Contains(r.Message, "statement 2 of the same request was refused") {
		t.Errorf("statement 1, recorded before its sibling was refused: result %+v, want a refusal saying it was not forwarded", r)
	}
	if r, ok := byN[2]; !ok || !r.Refused || !strings.Contains(r.Message, "approval denied") {
		t.Errorf("statement 2, refused by the later stage: result %+v, want Interlock's refusal", r)
	}
	if sts[2].Forwarded {
		t.Errorf("statement 3, heard after the refusal, recorded as forwarded")
	}
	if _, ok := byN[0]; ok {
		t.Errorf("a result paired with no statement: %+v", res)
	}
}
