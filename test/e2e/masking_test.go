package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/interlockhq/interlock/test/harness"
)

const maskSchema = `
create table customers (id int primary key, email text not null unique, card text, ssn text, iban text, phone text, token text, note text, nickname text default 'ali');
insert into customers values
  (1, 'alice@example.com', '4111 1111 1111 1111', '123-45-6789', 'DE89 3704 0044 0532 0130 00', '+1 (555) 123-4567', 'ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA', 'invalid card 4111 1111 1111 1112, write to bob@example.org'),
  (2, 'carol@example.net', '5500-0000-0000-0004', '234-56-7890', 'GB82 WEST 1234 5698 7654 32', '+44 20 7946 0958', 'xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx', 'nothing to see');
`

// The raw values the agent must never see, and values that must pass.
var (
	maskRaw = []string{"alice@example.com", "4111 1111 1111 1111", "123-45-6789", "DE89 3704 0044 0532 0130 00", "555) 123-4567",
		"ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA", "bob@example.org", "carol@example.net", "5500-0000-0000-0004", "234-56-7890",
		"GB82 WEST 1234 5698 7654 32", "7946 0958", "xoxb-123456789012"}
	maskKept = []string{"4111 1111 1111 1112", "nothing to see"}
)

func maskPolicy(port int, pwFile string) string {
	return fmt.Sprintf(`version: 1
targets:
  - name: db
    protocol: postgres
    address: "127.0.0.1:%[1]d"
    credentials: {user: postgres, password_file: %[2]s}
    tls: {mode: disable}
agents:
  - {name: analyst, roles: [analyst]}
roles:
  - name: analyst
    rules:
      - {id: read-catalog, actions: [read], tables: ["pg_catalog.*", "information_schema.*"], decision: allow}
      - {id: session, actions: [transaction, show, set, reset, discard, deallocate, listen, notify], decision: allow}
      - id: mask-customers
        actions: [read, insert]
        tables: [public.customers]
        decision: mask
        mask:
          columns: {"*.ssn": redact, "customers.phone": partial, "public.customers.nickname": hash}
          detectors: [email, card, iban, api_token, ssn]
`, port, pwFile)
}

type maskEnv struct {
	pg      *harness.Postgres
	d       *harness.Daemon
	analyst string
	plain   string
}

func setupMaskPG(t *testing.T) *maskEnv {
	t.Helper()
	harness.RequirePrivileged(t)
	_, err := exec.LookPath("psql")
	harness.Require(t, err == nil, "needs psql (apt-get install postgresql-client)")
	cg := harness.NewCgroups(t)
	e := &maskEnv{pg: harness.StartPostgres(t)}
	if out, err := exec.Command("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", e.pg.DSN("127.0.0.1"), "-c", maskSchema).CombinedOutput(); err != nil {
		t.Fatalf("create schema: %v\n%s", err, out)
	}
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte(e.pg.Password+"\n"), 0o600)
	e.d = harness.NewDaemon(t, cg.Root, harness.PinDir(t), maskPolicy(e.pg.Port, pw))
	e.d.Start()
	e.plain = cg.Mkdir(t, "plain")
	env := &pgEnv{cg: cg, pg: e.pg, d: e.d}
	e.analyst = env.label(t, "agents/analyst", "analyst")
	return e
}

func (e *maskEnv) agentDSN() string {
	return fmt.Sprintf("postgres://agent:x@127.0.0.1:%d/postgres?sslmode=disable", e.pg.Port)
}

func checkMasked(t *testing.T, what, out string) {
	t.Helper()
	for _, raw := range maskRaw {
		if strings.Contains(out, raw) {
			t.Errorf("%s: the agent saw %q:\n%s", what, raw, out)
		}
	}
	for _, keep := range maskKept {
		if !strings.Contains(out, keep) {
			t.Errorf("%s: %q was masked (or missing):\n%s", what, keep, out)
		}
	}
}

// TestMaskingThroughRealClients: the agent reads masked values through
// psql and pgx (text and binary, cached statements); a process outside the
// agent cgroups reads the raw ones; a unique violation does not leak the
// key's value.
func TestMaskingThroughRealClients(t *testing.T) {
	e := setupMaskPG(t)
	const q = "select id, email, card, ssn, iban, phone, token, note from customers order by id"

	out, err := psqlIn(t, e.analyst, e.agentDSN(), "-c", q)
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	checkMasked(t, "psql", out)
	// The recording keeps how many values were masked, never the values.
	if exp, err := e.d.CLI("audit", "export", "--format", "jsonl"); err != nil || !strings.Contains(exp, `"masked":`) || strings.Contains(exp, "alice@example.com") {
		t.Errorf("recording of a masked result: %v (want a masked count and no raw value)\n%.2000s", err, exp)
	}
	for _, want := range []string{"[REDACTED:email]", "[REDACTED:card]", "[REDACTED:ssn]", "[REDACTED:iban]", "[REDACTED:api_token]"} {
		if !strings.Contains(out, want) {
			t.Errorf("psql: no %s in\n%s", want, out)
		}
	}

	// Column rules naming the table apply through the catalog, whatever
	// the output column is called; an expression is not a table column.
	out, err = psqlIn(t, e.analyst, e.agentDSN(), "-At", "-c", "select phone as p, nickname as n, upper(nickname) as u from customers where id = 1")
	if err != nil || !strings.HasPrefix(out, "+* (***) ***-**67|h:") || !strings.HasSuffix(strings.TrimSpace(out), "|ALI") {
		t.Errorf("table-qualified column rules: %v\n%s", err, out)
	}

	direct, err := psqlIn(t, e.plain, e.pg.DSN("127.0.0.1"), "-c", q)
	if err != nil || !strings.Contains(direct, "alice@example.com") || !strings.Contains(direct, "123-45-6789") {
		t.Errorf("a non-agent process does not see the raw values: %v\n%s", err, direct)
	}

	for _, mode := range []string{"cache", "exec", "describe", "simple"} {
		steps := []harness.PgxStep{
			{SQL: "select id, email, card, ssn, iban, phone, token, note from customers where id <= $1 order by id", Args: []any{2}, Mode: mode},
			{SQL: "select id, email, card, ssn, iban, phone, token, note from customers where id <= $1 order by id", Args: []any{3}, Mode: mode}, // cached statement reused
		}
		if mode == "simple" {
			steps = steps[:1]
		}
		connErr, res := harness.RunPgx(t, e.analyst, e.agentDSN(), steps...)
		if connErr != "" {
			t.Fatalf("pgx connect: %s", connErr)
		}
		for i, r := range res {
			if r.Err != "" || len(r.Rows) != 2 {
				t.Errorf("pgx %s step %d: %+v", mode, i, r)
				continue
			}
			checkMasked(t, "pgx "+mode, fmt.Sprint(r.Rows))
		}
	}

	out, _ = psqlIn(t, e.analyst, e.agentDSN(), "-c", "insert into customers (id, email) values (3, 'alice@example.com')")
	if !strings.Contains(out, "duplicate key") || strings.Contains(out, "alice@example.com") {
		t.Errorf("unique violation through Interlock:\n%s", out)
	}

	// COPY TO STDOUT: masked by its format and its table's columns from the
	// catalog; COPY (query) has no table columns to apply the rules to, and
	// is refused.
	for _, c := range []string{
		`\copy customers (id, email, card, ssn, iban, phone, token, note) to stdout`,
		`\copy customers to stdout with (format csv, header)`,
		`\copy public.customers (note, phone, email) to stdout with (format csv, delimiter '|')`,
	} {
		out, err := psqlIn(t, e.analyst, e.agentDSN(), "-c", c)
		if err != nil {
			t.Errorf("%s: %v\n%s", c, err, out)
			continue
		}
		for _, raw := range maskRaw {
			if strings.Contains(out, raw) {
				t.Errorf("%s: the agent saw %q:\n%s", c, raw, out)
			}
		}
		if !strings.Contains(out, "4111 1111 1111 1112") || !strings.Contains(out, "[REDACTED:email]") || !strings.Contains(out, "+* (***) ***-**67") {
			t.Errorf("%s:\n%s", c, out)
		}
	}
	out, _ = psqlIn(t, e.analyst, e.agentDSN(), "-c", `\copy (select * from customers) to stdout`)
	if strings.Contains(out, "alice@example.com") || !strings.Contains(out, "not supported") {
		t.Errorf("COPY (query):\n%s", out)
	}
	out, _ = psqlIn(t, e.analyst, e.agentDSN(), "-c", `\copy customers to stdout (format binary)`)
	if strings.Contains(out, "alice@example.com") || !strings.Contains(out, "binary COPY") {
		t.Errorf("binary COPY:\n%s", out)
	}

	if n := e.d.Metric("interlock_masked_values_total", `agent="analyst"`, `detector="email"`); n < 1 {
		t.Errorf("interlock_masked_values_total{detector=email} = %v", n)
	}
	if n := e.d.Metric("interlock_masked_values_total", `agent="analyst"`, `detector="column"`); n < 1 {
		t.Errorf("interlock_masked_values_total{detector=column} = %v", n)
	}
}
