package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interlockhq/interlock/engine/recording"
	"github.com/interlockhq/interlock/test/harness"
)

// exportRecords reads the whole recording through `interlock audit export`.
func exportRecords(t *testing.T, e *pgEnv) []*recording.Record {
	t.Helper()
	cmd := exec.Command(e.d.Bin, "--config", e.d.ConfigPath, "audit", "export", "--format", "jsonl")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("audit export: %v", err)
	}
	var recs []*recording.Record
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		rec, err := recording.ParseRecord([]byte(sc.Text()))
		if err != nil {
			t.Fatalf("exported record: %v\n%s", err, sc.Text())
		}
		recs = append(recs, rec)
	}
	return recs
}

func auditVerify(t *testing.T, e *pgEnv) string {
	t.Helper()
	out, err := e.d.CLI("audit", "verify")
	if err != nil {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
	return out
}

// TestRecordingReplayAfterRestart: what an agent ran through Interlock is
// in `interlock replay`, in order, with decisions and results, after the
// daemon restarted; the blocked statement is recorded as blocked and did
// not reach the database.
func TestRecordingReplayAfterRestart(t *testing.T) {
	e := setupPG(t, "")
	out, err := psqlIn(t, e.writer, e.dsn("127.0.0.1"),
		"-c", "insert into notes (body) values ('first note')",
		"-c", "select count(*) from orders where amount > 10",
		"-c", "drop table orders",
		"-c", "select body from notes")
	if !strings.Contains(out, "DROP and TRUNCATE are not allowed") {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	if got := e.sql(t, "select count(*) from orders"); got != "50" {
		t.Fatalf("orders after a blocked drop: %s", got)
	}
	e.d.Stop()
	e.d.Start()

	list, err := e.d.CLI("sessions", "list", "--agent", "writer", "-o", "json")
	if err != nil {
		t.Fatalf("sessions list: %v\n%s", err, list)
	}
	var sessions []recording.SessionSummary
	if err := json.Unmarshal([]byte(list), &sessions); err != nil || len(sessions) != 1 {
		t.Fatalf("sessions list: %v\n%s", err, list)
	}
	s := sessions[0]
	if s.Agent != "writer" || s.Target != "db" || s.Statements != 4 || s.Refused != 1 || s.Ended == nil || !strings.HasSuffix(s.Exe, "psql") {
		t.Errorf("session summary: %+v", s)
	}
	replay, err := e.d.CLI("replay", s.ID[:10])
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, replay)
	}
	t.Logf("replay:\n%s", replay)
	want := []string{
		"agent writer", "target db",
		"#1    allow", "insert into notes (body) values ($1)", "↳ #1    INSERT 0 1 (1 row)",
		"#2    allow", "select count(*) from orders where amount > $1", "↳ #2    SELECT 1 (1 row)",
		"#3    BLOCK (refused)", "rule no-destruction", "drop table orders", "↳ #3    refused 42501 Interlock: block by rule no-destruction",
		"#4    allow", "select body from notes",
		"end: closed; 4 statements",
	}
	at := 0
	for _, w := range want {
		i := strings.Index(replay[at:], w)
		if i < 0 {
			t.Fatalf("replay lacks %q (in order) after offset %d", w, at)
		}
		at += i + len(w)
	}
	if out := auditVerify(t, e); !strings.Contains(out, "ok:") {
		t.Errorf("audit verify: %s", out)
	}

	// --follow prints an open session until it ends.
	live := harness.Command(t, e.analyst, "psql", "-X", "-d", e.dsn("127.0.0.1"), "-c", "select 'live'", "-c", "select pg_sleep(1.5)", "-c", "select 42")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	var id string
	harness.WaitFor(5*time.Second, func() bool {
		out, _ := e.d.CLI("sessions", "list", "--agent", "analyst", "-o", "json")
		var ss []recording.SessionSummary
		json.Unmarshal([]byte(out), &ss)
		if len(ss) == 1 && ss[0].Ended == nil {
			id = ss[0].ID
		}
		return id != ""
	})
	if id == "" {
		t.Fatal("the live session is not listed as open")
	}
	followed, err := e.d.CLI("replay", "--follow", id)
	live.Wait()
	if err != nil || !strings.Contains(followed, "select pg_sleep($1)") || !strings.Contains(followed, "end: closed; 3 statements") {
		t.Errorf("replay --follow: %v\n%s", err, followed)
	}
	if pk, err := e.d.CLI("audit", "pubkey"); err != nil || !strings.Contains(pk, "BEGIN PUBLIC KEY") {
		t.Errorf("audit pubkey: %v\n%s", err, pk)
	}
}

// TestRecordingKillUnderLoad: several agents insert concurrently while the
// daemon is killed with SIGKILL. Every row the database has has its
// statement record (recorded before it was forwarded), and the surviving
// log verifies, before and after the daemon comes back.
func TestRecordingKillUnderLoad(t *testing.T) {
	killUnderLoad(t, "recording:\n  redaction: none\n")
}

// TestRecordingKillUnderLoadSyncInterval: the same with recording.sync:
// interval. Records are synced later, but each is written (to the page
// cache, which outlives the process) before its statement is forwarded,
// so a kill -9 of the daemon loses none.
func TestRecordingKillUnderLoadSyncInterval(t *testing.T) {
	killUnderLoad(t, "recording:\n  redaction: none\n  sync: interval\n")
}

func killUnderLoad(t *testing.T, config string) {
	e := setupPG(t, config)
	const agents, each = 4, 1500
	var wg sync.WaitGroup
	for a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if a == agents-1 {
				// One pgx agent on the extended protocol.
				steps := make([]harness.PgxStep, 800)
				for i := range steps {
					steps[i] = harness.PgxStep{SQL: fmt.Sprintf("insert into notes (body) values ('load-%d-%d')", a, i), Mode: "exec"}
				}
				harness.RunPgx(t, e.writer, e.dsn("127.0.0.1"), steps...)
				return
			}
			var script strings.Builder
			for i := range each {
				fmt.Fprintf(&script, "insert into notes (body) values ('load-%d-%d');\n", a, i)
			}
			cmd := harness.Command(t, e.writer, "psql", "-X", "-q", "-d", e.dsn("127.0.0.1"))
			cmd.Stdin = strings.NewReader(script.String())
			cmd.CombinedOutput() // fails when the daemon dies
		}()
	}
	if !harness.WaitFor(20*time.Second, func() bool { return e.d.Metric("interlock_recording_records_total") > 600 }) {
		t.Fatal("no load recorded")
	}
	records := e.d.Metric("interlock_recording_records_total")
	syncs := e.d.Metric("interlock_recording_fsync_seconds_count")
	e.d.Kill()
	wg.Wait()
	t.Logf("before the kill: %.0f records in %.0f syncs (%.2f records per sync)", records, syncs, records/syncs)

	rows := strings.Fields(e.sql(t, "select body from notes where body like 'load-%'"))
	if len(rows) == 0 {
		t.Fatal("no rows inserted")
	}
	recorded := map[string]bool{}
	for _, r := range exportRecords(t, e) {
		if r.Type != recording.TypeStatement {
			continue
		}
		var st recording.Statement
		r.Decode(&st)
		if st.Forwarded {
			recorded[st.Text] = true
		}
	}
	missing := 0
	for _, body := range rows {
		if !recorded[fmt.Sprintf("insert into notes (body) values ('%s')", body)] {
			missing++
			if missing < 5 {
				t.Errorf("row %q has no statement record", body)
			}
		}
	}
	t.Logf("%d rows in the database, %d forwarded statements recorded, %d rows without a record", len(rows), len(recorded), missing)
	t.Log(auditVerify(t, e))
	e.d.Start()
	t.Log(auditVerify(t, e))
}

// TestRecordingFailureRefuses: when the recording cannot be written (its
// filesystem is full), statements are refused with a clear error and not
// executed; once there is room again they run.
func TestRecordingFailureRefuses(t *testing.T) {
	e := setupPG(t, "recording:\n  segment_size: 64KiB\n")
	dir := filepath.Join(e.d.Dir, "state", "recordings")
	e.d.Stop()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "interlock-rec-test", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs for the recording: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	e.d.Start()
	// Fill what the first segment does not hold.
	fill := filepath.Join(dir, "fill")
	exec.Command("dd", "if=/dev/zero", "of="+fill, "bs=4k").Run()

	var script strings.Builder
	for i := range 400 {
		fmt.Fprintf(&script, "insert into notes (body) values ('full-%d');\n", i)
	}
	cmd := harness.Command(t, e.writer, "psql", "-X", "-q", "-d", e.dsn("127.0.0.1"))
	cmd.Stdin = strings.NewReader(script.String())
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "the statement could not be recorded") || !strings.Contains(string(out), "42501") && !strings.Contains(string(out), "ERROR") {
		t.Fatalf("psql on a full recording:\n%.2000s", out)
	}
	t.Logf("psql: %s", strings.SplitN(string(out), "\n", 2)[0])
	if e.d.Metric("interlock_recording_errors_total") < 1 {
		t.Error("interlock_recording_errors_total did not count the failures")
	}
	inserted := e.sql(t, "select count(*) from notes where body like 'full-%'")
	if inserted == "400" || inserted == "0" {
		t.Fatalf("%s of 400 inserts ran with a full recording", inserted)
	}
	// Room again: statements run, and the log verifies.
	os.Remove(fill)
	out2, err := psqlIn(t, e.writer, e.dsn("127.0.0.1"), "-c", "insert into notes (body) values ('after')")
	if err != nil {
		t.Fatalf("after freeing space: %v\n%s", err, out2)
	}
	e.d.Stop()
	auditVerify(t, e)
	recorded := 0
	for _, r := range exportRecords(t, e) {
		var st recording.Statement
		if r.Type == recording.TypeStatement && r.Decode(&st) == nil && st.Forwarded && strings.HasPrefix(st.Text, "insert into notes") {
			recorded++
		}
	}
	if want := e.sql(t, "select count(*) from notes where body like 'full-%' or body = 'after'"); fmt.Sprint(recorded) != want {
		t.Errorf("%d inserts recorded, %s rows in the database", recorded, want)
	}
}

// TestRecordingBindParameters: with redaction none, the values an agent
// binds to a prepared statement (pgx sends every argument that way) are
// recorded before the execution, text and binary, and replay shows them;
// with the default redaction they are not recorded at all.
func TestRecordingBindParameters(t *testing.T) {
	for _, tc := range []struct {
		redaction string
		want      bool
	}{{"none", true}, {"parameters", false}} {
		t.Run(tc.redaction, func(t *testing.T) {
			e := setupPG(t, "recording:\n  redaction: "+tc.redaction+"\n")
			_, res := harness.RunPgx(t, e.analyst, e.dsn("127.0.0.1"),
				harness.PgxStep{SQL: "select count(*) from orders where amount > $1::int4 and $2::text is not null", Args: []any{17, "needle-7f3a"}, Mode: "cache"},
				harness.PgxStep{SQL: "select count(*) from orders where amount > $1", Args: []any{nil}, Mode: "exec"})
			for i, r := range res {
				if r.Err != "" {
					t.Fatalf("step %d: %s", i, r.Err)
				}
			}
			var binds []recording.Bind
			for _, rec := range exportRecords(t, e) {
				if rec.Type == recording.TypeBind {
					var b recording.Bind
					if err := rec.Decode(&b); err != nil {
						t.Fatal(err)
					}
					binds = append(binds, b)
				}
			}
			if !tc.want {
				if len(binds) != 0 {
					t.Fatalf("redaction %s recorded bind values: %+v", tc.redaction, binds)
				}
				return
			}
			var found17, foundNeedle, foundNull bool
			for _, b := range binds {
				for _, p := range b.Params {
					switch {
					case p == nil:
						foundNull = strings.Contains(b.Text, "amount > $1")
					case *p == "needle-7f3a":
						foundNeedle = true
					case *p == `\x00000011`: // 17, an int4 in binary, as pgx sends it
						found17 = strings.Contains(b.Text, "$2::text")
					}
				}
			}
			if !found17 || !foundNeedle || !foundNull {
				var shown []string
				for _, b := range binds {
					for _, p := range b.Params {
						if p == nil {
							shown = append(shown, "NULL")
						} else {
							shown = append(shown, *p)
						}
					}
				}
				t.Fatalf("bind records %+v (values %q): want 17, needle-7f3a and a NULL, each with its statement's text", binds, shown)
			}
			list, err := e.d.CLI("sessions", "list", "--agent", "analyst", "-o", "json")
			if err != nil {
				t.Fatal(err)
			}
			var ss []recording.SessionSummary
			if err := json.Unmarshal([]byte(list), &ss); err != nil || len(ss) != 1 {
				t.Fatalf("sessions list: %v\n%s", err, list)
			}
			replay, err := e.d.CLI("replay", ss[0].ID)
			if err != nil || !strings.Contains(replay, `bind $1=`) || !strings.Contains(replay, `$2="needle-7f3a"`) || !strings.Contains(replay, "$1=NULL") {
				t.Errorf("replay does not show the bound values: %v\n%s", err, replay)
			}
			if out := auditVerify(t, e); !strings.Contains(out, "ok:") {
				t.Errorf("audit verify: %s", out)
			}
		})
	}
}

// TestRecordingConnected: each session records its handshake: the database
// and user the engine connected as, and TLS toward the agent and the
// target, before its first statement; replay shows it.
func TestRecordingConnected(t *testing.T) {
	e := setupPG(t, "")
	dsn := fmt.Sprintf("postgres://agent:x@127.0.0.1:%d/postgres?sslmode=require", e.pg.Port)
	if out, err := psqlIn(t, e.analyst, dsn, "-c", "select 1"); err != nil {
		t.Fatalf("psql with sslmode=require: %v\n%s", err, out)
	}
	var conns []recording.Connected
	firstStatement, connectedAt := -1, -1
	for i, rec := range exportRecords(t, e) {
		switch rec.Type {
		case recording.TypeConnected:
			var c recording.Connected
			if err := rec.Decode(&c); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			connectedAt = i
		case recording.TypeStatement:
			if firstStatement < 0 {
				firstStatement = i
			}
		}
	}
	if len(conns) != 1 || !strings.HasPrefix(conns[0].AgentTLS, "TLS 1.") || conns[0].TargetTLS != "" || conns[0].Database != "postgres" || conns[0].DBUser == "" || conns[0].Auth != "inject" {
		t.Fatalf("connected records %+v: want one, TLS toward the agent, none toward the target (the harness server has none)", conns)
	}
	if connectedAt > firstStatement {
		t.Errorf("the connected record (%d) comes after the first statement (%d)", connectedAt, firstStatement)
	}
	list, _ := e.d.CLI("sessions", "list", "-o", "json")
	var ss []recording.SessionSummary
	if err := json.Unmarshal([]byte(list), &ss); err != nil || len(ss) != 1 {
		t.Fatalf("sessions list: %v\n%s", err, list)
	}
	if replay, err := e.d.CLI("replay", ss[0].ID); err != nil || !strings.Contains(replay, "connected to database postgres") || !strings.Contains(replay, "TLS to the agent: TLS 1.") {
		t.Errorf("replay: %v\n%s", err, replay)
	}
}
