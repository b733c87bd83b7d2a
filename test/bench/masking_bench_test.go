package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/interlockhq/interlock/test/harness"
)

// mbRows is the size of the masking benchmark's table (INTERLOCK_MASK_ROWS
// overrides it).
func mbRows() int {
	var n int
	if _, err := fmt.Sscan(os.Getenv("INTERLOCK_MASK_ROWS"), &n); err == nil && n > 0 {
		return n
	}
	return 1000000
}

// mbTable has mixed PII columns (~120 bytes a row): half the cards are
// Luhn-valid, the notes hold an address and a date, the names nothing.
const mbTable = `
create table big (id int primary key, name text, email text, card text, phone text, note text);
insert into big select g, 'customer number ' || g, 'user' || g || '@example.com',
  case when g %% 2 = 0 then '4111 1111 1111 1111' else '4111 1111 1111 1112' end,
  '+1 (555) ' || lpad((g %% 1000)::text, 3, '0') || '-4567',
  'order ' || g || ' shipped from 10.0.' || (g %% 256) || '.1 on 2026-01-02, paid in full'
from generate_series(1, %d) g;
analyze big;
`

func mbPolicy(port int, pwFile string) string {
	return fmt.Sprintf(`version: 1
targets:
  - {name: db, protocol: postgres, address: "127.0.0.1:%[1]d", credentials: {user: postgres, password_file: %[2]s}, tls: {mode: disable}}
agents:
  - {name: nomask, roles: [nomask]}
  - {name: columns, roles: [columns]}
  - {name: detectors, roles: [detectors]}
roles:
  - name: nomask
    rules:
      - {id: read, actions: [read], tables: ["public.big"], decision: allow}
  - name: columns
    rules:
      - {id: mask-columns, actions: [read], tables: ["public.big"], decision: mask, mask: {columns: {"big.email": redact, "big.card": partial, "big.phone": hash}}}
  - name: detectors
    rules:
      - {id: mask-detectors, actions: [read], tables: ["public.big"], decision: mask, mask: {detectors: [email, card, ssn, iban, phone, ip, jwt, aws_key, api_token, pem]}}
`, port, pwFile)
}

// BenchmarkMaskingSelect reads a 1,000,000-row table with mixed PII columns
// through psql: directly, through Interlock without a mask, with column
// rules (resolved through the catalog) and with all ten detectors, in
// alternating rounds of the same run. The time includes psql's own
// processing of the rows, the same on every path.
//
//	go test -run '^$' -bench BenchmarkMaskingSelect -benchtime 1x ./test/bench/
func BenchmarkMaskingSelect(b *testing.B) {
	harness.RequirePrivileged(b)
	psql, err := exec.LookPath("psql")
	harness.Require(b, err == nil, "needs psql")
	prioritize(b)
	pg := harness.StartPostgres(b)
	rows := mbRows()
	if out, err := exec.Command(psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", pg.DSN("127.0.0.1"), "-c", fmt.Sprintf(mbTable, rows)).CombinedOutput(); err != nil {
		b.Fatalf("create table: %v\n%s", err, out)
	}
	cg := harness.NewCgroups(b)
	pw := filepath.Join(b.TempDir(), "pw")
	os.WriteFile(pw, []byte(pg.Password+"\n"), 0o600)
	d := harness.NewDaemon(b, cg.Root, harness.PinDir(b), mbPolicy(pg.Port, pw))
	cfg, err := os.ReadFile(d.ConfigPath)
	if err != nil {
		b.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), "level: debug", "level: info", 1) + "recording:\n  store: none\n")
	os.WriteFile(d.ConfigPath, cfg, 0o600)
	d.Start()

	type path struct {
		name, cgroup, dsn string
		secs              []float64
	}
	agentDSN := fmt.Sprintf("postgres://agent:x@127.0.0.1:%d/postgres?sslmode=disable", pg.Port)
	paths := []*path{{name: "direct", cgroup: cg.Mkdir(b, "plain"), dsn: pg.DSN("127.0.0.1")}}
	for _, agent := range []string{"nomask", "columns", "detectors"} {
		p := cg.Mkdir(b, "agents/"+agent)
		if out, err := d.CLI("label", p, agent); err != nil {
			b.Fatalf("label: %v %s", err, out)
		}
		paths = append(paths, &path{name: agent, cgroup: p, dsn: agentDSN})
	}
	time.Sleep(time.Second) // labels are picked up within label_scan_interval
	var bytes int64
	for round := range 3 {
		for _, p := range paths {
			cmd := harness.Command(b, p.cgroup, psql, "-X", "-At", "-d", p.dsn, "-c", "select * from big")
			out, err := cmd.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			var n int64
			buf := make([]byte, 1<<20)
			sample := []byte(nil)
			for {
				k, err := out.Read(buf)
				if len(sample) == 0 && k > 0 {
					sample = append(sample, buf[:min(k, 300)]...)
				}
				n += int64(k)
				if err != nil {
					break
				}
			}
			if err := cmd.Wait(); err != nil {
				b.Fatalf("%s: %v", p.name, err)
			}
			p.secs = append(p.secs, time.Since(start).Seconds())
			if round == 0 {
				b.Logf("%s: %d bytes of output, first row %q", p.name, n, strings.SplitN(string(sample), "\n", 2)[0])
				if p.name == "direct" {
					bytes = n
				}
			}
		}
	}
	median := func(xs []float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[len(s)/2]
	}
	direct := median(paths[0].secs)
	var summary []string
	for _, p := range paths {
		m := median(p.secs)
		b.ReportMetric(float64(rows)/m, p.name+"-rows/s")
		if p.name != "direct" {
			b.ReportMetric(direct/m, p.name+"/direct")
		}
		summary = append(summary, fmt.Sprintf("%s %.2fs (%.2f× direct) %v", p.name, m, direct/m, p.secs))
	}
	b.Logf("SELECT of %d rows (%d MB through psql): %s", rows, bytes>>20, strings.Join(summary, " | "))
}
