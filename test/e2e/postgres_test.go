package e2e

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/interlockhq/interlock/test/harness"
)

// pgEnv is a real PostgreSQL behind a running Interlock with three targets
// on the same server: inject as the SCRAM superuser (127.0.0.1), inject as
// an md5 user (127.0.0.2), and passthrough ([::1]).
type pgEnv struct {
	cg      *harness.Cgroups
	pg      *harness.Postgres
	d       *harness.Daemon
	analyst string // agent cgroups
	writer  string
	plain   string // a non-agent cgroup under the same attach point
}

const pgSchema = `
create table orders (id int primary key, customer text not null, amount numeric(10,2), placed timestamptz default '2026-01-02 03:04:05+00', tags text[], blob bytea);
insert into orders select g, 'customer-' || g, g * 1.5, '2026-01-02 03:04:05+00'::timestamptz + g * interval '1 hour', array['a','b'], '\xdeadbeef' from generate_series(1, 50) g;
create table secrets (k text, v text);
insert into secrets values ('api', 'hunter2');
create table notes (id serial primary key, body text);
set password_encryption = 'md5';
create role md5user login password 'md5pw' superuser;
set password_encryption = 'scram-sha-256';
create role ro_user login password 'ro_pw';
grant select on all tables in schema public to ro_user;
`

func pgPolicy(port int, pwFile, md5File, roFile string) string {
	return fmt.Sprintf(`version: 1
targets:
  - name: db
    protocol: postgres
    address: "127.0.0.1:%[1]d"
    credentials: {user: postgres, password_file: %[2]s}
    role_credentials:
      analyst: {user: ro_user, password_file: %[4]s}   # analysts connect as a read-only database user
    tls: {mode: disable}
  - name: db-md5
    protocol: postgres
    address: "127.0.0.2:%[1]d"
    credentials: {user: md5user, password_file: %[3]s}
    tls: {mode: prefer}
  - name: db-passthrough
    protocol: postgres
    address: "[::1]:%[1]d"
    auth: passthrough
    tls: {mode: disable}
agents:
  - {name: analyst, roles: [analyst]}
  - {name: writer, roles: [writer]}
roles:
  - name: reader
    rules:
      - {id: read-public, actions: [read], tables: ["public.*"], decision: allow}
      - {id: read-catalog, actions: [read], tables: ["pg_catalog.*", "information_schema.*"], decision: allow}
      - {id: session, actions: [transaction, show, set, reset, discard, deallocate, listen, notify], decision: allow}
      - {id: sleep, functions: [pg_catalog.pg_sleep], decision: allow}
  - name: analyst
    inherits: [reader]
  - name: writer
    inherits: [reader]
    rules:
      - {id: write, actions: [insert, update, delete, merge], tables: ["public.*"], decision: allow}
      - {id: create, actions: [create], tables: ["public.*"], decision: allow}
      - {id: copy, actions: [copy_from_stdin, copy_to_stdout], tables: ["public.*"], decision: allow}
      - {id: sequences, functions: ["pg_catalog.nextval", "pg_catalog.setval"], decision: allow}
rules:
  - {id: no-destruction, actions: [drop, truncate], decision: block, message: "DROP and TRUNCATE are not allowed"}
  - {id: no-server-escape, actions: [copy_to_program, copy_from_program, copy_to_file, copy_from_file], decision: block}
  - id: no-dangerous-functions
    function_categories: [server_files, large_objects, backend_signal, remote, set_config, dynamic_sql]
    decision: block
  - {id: no-privilege, actions: [privilege, set_role, set_session_authorization, do], decision: block}
  - {id: no-secrets, actions: [all], tables: [public.secrets], decision: block, message: "secrets are off limits"}
`, port, pwFile, md5File, roFile)
}

func setupPG(t *testing.T, extraConfig string) *pgEnv {
	t.Helper()
	harness.RequirePrivileged(t)
	for _, tool := range []string{"psql", "pgbench"} {
		_, err := exec.LookPath(tool)
		harness.Require(t, err == nil, "needs "+tool+" (apt-get install postgresql-client postgresql-contrib)")
	}
	e := &pgEnv{cg: harness.NewCgroups(t), pg: harness.StartPostgres(t)}
	if out, err := exec.Command("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", e.pg.DSN("127.0.0.1"), "-c", pgSchema).CombinedOutput(); err != nil {
		t.Fatalf("create schema: %v\n%s", err, out)
	}
	dir := t.TempDir()
	pw, md5pw, ropw := filepath.Join(dir, "pw"), filepath.Join(dir, "md5pw"), filepath.Join(dir, "ropw")
	os.WriteFile(pw, []byte(e.pg.Password+"\n"), 0o600)
	os.WriteFile(md5pw, []byte("md5pw\n"), 0o600)
	os.WriteFile(ropw, []byte("ro_pw\n"), 0o600)
	e.d = harness.NewDaemon(t, e.cg.Root, harness.PinDir(t), pgPolicy(e.pg.Port, pw, md5pw, ropw))
	if extraConfig != "" {
		e.d.AppendConfig(extraConfig)
	}
	e.d.Start()
	e.plain = e.cg.Mkdir(t, "plain")
	e.analyst = e.label(t, "agents/analyst", "analyst")
	e.writer = e.label(t, "agents/writer", "writer")
	return e
}

func (e *pgEnv) label(t *testing.T, rel, agent string) string {
	t.Helper()
	p := e.cg.Mkdir(t, rel)
	if out, err := e.d.CLI("label", p, agent); err != nil {
		t.Fatalf("label: %v %s", err, out)
	}
	id := e.cg.Rel(rel)
	if !harness.WaitFor(3*time.Second, func() bool {
		labels, _ := e.d.Status()["labelled_cgroups"].([]any)
		for _, l := range labels {
			if l.(map[string]any)["path"] == id {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("label %s not picked up", id)
	}
	return p
}

// dsn is what an agent would use: the real address, and a user and
// password that Interlock ignores in inject mode.
func (e *pgEnv) dsn(host string, extra ...string) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	q := ""
	if len(extra) > 0 {
		q = "&" + strings.Join(extra, "&")
	}
	return fmt.Sprintf("postgres://agent:not-the-password@%s:%d/postgres?sslmode=disable%s", host, e.pg.Port, q)
}

func (e *pgEnv) directDSN() string { return e.pg.DSN("127.0.0.1") }

func psqlIn(t *testing.T, cgroup, dsn string, args ...string) (string, error) {
	t.Helper()
	cmd := harness.Command(t, cgroup, "psql", append([]string{"-X", "-d", dsn}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (e *pgEnv) sql(t *testing.T, q string) string {
	t.Helper()
	out, err := exec.Command("psql", "-X", "-At", "-d", e.directDSN(), "-c", q).CombinedOutput()
	if err != nil {
		t.Fatalf("direct %q: %v\n%s", q, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestPostgresClientsSeeWhatDirectSees runs real clients through Interlock
// and directly, and compares.
func TestPostgresClientsSeeWhatDirectSees(t *testing.T) {
	e := setupPG(t, "")

	t.Run("psql", func(t *testing.T) {
		for _, args := range [][]string{
			{"-c", "select * from orders order by id"},
			{"-c", `\d orders`},
			{"-c", `\dt`},
			{"-c", `\l`},
			{"-c", `\copy (select id, customer, amount from orders order by id) to stdout with csv`},
			{"-c", "select count(*), sum(amount) from orders where id > 10"},
		} {
			via, err1 := psqlIn(t, e.writer, e.dsn("127.0.0.1"), args...)
			direct, err2 := psqlIn(t, e.plain, e.directDSN(), args...)
			if err1 != nil || err2 != nil || via != direct {
				t.Errorf("psql %v differs:\n--- through Interlock (%v)\n%s\n--- direct (%v)\n%s", args, err1, via, err2, direct)
			}
		}
	})

	t.Run("psql copy in, notice, listen/notify", func(t *testing.T) {
		out, err := psqlIn(t, e.writer, e.dsn("127.0.0.1"), "-c", `\copy notes (body) from stdin`)
		_ = out
		if err != nil {
			t.Fatalf("copy from stdin: %v\n%s", err, out)
		}
		cmd := harness.Command(t, e.writer, "psql", "-X", "-d", e.dsn("127.0.0.1"), "-c", `\copy notes (body) from stdin`)
		cmd.Stdin = strings.NewReader("first\nsecond\n\\.\n")
		if b, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(b), "COPY 2") {
			t.Fatalf("copy from stdin: %v\n%s", err, b)
		}
		if got := e.sql(t, "select string_agg(body, ',' order by id) from notes"); got != "first,second" {
			t.Errorf("notes after copy = %q", got)
		}
		out, err = psqlIn(t, e.writer, e.dsn("127.0.0.1"), "-c", "create table if not exists orders (id int)")
		if err != nil || !strings.Contains(out, `NOTICE:  relation "orders" already exists, skipping`) {
			t.Errorf("notice: %v\n%s", err, out)
		}
		out, err = psqlIn(t, e.analyst, e.dsn("127.0.0.1"), "-c", "listen ch", "-c", "notify ch, 'payload'", "-c", "select 1")
		if err != nil || !strings.Contains(out, `Asynchronous notification "ch" with payload "payload" received`) {
			t.Errorf("listen/notify: %v\n%s", err, out)
		}
	})

	t.Run("pgx", func(t *testing.T) {
		steps := []harness.PgxStep{
			{SQL: "select id, customer, amount, placed, tags, blob from orders where id <= $1 order by id", Args: []any{5}},
			{SQL: "select id, customer, amount, placed, tags, blob from orders where id <= $1 order by id", Args: []any{5}, Mode: "exec"},
			{SQL: "select id, customer, amount, placed, tags, blob from orders where id <= $1 order by id", Args: []any{5}, Mode: "describe"},
			{SQL: "select id, customer, amount, placed, tags, blob from orders where id <= 5 order by id", Mode: "simple"},
			{SQL: "select id, customer, amount, placed, tags, blob from orders where id <= $1 order by id", Args: []any{7}}, // cached statement reused
			{Batch: []string{"select 1", "select count(*) from orders", "select max(id) from orders"}},
			{SQL: "select count(*) from generate_series(1, 200000) g, orders o where o.id = 1"},
			{SQL: "select g, repeat('x', 100) from generate_series(1, 20000) g"},
		}
		_, direct := harness.RunPgx(t, e.plain, e.directDSN(), steps...)
		connErr, via := harness.RunPgx(t, e.analyst, e.dsn("127.0.0.1"), steps...)
		if connErr != "" {
			t.Fatalf("pgx connect through Interlock: %s", connErr)
		}
		for i := range steps {
			via[i].MS, direct[i].MS = 0, 0
			if !reflect.DeepEqual(via[i], direct[i]) {
				t.Errorf("step %d (%+v) differs: through Interlock %+v, direct %+v", i, steps[i], trimmed(via[i]), trimmed(direct[i]))
			}
			if via[i].Err != "" {
				t.Errorf("step %d failed: %s", i, via[i].Err)
			}
		}
	})

	t.Run("pgx copy from and pipelined writes", func(t *testing.T) {
		rows := make([][]any, 1000)
		for i := range rows {
			rows[i] = []any{fmt.Sprintf("bulk-%d", i)}
		}
		_, res := harness.RunPgx(t, e.writer, e.dsn("127.0.0.1"),
			harness.PgxStep{CopyTable: "notes", CopyColumns: []string{"body"}, CopyRows: rows},
			harness.PgxStep{Batch: []string{"insert into notes (body) values ('p1')", "insert into notes (body) values ('p2')", "select count(*) from notes where body like 'p_'"}},
		)
		if res[0].Err != "" || res[0].Tag != "COPY 1000" {
			t.Errorf("copy from: %+v", res[0])
		}
		if res[1].Err != "" || len(res[1].Rows) != 1 || res[1].Rows[0][0] != "2" {
			t.Errorf("batch: %+v", res[1])
		}
		if got := e.sql(t, "select count(*) from notes where body like 'bulk-%'"); got != "1000" {
			t.Errorf("rows copied = %s", got)
		}
	})

	t.Run("pgbench", func(t *testing.T) {
		if out, err := exec.Command("pgbench", "-i", "-s", "1", "-q", e.directDSN()).CombinedOutput(); err != nil {
			t.Fatalf("pgbench -i: %v\n%s", err, out)
		}
		for _, mode := range []string{"simple", "extended", "prepared"} {
			for _, extra := range [][]string{nil, {"-S"}} {
				args := append([]string{"-n", "-M", mode, "-c", "2", "-j", "2", "-t", "25"}, extra...)
				cmd := harness.Command(t, e.writer, "pgbench", append(args, e.dsn("127.0.0.1"))...)
				out, err := cmd.CombinedOutput()
				if err != nil || !strings.Contains(string(out), "number of failed transactions: 0") {
					t.Errorf("pgbench %v through Interlock: %v\n%s", args, err, out)
				}
			}
		}
	})
}

func trimmed(r harness.PgxResult) harness.PgxResult {
	if len(r.Rows) > 3 {
		r.Rows = append(r.Rows[:3:3], []string{fmt.Sprintf("… %d rows", len(r.Rows))})
	}
	return r
}

// TestPostgresBlocked: refused statements get 42501 naming the rule, have
// no effect, and the session stays usable — on every protocol path.
func TestPostgresBlocked(t *testing.T) {
	e := setupPG(t, "")
	cases := []struct {
		name, sql string
		agent     string // "analyst" or "writer"
	}{
		{"drop table", "DROP TABLE orders", "writer"},
		{"drop database", "DROP DATABASE postgres", "writer"},
		{"truncate", "TRUNCATE orders", "writer"},
		{"write as reader", "DELETE FROM orders WHERE id = 1", "analyst"},
		{"update as reader", "UPDATE orders SET amount = 0 WHERE id = 1", "analyst"},
		{"table outside allow list", "SELECT * FROM secrets", "writer"},
		{"copy to program", "COPY orders TO PROGRAM 'cat > /tmp/interlock-pwned'", "writer"},
		{"copy to file", "COPY (SELECT * FROM orders) TO '/tmp/interlock-pwned'", "writer"},
		{"pg_read_file", "SELECT pg_read_file('/etc/passwd')", "writer"},
		{"pg_read_file in update", "UPDATE orders SET customer = pg_read_file('/etc/hostname') WHERE id = 1", "writer"},
		{"lo_export", "SELECT lo_export(0, '/tmp/interlock-pwned')", "writer"},
		{"pg_terminate_backend", "SELECT pg_terminate_backend(pg_backend_pid())", "writer"},
		{"dblink", "SELECT * FROM dblink('host=10.0.0.1', 'select 1') AS t(x int)", "writer"},
		{"set_config role", "SELECT set_config('role', 'md5user', false)", "writer"},
		{"set role", "SET ROLE md5user", "writer"},
		{"session authorization", "SET SESSION AUTHORIZATION md5user", "writer"},
		{"do block", "DO $$ BEGIN DELETE FROM orders; END $$", "writer"},
		{"comments and casing", "/* harmless */ DrOp /* really */ TaBlE \"orders\" -- bye", "writer"},
		{"dollar quoting", "SELECT $x$DROP TABLE orders$x$, pg_read_file($$/etc/passwd$$)", "writer"},
		{"cte with delete", "WITH d AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM d", "analyst"},
		{"multi-statement", "SELECT 1; DROP TABLE orders", "writer"},
		{"multi-statement write first", "INSERT INTO notes (body) VALUES ('sneaky'); TRUNCATE orders", "writer"},
		{"explain analyze", "EXPLAIN ANALYZE DELETE FROM orders", "analyst"},
		{"query_to_xml", "SELECT query_to_xml('delete from orders', true, true, '')", "writer"},
		{"grant", "GRANT ALL ON orders TO PUBLIC", "writer"},
		{"search_path", "SET search_path = evil, public", "writer"},
		{"unparsable", "SELEC * FRM orders", "writer"},
	}
	paths := []struct{ name, mode string }{{"simple", "simple"}, {"extended", "exec"}, {"prepared", "cache"}}
	for _, c := range cases {
		for _, p := range paths {
			t.Run(c.name+"/"+p.name, func(t *testing.T) {
				cg := e.analyst
				if c.agent == "writer" {
					cg = e.writer
				}
				connErr, res := harness.RunPgx(t, cg, e.dsn("127.0.0.1"),
					harness.PgxStep{SQL: c.sql, Mode: p.mode},
					harness.PgxStep{SQL: "select count(*) from orders", Mode: p.mode},
				)
				if connErr != "" {
					t.Fatalf("connect: %s", connErr)
				}
				if res[0].Code != "42501" || !strings.Contains(res[0].Message, "Interlock") {
					t.Errorf("%q: got %+v, want SQLSTATE 42501 from Interlock", c.sql, res[0])
				}
				if res[1].Err != "" || len(res[1].Rows) != 1 || res[1].Rows[0][0] != "50" {
					t.Errorf("session not usable after the refusal (or the refusal had an effect): %+v", res[1])
				}
			})
		}
	}
	// Nothing leaked through: every table and row is still there.
	if got := e.sql(t, "select count(*) from orders"); got != "50" {
		t.Errorf("orders has %s rows", got)
	}
	if got := e.sql(t, "select count(*) from notes where body = 'sneaky'"); got != "0" {
		t.Errorf("a statement of a refused multi-statement query ran")
	}
	if _, err := os.Stat("/tmp/interlock-pwned"); err == nil {
		os.Remove("/tmp/interlock-pwned")
		t.Errorf("a server-side file was written")
	}

	t.Run("inside a transaction", func(t *testing.T) {
		out, _ := psqlIn(t, e.writer, e.dsn("127.0.0.1"),
			"-c", "begin", "-c", "insert into notes (body) values ('in-tx')", "-c", "drop table orders",
			"-c", "select 1", "-c", "rollback", "-c", "select 'usable'")
		for _, want := range []string{"ERROR:  Interlock: ", "no-destruction", "current transaction is aborted", "ROLLBACK", "usable"} {
			if !strings.Contains(out, want) {
				t.Errorf("transaction case: output lacks %q:\n%s", want, out)
			}
		}
		if got := e.sql(t, "select count(*) from notes where body = 'in-tx'"); got != "0" {
			t.Errorf("the aborted transaction's insert was committed")
		}
	})

	t.Run("prepare and execute", func(t *testing.T) {
		_, res := harness.RunPgx(t, e.analyst, e.dsn("127.0.0.1"),
			harness.PgxStep{SQL: "PREPARE ok AS SELECT count(*) FROM orders", Mode: "simple"},
			harness.PgxStep{SQL: "EXECUTE ok", Mode: "simple"},
			harness.PgxStep{SQL: "PREPARE bad AS DELETE FROM orders", Mode: "simple"},
			harness.PgxStep{SQL: "EXECUTE bad", Mode: "simple"},
			harness.PgxStep{SQL: "EXECUTE never_prepared", Mode: "simple"},
		)
		if res[1].Err != "" || res[1].Rows[0][0] != "50" {
			t.Errorf("EXECUTE of an allowed statement: %+v", res[1])
		}
		for _, i := range []int{2, 3, 4} {
			if res[i].Code != "42501" {
				t.Errorf("step %d: %+v, want 42501", i, res[i])
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		if got := e.d.Metric("interlock_statements_total", `outcome="refused"`); got < float64(len(cases)) {
			t.Errorf("refused statements counted %v, want ≥ %d", got, len(cases))
		}
	})
}

func TestPostgresAuthModes(t *testing.T) {
	e := setupPG(t, "")
	cases := []struct {
		name, agent, dsn, want string
	}{
		{"inject, SCRAM upstream", e.writer, e.dsn("127.0.0.1"), "postgres"},
		{"inject, per-role database user", e.analyst, e.dsn("127.0.0.1"), "ro_user"},
		{"inject, md5 upstream, TLS prefer", e.analyst, e.dsn("127.0.0.2"), "md5user"},
		{"passthrough SCRAM", e.analyst, fmt.Sprintf("postgres://postgres:%s@[::1]:%d/postgres?sslmode=disable", e.pg.Password, e.pg.Port), "postgres"},
		{"passthrough md5", e.analyst, fmt.Sprintf("postgres://md5user:md5pw@[::1]:%d/postgres?sslmode=disable", e.pg.Port), "md5user"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			connErr, res := harness.RunPgx(t, c.agent, c.dsn, harness.PgxStep{SQL: "select current_user"})
			if connErr != "" || res[0].Err != "" || res[0].Rows[0][0] != c.want {
				t.Fatalf("connect: %s, result %+v; want current_user %s", connErr, res, c.want)
			}
		})
	}
	t.Run("passthrough wrong password", func(t *testing.T) {
		connErr, _ := harness.RunPgx(t, e.analyst, fmt.Sprintf("postgres://postgres:wrong@[::1]:%d/postgres?sslmode=disable", e.pg.Port))
		if !strings.Contains(connErr, "password authentication failed") {
			t.Fatalf("wrong password: %q, want the server's authentication failure", connErr)
		}
	})
	t.Run("tls modes toward the agent", func(t *testing.T) {
		for mode, want := range map[string]string{"disable": "", "prefer": "SSL connection", "require": "SSL connection"} {
			out, err := psqlIn(t, e.analyst, strings.Replace(e.dsn("127.0.0.1"), "sslmode=disable", "sslmode="+mode, 1), "-c", `\conninfo`, "-c", "select 'ok'")
			if err != nil || !strings.Contains(out, "ok") || (want != "") != strings.Contains(out, "SSL connection") {
				t.Errorf("sslmode=%s: %v\n%s", mode, err, out)
			}
		}
	})
	t.Run("replication connections refused", func(t *testing.T) {
		connErr, _ := harness.RunPgx(t, e.analyst, e.dsn("127.0.0.1", "replication=database"))
		if !strings.Contains(connErr, "replication") {
			t.Errorf("replication connection: %q", connErr)
		}
	})
}

func TestPostgresCancel(t *testing.T) {
	e := setupPG(t, "")
	_, res := harness.RunPgx(t, e.analyst, e.dsn("127.0.0.1"),
		harness.PgxStep{SQL: "select pg_sleep(5)", TimeoutMS: 300},
	)
	if res[0].Code != "57014" || res[0].MS > 3000 {
		t.Errorf("cancel: %+v, want SQLSTATE 57014 (query_canceled) well before the 5 s sleep ends", res[0])
	}
	if !harness.WaitFor(3*time.Second, func() bool {
		return e.sql(t, "select count(*) from pg_stat_activity where query = 'select pg_sleep(5)' and state = 'active'") == "0"
	}) {
		t.Error("the server still runs the cancelled query")
	}

	// A forged key cancels nothing.
	done := make(chan harness.PgxResult, 1)
	go func() {
		_, r := harness.RunPgx(t, e.analyst, e.dsn("127.0.0.1"), harness.PgxStep{SQL: "select pg_sleep(1.5), 'finished'"})
		done <- r[0]
	}()
	time.Sleep(500 * time.Millisecond)
	cancel := make([]byte, 16)
	binary.BigEndian.PutUint32(cancel[0:], 16)
	binary.BigEndian.PutUint32(cancel[4:], 80877102)
	binary.BigEndian.PutUint32(cancel[8:], 12345)
	binary.BigEndian.PutUint32(cancel[12:], 67890)
	harness.DialRaw(t, e.analyst, "tcp4", fmt.Sprintf("127.0.0.1:%d", e.pg.Port), cancel)
	if r := <-done; r.Err != "" || len(r.Rows) != 1 || r.Rows[0][1] != "finished" {
		t.Errorf("a forged cancel key interrupted the query: %+v", r)
	}
}

func TestPostgresLimitsAndMalformedInput(t *testing.T) {
	e := setupPG(t, "postgres:\n  max_message_size: 4KiB\n")
	addr := fmt.Sprintf("127.0.0.1:%d", e.pg.Port)

	_, res := harness.RunPgx(t, e.analyst, e.dsn("127.0.0.1"),
		harness.PgxStep{SQL: "select length('" + strings.Repeat("x", 8000) + "')", Mode: "simple"},
	)
	if res[0].Code != "54000" || !strings.Contains(res[0].Message, "exceeds the limit") {
		t.Errorf("oversized message: %+v, want FATAL 54000", res[0])
	}

	startup := func(params ...string) []byte {
		body := binary.BigEndian.AppendUint32(nil, 196608)
		for _, p := range params {
			body = append(append(body, p...), 0)
		}
		body = append(body, 0)
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)
	}
	malformed := map[string][]byte{
		"startup length too small": {0, 0, 0, 3, 0, 0},
		"startup length huge":      {0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0},
		"unknown protocol":         {0, 0, 0, 8, 0, 9, 0, 0},
		"bad message length":       append(startup("user", "x", "database", "postgres"), 'Q', 0, 0, 0, 1),
		"unknown message type":     append(startup("user", "x", "database", "postgres"), '!', 0, 0, 0, 4),
		"query without nul":        append(startup("user", "x", "database", "postgres"), 'Q', 0, 0, 0, 7, 'a', 'b', 'c'),
	}
	for name, payload := range malformed {
		t.Run(name, func(t *testing.T) {
			res := harness.DialRaw(t, e.analyst, "tcp4", addr, payload)
			if res.Err != "" {
				t.Fatalf("dial: %s", res.Err)
			}
			// A clean FATAL error before the connection closes, or a plain
			// close: never a hang (DialRaw gives up after 3 s) or a crash.
			if res.Reply != "" && !strings.Contains(res.Reply, "FATAL") && !strings.Contains(res.Reply, "Z") {
				t.Errorf("reply %q", res.Reply)
			}
		})
	}
	// The daemon survived all of it.
	connErr, res := harness.RunPgx(t, e.analyst, e.dsn("127.0.0.1"), harness.PgxStep{SQL: "select 'alive'"})
	if connErr != "" || res[0].Rows[0][0] != "alive" {
		t.Fatalf("after malformed input: %s %+v", connErr, res)
	}
}
