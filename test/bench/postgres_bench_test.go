package bench

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/interlockhq/interlock/test/harness"
)

// PostgreSQL benchmarks: pgbench on the same server, in the same run, along
// every path, reported as ratios. Each workload is a sub-benchmark; each
// path gets pgRounds runs of pgSeconds seconds per workload, in alternating
// order (direct, interlock, pgbouncer, then the reverse), from the same
// starting state (the benchmark vacuums the small tables and empties the
// history before every run, as pgbench would without -n).
//
//	direct     pgbench in a plain cgroup, to the server's address
//	interlock  pgbench in the labelled agent cgroup, to the same address:
//	           the kernel redirects it into the engine, which classifies and
//	           decides every statement and authenticates upstream itself
//	pgbouncer  pgbench in the plain cgroup, to PgBouncer in session mode
//	tcprelay   pgbench in the agent cgroup, to the same server as an opaque
//	           tcp target (loopback only): the engine's relay without the
//	           PostgreSQL handler, the floor under the interlock path
//
//	BenchmarkPgbench         the server on loopback: the engine's cost
//	BenchmarkPgbenchNetwork  the server on its own test host (a network
//	                         namespace behind a veth pair) behind a relay
//	                         adding 0.5 ms each way, on every path
//	                         (direct, interlock, pgbouncer)
//
// The daemon records nothing (recording.store: none) unless
// INTERLOCK_PGBENCH_RECORDING=files: recording's cost is
// BenchmarkRecordingPgbench's subject. INTERLOCK_PGBENCH_SECONDS changes
// the length of a run (default 3); INTERLOCK_PGBENCH_PERF=dir records the
// daemon with perf during the Interlock runs.

// BenchmarkPgbench compares direct, Interlock and PgBouncer on loopback.
func BenchmarkPgbench(b *testing.B) {
	pgbench, psql := pgRequire(b, true)
	prioritize(b)
	pg := harness.StartPostgres(b)
	server := netip.MustParseAddrPort(pg.Addr())
	// The harness server also listens on 127.0.0.2: the same database as
	// an opaque tcp target, relayed by the engine without the PostgreSQL
	// handler, shows what the relay itself costs.
	raw := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), server.Port())
	e := pgNewEnv(b, server, server, raw, pg.Password, pgbench, psql)
	e.initialise(b)
	bouncer, bouncerPID := pgStartBouncer(b, e, server)
	paths := []pgPath{
		{name: "direct", cgroup: e.plain, addr: server},
		{name: "interlock", cgroup: e.agent, addr: server, agent: true, proxy: e.d.PID},
		{name: "pgbouncer", cgroup: e.plain, addr: bouncer, proxy: func() int { return bouncerPID }},
		{name: "tcprelay", cgroup: e.agent, addr: raw, relay: true, proxy: e.d.PID},
	}
	pgMeasure(b, e, "loopback", paths, nil)
}

// BenchmarkPgbenchNetwork compares direct and Interlock with the database
// on another host: 0.5 ms each way between the client side and the server.
// The delaying relay listens on loopback and is the target's address, so
// the engine's upstream connections cross it exactly like the direct ones.
func BenchmarkPgbenchNetwork(b *testing.B) {
	const delay = 500 * time.Microsecond
	pgbench, psql := pgRequire(b, true)
	prioritize(b)
	ns := harness.NewNetns(b)
	pg := harness.StartPostgresIn(b, ns)
	server := netip.MustParseAddrPort(pg.Addr())
	relay := pgStartDelayRelay(b, pg.Addr(), delay)
	target := relay.Addr().AddrPort()
	b.Logf("database in network namespace %s at %s (veth %s %s ↔ %s), reached through a relay at %s adding %v each way",
		ns.Name, server, ns.HostIf, ns.HostAddr, ns.PeerAddr, target, delay)
	e := pgNewEnv(b, target, server, netip.AddrPort{}, pg.Password, pgbench, psql)
	e.initialise(b)
	// PgBouncer reaches the database through the same relay: what a
	// mature proxy in C loses on this path, next to the engine.
	bouncer, bouncerPID := pgStartBouncer(b, e, target)
	paths := []pgPath{
		{name: "direct", cgroup: e.plain, addr: target},
		{name: "interlock", cgroup: e.agent, addr: target, agent: true, proxy: e.d.PID},
		{name: "pgbouncer", cgroup: e.plain, addr: bouncer, proxy: func() int { return bouncerPID }},
	}
	pgMeasure(b, e, "network (0.5 ms each way)", paths, map[string]string{"select-c8": "≥ 0.97× direct"})
}

// pgRow is one workload's outcome per path.
type pgRow struct {
	w    pgWorkload
	aggs map[string]*pgAgg
}

// pgMeasure runs every workload as a sub-benchmark on every path and logs a
// summary table. A non-nil targets replaces the workloads' own target notes.
func pgMeasure(b *testing.B, e *pgEnv, setting string, paths []pgPath, targets map[string]string) {
	secs := pgSeconds()
	// Warm up every path once (connections, caches, the classifier).
	warm := pgWorkloads[1]
	for _, p := range paths {
		e.maintain(b)
		e.run(b, p, warm, 1)
	}
	var rows []pgRow
	for _, w := range pgWorkloads {
		if targets != nil {
			w.target = targets[w.name]
		}
		b.Run(w.name, func(b *testing.B) {
			row := pgRow{w: w, aggs: map[string]*pgAgg{}}
			for _, p := range paths {
				row.aggs[p.name] = &pgAgg{}
			}
			for r := range pgRounds {
				for i := range paths {
					p := paths[i]
					if r%2 == 1 {
						p = paths[len(paths)-1-i]
					}
					e.maintain(b)
					row.aggs[p.name].add(e.run(b, p, w, secs))
				}
			}
			rows = append(rows, row)
			pgReport(b, row, paths)
		})
	}
	// A parent benchmark's own log is shown only with -v: the table goes
	// into a last sub-benchmark of its own.
	b.Run("summary", func(b *testing.B) {
		b.ReportMetric(0, "ns/op")
		pgSummary(b, setting, secs, paths, rows)
	})
}

// pgReport reports one workload's metrics.
func pgReport(b *testing.B, row pgRow, paths []pgPath) {
	direct, il := row.aggs["direct"], row.aggs["interlock"]
	b.ReportMetric(0, "ns/op")
	var parts []string
	for _, p := range paths {
		a := row.aggs[p.name]
		b.ReportMetric(a.medianTPS(), p.name+"-tps")
		parts = append(parts, fmt.Sprintf("%s %.0f tps %s", p.name, a.medianTPS(), pgFmts(a.tps)))
	}
	for _, p := range paths {
		if p.name != "interlock" {
			b.ReportMetric(il.medianTPS()/row.aggs[p.name].medianTPS(), "interlock/"+p.name)
		}
	}
	for _, p := range paths {
		if p.proxy != nil {
			a := row.aggs[p.name]
			b.ReportMetric(a.cpuPerTx(), p.name+"-cpu-us/tx")
			b.ReportMetric(a.csPerTx(), p.name+"-cs/tx")
			parts = append(parts, fmt.Sprintf("%s CPU %.1f µs/tx, %.2f context switches/tx", p.name, a.cpuPerTx(), a.csPerTx()))
		}
	}
	if row.w.latency {
		for _, p := range paths {
			b.ReportMetric(row.aggs[p.name].p50(), p.name+"-p50-us")
		}
		b.ReportMetric(il.p50()-direct.p50(), "added-p50-us")
		parts = append(parts, fmt.Sprintf("p50 direct %.1f µs interlock %.1f µs (+%.1f µs)", direct.p50(), il.p50(), il.p50()-direct.p50()))
	}
	b.Logf("pgbench %s: %s", row.w.label, strings.Join(parts, " | "))
}

// pgSummary logs every workload's numbers as one table.
func pgSummary(b *testing.B, setting string, secs int, paths []pgPath, rows []pgRow) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "pgbench summary, %s, recording.store %s, scale %d, %d rounds × %d s per path and workload (tps: median of rounds; CPU: the proxy process's user+system time per transaction)\n",
		setting, pgRecording(), pgScale, pgRounds, secs)
	fmt.Fprintf(&sb, "%-20s", "workload")
	for _, p := range paths {
		fmt.Fprintf(&sb, " %14s", p.name+" tps")
	}
	for _, p := range paths {
		if p.name != "interlock" {
			fmt.Fprintf(&sb, " %20s", "interlock/"+p.name)
		}
	}
	for _, p := range paths {
		if p.proxy != nil {
			fmt.Fprintf(&sb, " %18s", p.name+" CPU µs/tx")
		}
	}
	fmt.Fprintf(&sb, "  %s\n", "target")
	for _, row := range rows {
		fmt.Fprintf(&sb, "%-20s", row.w.label)
		for _, p := range paths {
			fmt.Fprintf(&sb, " %14.1f", row.aggs[p.name].medianTPS())
		}
		for _, p := range paths {
			if p.name != "interlock" {
				fmt.Fprintf(&sb, " %20.3f", row.aggs["interlock"].medianTPS()/row.aggs[p.name].medianTPS())
			}
		}
		for _, p := range paths {
			if p.proxy != nil {
				fmt.Fprintf(&sb, " %18.1f", row.aggs[p.name].cpuPerTx())
			}
		}
		fmt.Fprintf(&sb, "  %s\n", row.w.target)
	}
	for _, row := range rows {
		if !row.w.latency {
			continue
		}
		fmt.Fprintf(&sb, "%s latency p50:", row.w.label)
		for _, p := range paths {
			fmt.Fprintf(&sb, " %s %.1f µs,", p.name, row.aggs[p.name].p50())
		}
		d, i := row.aggs["direct"].p50(), row.aggs["interlock"].p50()
		fmt.Fprintf(&sb, " added by Interlock %.1f µs (%s)\n", i-d, row.w.target)
	}
	for _, p := range paths {
		if p.relay {
			fmt.Fprintf(&sb, "%s: the same engine relaying the database as an opaque tcp target (no PostgreSQL handler): what the relay itself costs; interlock/%[1]s near 1 means classification, policy and the protocol cost next to nothing beyond it\n", p.name)
		}
	}
	b.Logf("%s", sb.String())
}

func pgFmts(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.0f", x)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
