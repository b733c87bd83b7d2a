package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/interlockhq/interlock/test/harness"
)

// BenchmarkRecordingPgbench runs pgbench select-only with 8 clients
// through Interlock with session recording off (recording.store: none), on
// with sync: always (the default segment files, every statement synced
// before it is forwarded, group-committed) and on with sync: interval
// (written before it is forwarded, synced every 100ms), alternating in one
// run, and reports the TPS of each, their ratios to off (target: ≥ 0.90×),
// how many records each sync carried with always, and the mean sync time
// of each mode.
//
//	go test -run '^$' -bench RecordingPgbench -benchtime 1x ./test/bench/
func BenchmarkRecordingPgbench(b *testing.B) {
	harness.RequirePrivileged(b)
	bin := harness.PostgresBinDir()
	harness.Require(b, bin != "", "needs PostgreSQL server binaries (apt-get install postgresql)")
	pgbench := filepath.Join(bin, "pgbench")
	harness.Require(b, harness.Exists(pgbench), "needs pgbench (apt-get install postgresql)")
	prioritize(b)
	secs := 5
	if s, err := strconv.Atoi(os.Getenv("INTERLOCK_PGBENCH_SECONDS")); err == nil && s > 0 {
		secs = s
	}

	pg := harness.StartPostgres(b)
	env := append(os.Environ(), "PGPASSWORD="+pg.Password, "PGSSLMODE=disable", "PGGSSENCMODE=disable")
	initCmd := exec.Command(pgbench, "-i", "-q", "-s", "10", "-h", "127.0.0.1", "-p", strconv.Itoa(pg.Port), "-U", "postgres", "postgres")
	initCmd.Env = env
	if out, err := initCmd.CombinedOutput(); err != nil {
		b.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	cg := harness.NewCgroups(b)
	agent := cg.Mkdir(b, "agents/rec")
	pwFile := filepath.Join(b.TempDir(), "pw")
	os.WriteFile(pwFile, []byte(pg.Password+"\n"), 0o600)
	d := harness.NewDaemon(b, cg.Root, harness.PinDir(b), fmt.Sprintf(`version: 1
targets:
  - {name: db, protocol: postgres, address: "127.0.0.1:%d", credentials: {user: postgres, password_file: %s}, tls: {mode: disable}}
agents:
  - {name: rec-bench, roles: [bench]}
roles:
  - name: bench
    rules:
      - {id: read, actions: [read], tables: ["public.pgbench_*", "pg_catalog.*"], decision: allow}
      - {id: session, actions: [transaction, set, show], decision: allow}
`, pg.Port, pwFile))
	base, err := os.ReadFile(d.ConfigPath)
	if err != nil {
		b.Fatal(err)
	}
	// Measure at the default log level, not the harness's debug.
	baseCfg := strings.Replace(string(base), "level: debug", "level: info", 1)
	start := func(recording string) {
		if err := os.WriteFile(d.ConfigPath, []byte(baseCfg+"recording:\n"+recording), 0o600); err != nil {
			b.Fatal(err)
		}
		d.Start()
	}
	start("  store: none\n")
	if out, err := d.CLI("label", agent, "rec-bench"); err != nil {
		b.Fatalf("label: %v\n%s", err, out)
	}
	time.Sleep(time.Second) // the label scan runs every 200 ms
	d.Stop()

	reTPS := regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
	// run returns the TPS, the transactions, and the daemon's CPU time and
	// context switches during the run.
	run := func() (tps, txns float64, cpu time.Duration, switches int64) {
		pid := d.PID()
		cpu0, sw0 := pgProcCPU(b, pid), pgProcSwitches(pid)
		cmd := harness.Command(b, agent, pgbench, "-n", "-S", "-c", "8", "-j", "2", "-T", strconv.Itoa(secs),
			"-h", "127.0.0.1", "-p", strconv.Itoa(pg.Port), "-U", "postgres", "postgres")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		m := reTPS.FindStringSubmatch(string(out))
		n := pgReTxns.FindStringSubmatch(string(out))
		if err != nil || m == nil || n == nil {
			b.Fatalf("pgbench: %v\n%s\ndaemon:\n%s", err, out, d.Logs())
		}
		tps, _ = strconv.ParseFloat(m[1], 64)
		txns, _ = strconv.ParseFloat(n[1], 64)
		return tps, txns, pgProcCPU(b, pid) - cpu0, pgProcSwitches(pid) - sw0
	}
	type mode struct {
		name, config string
		tps          []float64
		// Summed over the mode's rounds, from the daemon's metrics.
		records, syncs, syncSeconds float64
		txns                        float64
		cpu                         time.Duration
		switches                    int64
	}
	modes := []*mode{
		{name: "off", config: "  store: none\n"},
		{name: "always", config: "  store: files\n  sync: always\n"},
		{name: "interval", config: "  store: files\n  sync: interval\n"},
	}
	for round := range 2 {
		order := slices.Clone(modes)
		if round == 1 {
			// Alternate the order, so that drift favours none.
			slices.Reverse(order)
		}
		for _, m := range order {
			start(m.config)
			tps, txns, cpu, sw := run()
			m.tps = append(m.tps, tps)
			m.txns, m.cpu, m.switches = m.txns+txns, m.cpu+cpu, m.switches+sw
			m.records += d.Metric("interlock_recording_records_total")
			m.syncs += d.Metric("interlock_recording_fsync_seconds_count")
			m.syncSeconds += d.Metric("interlock_recording_fsync_seconds_sum")
			d.Stop()
			b.Logf("round %d, recording %s: %.0f tps", round+1, m.name, tps)
		}
	}
	mean := func(xs []float64) float64 {
		s := 0.0
		for _, x := range xs {
			s += x
		}
		return s / float64(len(xs))
	}
	off, always, interval := modes[0], modes[1], modes[2]
	b.ReportMetric(mean(off.tps), "tps-off")
	b.ReportMetric(mean(always.tps), "tps-always")
	b.ReportMetric(mean(interval.tps), "tps-interval")
	b.ReportMetric(mean(always.tps)/mean(off.tps), "always/off")
	b.ReportMetric(mean(interval.tps)/mean(off.tps), "interval/off")
	b.ReportMetric(always.records/always.syncs, "records/sync")
	b.ReportMetric(always.syncSeconds/always.syncs*1e6, "always-sync-µs")
	b.ReportMetric(interval.syncSeconds/interval.syncs*1e6, "interval-sync-µs")
	perTx := func(m *mode) string {
		return fmt.Sprintf("%s: %.1f µs CPU, %.2f context switches", m.name, float64(m.cpu.Microseconds())/m.txns, float64(m.switches)/m.txns)
	}
	for _, m := range modes {
		b.ReportMetric(float64(m.cpu.Microseconds())/m.txns, m.name+"-cpu-µs/tx")
	}
	b.Logf("daemon per transaction: %s | %s | %s", perTx(off), perTx(always), perTx(interval))
	b.Logf("pgbench -S -c8, %ds × 2 each: recording off %.0f tps; sync always %.0f tps (%.3f×), %.0f records in %.0f syncs (%.1f per sync, %.0f µs each); sync interval %.0f tps (%.3f×), %.0f records in %.0f syncs (%.0f µs each); target ≥ 0.90×",
		secs, mean(off.tps),
		mean(always.tps), mean(always.tps)/mean(off.tps), always.records, always.syncs, always.records/always.syncs, always.syncSeconds/always.syncs*1e6,
		mean(interval.tps), mean(interval.tps)/mean(off.tps), interval.records, interval.syncs, interval.syncSeconds/interval.syncs*1e6)
	os.WriteFile(d.ConfigPath, []byte(baseCfg), 0o600)
	if out, err := d.CLI("audit", "verify"); err != nil {
		b.Errorf("audit verify after the runs: %v\n%s", err, out)
	}
}
