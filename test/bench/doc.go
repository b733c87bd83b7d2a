// Package bench holds Interlock's benchmarks against the real daemon: each
// one starts `interlock run` attached at a private cgroup subtree with a
// private bpffs, serves a target from the benchmark process on 127.0.0.1,
// and measures the plain path and the Interlock path in the same run, so
// that the numbers that matter are ratios and differences, not absolute
// values that depend on the machine.
//
// The client side runs in the benchmark process itself, which moves
// between three cgroups: its own (home, outside the attach point: daemon
// start/stop, CLI and metrics scrapes), a plain cgroup below the attach
// point (direct and non-agent phases) and a labelled agent cgroup
// (redirected phases). A socket keeps the cgroup it was created in, so a
// connection made in the agent cgroup stays redirected after the process
// goes home.
//
//	connect + first byte   BenchmarkConnectLatency
//	1 GiB bulk, both ways  BenchmarkBulkThroughput
//	non-agent connect rate BenchmarkConnectRateNonAgent
//	idle session memory    BenchmarkIdleSessionMemory
//
// Run them once each (they size their own work and ignore b.N):
//
//	go test -run '^$' -bench . -benchtime 1x -count 1 ./test/bench/
//
// They need root, BPF and a cgroup2 mount (harness.RequirePrivileged), skip
// without them and fail under CI=true. Timings are reported with
// b.ReportMetric and a summary log line, never asserted: targets are for
// humans to compare against. What is asserted is that the numbers mean
// what they say: exactly the agent's connections and bytes went through
// the engine, and every idle session was relayed end to end.
//
// The benchmark process renices itself (and so the daemon it starts) to
// -20, so that other builds and tests on a small machine disturb the
// numbers less; each benchmark logs the load average it started under.
// The memory benchmark raises RLIMIT_NOFILE to 65536 for the daemon; where
// it may not (no CAP_SYS_RESOURCE), it opens as many sessions as fit and
// logs a warning.
package bench
