package bench

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/interlockhq/interlock/redirect"
	"github.com/interlockhq/interlock/test/harness"
)

const agentName = "bench-agent"

// The upstream server's requests: the first byte a client sends.
const (
	opEcho     = 'L' // echo this byte, then wait for the client's close
	opIdle     = 'I' // echo this byte, then hold the connection until the client closes
	opDownload = 'D' // + 8-byte length: the server sends that many bytes, then closes
	opUpload   = 'U' // + 8-byte length: the server reads to EOF and answers the byte count
)

const (
	gib     = 1 << 30
	bulkBuf = 1 << 20 // io buffer on both ends of a bulk transfer
	ioLimit = 60 * time.Second
)

// BenchmarkConnectLatency measures connect + write 1 byte + read the echoed
// byte, sequentially, from a plain cgroup (direct) and from the agent cgroup
// (redirected through the engine), in interleaved blocks.
func BenchmarkConnectLatency(b *testing.B) {
	e := newEnv(b)
	const warm, blocks, perBlock = 200, 4, 500
	addr := e.up.addr.String()
	var direct, relayed []time.Duration
	phase := func(cgroup string, n int, out *[]time.Duration) {
		e.in(cgroup, func() {
			for i := 0; i < n; i++ {
				d, err := echoOnce(addr)
				if err != nil {
					b.Fatalf("echo %d in %s: %v", i, cgroup, err)
				}
				if out != nil {
					*out = append(*out, d)
				}
			}
		})
	}
	accepted := e.accepted()
	phase(e.plain, warm, nil)
	phase(e.agent, warm, nil)
	for range blocks {
		phase(e.plain, perBlock, &direct)
		phase(e.agent, perBlock, &relayed)
	}
	// The numbers mean something only if exactly the agent's connections
	// went through the engine.
	if got, want := e.accepted()-accepted, float64(warm+blocks*perBlock); got != want {
		b.Fatalf("engine accepted %v connections, want %v (the agent's only)", got, want)
	}

	d50, d99 := quantile(direct, 0.50), quantile(direct, 0.99)
	i50, i99 := quantile(relayed, 0.50), quantile(relayed, 0.99)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(us(d50), "direct-p50-us")
	b.ReportMetric(us(d99), "direct-p99-us")
	b.ReportMetric(us(i50), "interlock-p50-us")
	b.ReportMetric(us(i99), "interlock-p99-us")
	b.ReportMetric(us(i50-d50), "overhead-p50-us")
	b.ReportMetric(us(i99-d99), "overhead-p99-us")
	b.ReportMetric(us(i50)/us(d50), "ratio-p50")
	b.Logf("connect+first byte, %d sequential each: direct p50 %.1f µs p99 %.1f µs | interlock p50 %.1f µs p99 %.1f µs | overhead p50 %.1f µs (target ≤ 100 µs), p99 %.1f µs",
		len(direct), us(d50), us(d99), us(i50), us(i99), us(i50-d50), us(i99-d99))
}

// BenchmarkBulkThroughput moves 1 GiB from the upstream to the client
// (download) and from the client to the upstream (upload), direct and
// through the engine, alternating, and reports the median of the rounds.
func BenchmarkBulkThroughput(b *testing.B) {
	e := newEnv(b)
	const rounds = 5
	addr := e.up.addr.String()
	buf := make([]byte, bulkBuf)
	transfer := func(cgroup string, f func(string, int64, []byte) (time.Duration, error), n int64) float64 {
		var d time.Duration
		e.in(cgroup, func() {
			var err error
			if d, err = f(addr, n, buf); err != nil {
				b.Fatalf("transfer in %s: %v", cgroup, err)
			}
		})
		return float64(n) / gib / d.Seconds()
	}
	for _, f := range []func(string, int64, []byte) (time.Duration, error){download, upload} {
		transfer(e.plain, f, 64<<20)
		transfer(e.agent, f, 64<<20)
	}
	toClient, toTarget := e.relayed("target_to_client"), e.relayed("client_to_target")
	var dd, id, du, iu []float64
	for range rounds {
		dd = append(dd, transfer(e.plain, download, gib))
		id = append(id, transfer(e.agent, download, gib))
		du = append(du, transfer(e.plain, upload, gib))
		iu = append(iu, transfer(e.agent, upload, gib))
	}
	// Exactly the agent's gigabytes went through the engine (give or take
	// the few header bytes), the direct ones did not.
	for dir, before := range map[string]float64{"target_to_client": toClient, "client_to_target": toTarget} {
		if got := e.relayed(dir) - before; got < rounds*gib || got > rounds*gib+1<<20 {
			b.Fatalf("engine relayed %v bytes %s, want %d: only the agent's transfers go through it", got, dir, rounds*gib)
		}
	}

	mdd, mid, mdu, miu := median(dd), median(id), median(du), median(iu)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(mdd, "direct-down-GiB/s")
	b.ReportMetric(mid, "interlock-down-GiB/s")
	b.ReportMetric(mid/mdd, "ratio-down")
	b.ReportMetric(mdu, "direct-up-GiB/s")
	b.ReportMetric(miu, "interlock-up-GiB/s")
	b.ReportMetric(miu/mdu, "ratio-up")
	b.Logf("1 GiB bulk, median of %d: download direct %.2f GiB/s interlock %.2f GiB/s ratio %.2f | upload direct %.2f GiB/s interlock %.2f GiB/s ratio %.2f (target ≥ 0.45)",
		rounds, mdd, mid, mid/mdd, mdu, miu, miu/mdu)
	b.Logf("rounds (GiB/s): down direct %s interlock %s | up direct %s interlock %s", fmts(dd), fmts(id), fmts(du), fmts(iu))
}

// BenchmarkConnectRateNonAgent measures how fast a process that is not an
// agent, in a cgroup below the attach point, connects to a local listener
// (socket, blocking connect, close with RST) while the daemon's programs are
// attached and after the daemon is stopped and uninstalled. Rounds
// alternate A D | D A | A D … so that each state is measured as often first
// as second. Besides the rate (wall clock) it reports the connecting
// thread's CPU time per connect, which other load on the machine disturbs
// much less.
func BenchmarkConnectRateNonAgent(b *testing.B) {
	e := newEnv(b)
	const rounds, perPhase, warm = 10, 15000, 5000

	var ln net.Listener
	e.in(e.plain, func() {
		var err error
		if ln, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			b.Fatal(err)
		}
	})
	var accepts sync.WaitGroup
	accepts.Add(1)
	go func() {
		defer accepts.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	b.Cleanup(func() { ln.Close(); accepts.Wait() })
	sa := &unix.SockaddrInet4{Port: ln.Addr().(*net.TCPAddr).Port, Addr: [4]byte{127, 0, 0, 1}}

	type phase struct{ rate, cpuUS float64 }
	measure := func(n int) phase {
		var wall, cpu time.Duration
		e.in(e.plain, func() {
			var err error
			if wall, cpu, err = connectLoop(sa, n); err != nil {
				b.Fatalf("connect loop: %v", err)
			}
		})
		return phase{float64(n) / wall.Seconds(), us(cpu) / float64(n)}
	}
	attached := true
	detach := func() {
		e.d.Stop()
		if out, err := e.d.CLI("uninstall"); err != nil {
			b.Fatalf("interlock uninstall: %v\n%s", err, out)
		}
		if harness.Exists(e.d.PinDir) {
			b.Fatalf("pin directory %s still exists after uninstall", e.d.PinDir)
		}
		attached = false
	}
	attach := func() {
		e.d.Start()
		e.waitLabel()
		attached = true
	}

	measure(warm)
	var att, det []phase
	for r := range rounds {
		first, second := &att, &det
		if r%2 == 1 {
			first, second = &det, &att
		}
		*first = append(*first, measure(perPhase))
		if attached {
			detach()
		} else {
			attach()
		}
		*second = append(*second, measure(perPhase))
	}
	if !attached {
		attach() // leave the daemon as the fixture's cleanup expects it
	}

	rates := func(ps []phase) (r []float64) {
		for _, p := range ps {
			r = append(r, p.rate)
		}
		return r
	}
	cpus := func(ps []phase) (c []float64) {
		for _, p := range ps {
			c = append(c, p.cpuUS)
		}
		return c
	}
	var paired []float64
	for i := range att {
		paired = append(paired, att[i].rate/det[i].rate)
	}
	ma, md := median(rates(att)), median(rates(det))
	ca, cd := median(cpus(att)), median(cpus(det))
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ma, "attached-conn/s")
	b.ReportMetric(md, "detached-conn/s")
	b.ReportMetric(ma/md, "ratio")
	b.ReportMetric(median(paired), "ratio-paired")
	b.ReportMetric(1e6/ma-1e6/md, "overhead-us/conn")
	b.ReportMetric(ca, "attached-cpu-us/conn")
	b.ReportMetric(cd, "detached-cpu-us/conn")
	b.ReportMetric(cd/ca, "ratio-cpu")
	b.Logf("non-agent connect rate, %d rounds × %d connects: attached %.0f/s detached %.0f/s ratio %.3f (target ≥ 0.98; paired median %.3f, range %.3f–%.3f), %+.2f µs per connect | CPU per connect attached %.2f µs detached %.2f µs ratio %.3f",
		rounds, perPhase, ma, md, ma/md, median(paired), slices.Min(paired), slices.Max(paired), 1e6/ma-1e6/md, ca, cd, cd/ca)
	b.Logf("rounds: attached %s conn/s %s µs CPU | detached %s conn/s %s µs CPU", fmts(rates(att)), fmts(cpus(att)), fmts(rates(det)), fmts(cpus(det)))
}

// BenchmarkIdleSessionMemory opens 5,000 redirected connections from the
// agent cgroup, each relaying one byte each way and then idle, and reports
// what they cost the daemon: resident memory, Go heap and stacks,
// goroutines and file descriptors per session. When the daemon's open file
// limit cannot hold 5,000 sessions (RLIMIT_NOFILE cannot be raised without
// CAP_SYS_RESOURCE), it opens as many as fit and says so.
func BenchmarkIdleSessionMemory(b *testing.B) {
	harness.RequirePrivileged(b)
	const want, workers, probe = 5000, 16, 100
	// The daemon inherits the limit (and Go raises its soft limit to the
	// hard one at start-up).
	raiseNoFile(b, 65536)
	e := newEnv(b)
	pid := e.d.PID()
	daemonLimit := openFilesLimit(b, pid)
	ownLimit := openFilesLimit(b, os.Getpid())

	// Warm up the engine's code paths and pools with a few sessions, and
	// learn what one costs in file descriptors.
	idle := e.snapshot(pid)
	warmConns := e.openIdle(probe, workers)
	e.waitSessions(probe)
	warm := e.snapshot(pid)
	e.closeIdle(warmConns, 0)
	fdsPer := (warm.fds - idle.fds) / probe
	sessions := want
	if fit := int((daemonLimit - idle.fds - 64) / max(fdsPer, 1)); fit < sessions {
		sessions = fit
		b.Logf("WARNING: only %d of %d sessions fit in the daemon's open file limit (%.0f, %.1f fds per session; raising it needs CAP_SYS_RESOURCE)",
			sessions, want, daemonLimit, fdsPer)
	}
	if fit := int((ownLimit - float64(openFDs(b, os.Getpid())) - 64) / 2); fit < sessions {
		sessions = fit
		b.Logf("WARNING: only %d sessions fit in the benchmark's own open file limit (%.0f)", sessions, ownLimit)
	}
	before := e.snapshot(pid)

	start := time.Now()
	conns := e.openIdle(sessions, workers)
	opened := time.Since(start)
	defer func() { e.closeIdle(conns, before.sessions) }()
	e.waitSessions(sessions)
	after := e.snapshot(pid)

	n := float64(sessions)
	rss := (after.rssKiB - before.rssKiB) / n
	heap := (after.heap - before.heap) / 1024 / n
	stack := (after.stack - before.stack) / 1024 / n
	gor := (after.goroutines - before.goroutines) / n
	fds := (after.fds - before.fds) / n
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(n, "sessions")
	b.ReportMetric(before.rssKiB/1024, "rss-before-MiB")
	b.ReportMetric(after.rssKiB/1024, "rss-after-MiB")
	b.ReportMetric(rss, "rss-KiB/session")
	b.ReportMetric(heap, "heap-KiB/session")
	b.ReportMetric(stack, "stack-KiB/session")
	b.ReportMetric(gor, "goroutines/session")
	b.ReportMetric(fds, "fds/session")
	b.ReportMetric(opened.Seconds(), "open-s")
	b.Logf("%d idle sessions (opened in %v): daemon RSS %.1f → %.1f MiB = %.1f KiB/session (target ≤ 64) | Go heap %.1f KiB, stacks %.1f KiB, %.1f goroutines, %.1f fds per session",
		sessions, opened.Round(time.Millisecond), before.rssKiB/1024, after.rssKiB/1024, rss, heap, stack, gor, fds)
}

// env is one benchmark's world: a cgroup subtree with a plain and an agent
// cgroup, the daemon attached at the subtree, and an upstream target.
type env struct {
	b     *testing.B
	cg    *harness.Cgroups
	d     *harness.Daemon
	up    *upstream
	home  string // the cgroup the benchmark process started in, outside the attach point
	plain string // a non-agent cgroup below the attach point
	agent string // a cgroup labelled as agentName
}

func newEnv(b *testing.B) *env {
	b.Helper()
	harness.RequirePrivileged(b)
	prioritize(b)
	mount, err := redirect.Cgroup2Mount()
	if err != nil {
		b.Fatal(err)
	}
	rel, err := redirect.CgroupOf(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	e := &env{b: b, home: filepath.Join(mount, rel), cg: harness.NewCgroups(b)}
	// Cleanups run last-in first-out: this one runs before the subtree is
	// killed and removed, which would otherwise take this process with it.
	b.Cleanup(func() {
		if err := moveTo(e.home); err != nil {
			b.Errorf("move back to %s: %v", e.home, err)
		}
	})
	e.plain = e.cg.Mkdir(b, "plain")
	e.agent = e.cg.Mkdir(b, "agents/"+agentName)
	e.up = startUpstream(b)
	// Started from home, so the daemon runs outside the attach point.
	e.d = harness.NewDaemon(b, e.cg.Root, harness.PinDir(b), policyFor(e.up.addr))
	// These benchmarks measure the redirect and the relay; what recording
	// costs is measured on its own (BenchmarkRecordingPgbench).
	e.d.AppendConfig("recording:\n  store: none\n")
	e.d.Start()
	if out, err := e.d.CLI("label", e.agent, agentName); err != nil {
		b.Fatalf("interlock label: %v\n%s", err, out)
	}
	e.waitLabel()
	load, _ := os.ReadFile("/proc/loadavg")
	b.Logf("host load average %s (benchmark and daemon at nice %d)", strings.Join(strings.Fields(string(load))[:3], " "), nice())
	return e
}

// nice returns this thread's nice value.
func nice() int {
	p, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
	if err != nil {
		return 0
	}
	return 20 - p // the raw syscall returns 20 - nice
}

func policyFor(target netip.AddrPort) string {
	return fmt.Sprintf(`version: 1
targets:
  - name: upstream
    protocol: tcp
    address: "%s"
agents:
  - name: %s
    roles: [bench]
    egress: allow
roles:
  - name: bench
    rules:
      - {actions: [read], decision: allow}
`, target, agentName)
}

// waitLabel waits until the daemon reports the agent cgroup's label.
func (e *env) waitLabel() {
	e.b.Helper()
	rel := strings.TrimPrefix(e.agent, e.cg.Mount)
	ok := harness.WaitFor(5*time.Second, func() bool {
		labels, _ := e.d.Status()["labelled_cgroups"].([]any)
		for _, l := range labels {
			if m, _ := l.(map[string]any); m["path"] == rel {
				return true
			}
		}
		return false
	})
	if !ok {
		e.b.Fatalf("the daemon never reported the label of %s", rel)
	}
}

var reniced sync.Once

// prioritize runs this process at nice -20, and with it the daemon and
// every other child started later (a new thread or process inherits the
// nice value of the thread that creates it). On a small machine shared
// with builds and tests, the scheduler otherwise decides the numbers.
func prioritize(b *testing.B) {
	reniced.Do(func() {
		// Twice: a thread the runtime starts during the first pass may
		// have been cloned from one not yet reniced.
		for range 2 {
			tasks, err := os.ReadDir("/proc/self/task")
			if err != nil {
				b.Logf("cannot renice: %v", err)
				return
			}
			for _, t := range tasks {
				tid, _ := strconv.Atoi(t.Name())
				if err := unix.Setpriority(unix.PRIO_PROCESS, tid, -20); err != nil {
					b.Logf("cannot renice thread %d to -20: %v", tid, err)
					return
				}
			}
		}
	})
}

// in runs f with the whole benchmark process inside cgroup, then moves it
// home, also when f ends the benchmark with b.Fatal.
func (e *env) in(cgroup string, f func()) {
	e.b.Helper()
	if err := moveTo(cgroup); err != nil {
		e.b.Fatal(err)
	}
	defer func() {
		if err := moveTo(e.home); err != nil {
			e.b.Errorf("move back to %s: %v", e.home, err)
		}
	}()
	f()
}

// moveTo moves every thread of this process into the cgroup. Sockets keep
// the cgroup they were created in.
func moveTo(cgroup string) error {
	err := os.WriteFile(filepath.Join(cgroup, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0)
	if err != nil {
		return fmt.Errorf("move benchmark process into %s: %w", cgroup, err)
	}
	return nil
}

func (e *env) accepted() float64 {
	return e.d.Metric("interlock_connections_total", `verdict="accepted"`)
}

func (e *env) relayed(direction string) float64 {
	return e.d.Metric("interlock_bytes_total", `direction="`+direction+`"`)
}

// openIdle opens n connections from the agent cgroup, each relaying one
// byte each way before it goes idle.
func (e *env) openIdle(n, workers int) []net.Conn {
	e.b.Helper()
	conns := make([]net.Conn, n)
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	e.in(e.agent, func() {
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
					c, err := idleOnce(e.up.addr.String())
					if err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
						return
					}
					conns[i] = c
				}
			}()
		}
		wg.Wait()
	})
	if len(errs) > 0 {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		e.b.Fatalf("open %d idle connections: %d failed, first: %v", n, len(errs), errs[0])
	}
	return conns
}

// waitSessions waits until the engine reports n sessions and the upstream
// n idle connections: every session is relayed end to end.
func (e *env) waitSessions(n int) {
	e.b.Helper()
	if !harness.WaitFor(30*time.Second, func() bool {
		return e.d.Metric("interlock_sessions_active") == float64(n) && e.up.idle.Load() == int64(n)
	}) {
		e.b.Fatalf("sessions active %v, upstream idle connections %d, want %d", e.d.Metric("interlock_sessions_active"), e.up.idle.Load(), n)
	}
}

// closeIdle closes conns and waits until the engine and the upstream have
// let go of them, leaving want sessions.
func (e *env) closeIdle(conns []net.Conn, want float64) {
	e.b.Helper()
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	if !harness.WaitFor(30*time.Second, func() bool {
		return e.d.Metric("interlock_sessions_active") == want && e.up.idle.Load() == int64(want)
	}) {
		e.b.Errorf("after closing: sessions active %v, upstream idle %d, want %v", e.d.Metric("interlock_sessions_active"), e.up.idle.Load(), want)
	}
}

type snapshot struct {
	rssKiB, heap, stack, goroutines, fds, sessions float64
}

func (e *env) snapshot(pid int) snapshot {
	e.b.Helper()
	s := snapshot{
		rssKiB:     statusKiB(e.b, pid, "VmRSS"),
		heap:       e.d.Metric("go_memstats_heap_inuse_bytes"),
		stack:      e.d.Metric("go_memstats_stack_inuse_bytes"),
		goroutines: e.d.Metric("go_goroutines"),
		sessions:   e.d.Metric("interlock_sessions_active"),
	}
	s.fds = float64(openFDs(e.b, pid))
	return s
}

// statusKiB reads a "Key:  N kB" line of /proc/<pid>/status.
func statusKiB(b *testing.B, pid int, key string) float64 {
	b.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(st), "\n") {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			if err != nil {
				b.Fatalf("/proc/%d/status %s: %v", pid, line, err)
			}
			return v
		}
	}
	b.Fatalf("/proc/%d/status has no %s", pid, key)
	return 0
}

// openFilesLimit returns the soft RLIMIT_NOFILE of a process.
func openFilesLimit(b *testing.B, pid int) float64 {
	b.Helper()
	l, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(l), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				if v, err := strconv.ParseFloat(f[0], 64); err == nil {
					return v
				}
			}
		}
	}
	b.Fatalf("/proc/%d/limits: no open files limit", pid)
	return 0
}

func openFDs(b *testing.B, pid int) int {
	b.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		b.Fatal(err)
	}
	return len(fds)
}

// raiseNoFile raises this process's RLIMIT_NOFILE, soft and hard, to at
// least n, or as far as it may (the hard limit, without CAP_SYS_RESOURCE).
// Children started afterwards (the daemon) inherit it: calling Setrlimit
// also stops os/exec from restoring the limit Go found at start-up.
func raiseNoFile(b *testing.B, n uint64) {
	b.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		b.Fatal(err)
	}
	lim := syscall.Rlimit{Cur: max(old.Max, n), Max: max(old.Max, n)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Logf("cannot raise RLIMIT_NOFILE to %d (%v); using the hard limit %d", n, err, old.Max)
		lim = syscall.Rlimit{Cur: old.Max, Max: old.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// upstream is the target: a TCP server in the benchmark process on
// 127.0.0.1, speaking the op protocol above.
type upstream struct {
	addr  netip.AddrPort
	idle  atomic.Int64 // open opIdle connections
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startUpstream(b *testing.B) *upstream {
	b.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	u := &upstream{addr: ln.Addr().(*net.TCPAddr).AddrPort(), conns: map[net.Conn]struct{}{}}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns[c] = struct{}{}
			u.mu.Unlock()
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				u.serve(c.(*net.TCPConn))
				u.mu.Lock()
				delete(u.conns, c)
				u.mu.Unlock()
				c.Close()
			}()
		}
	}()
	b.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		for c := range u.conns {
			c.Close()
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
	return u
}

func (u *upstream) serve(c *net.TCPConn) {
	var hdr [9]byte
	if _, err := io.ReadFull(c, hdr[:1]); err != nil {
		return
	}
	switch hdr[0] {
	case opEcho:
		if _, err := c.Write(hdr[:1]); err == nil {
			io.Copy(io.Discard, c)
		}
	case opIdle:
		u.idle.Add(1)
		defer u.idle.Add(-1)
		if _, err := c.Write(hdr[:1]); err == nil {
			io.Copy(io.Discard, c)
		}
	case opDownload:
		if _, err := io.ReadFull(c, hdr[1:]); err != nil {
			return
		}
		n := int64(binary.BigEndian.Uint64(hdr[1:]))
		c.SetDeadline(time.Now().Add(ioLimit))
		io.CopyBuffer(onlyWriter{c}, io.LimitReader(junk{}, n), make([]byte, bulkBuf))
	case opUpload:
		if _, err := io.ReadFull(c, hdr[1:]); err != nil {
			return
		}
		c.SetDeadline(time.Now().Add(ioLimit))
		n, _ := io.CopyBuffer(onlyWriter{io.Discard}, onlyReader{c}, make([]byte, bulkBuf))
		binary.BigEndian.PutUint64(hdr[1:], uint64(n))
		c.Write(hdr[1:])
	}
}

// echoOnce connects, sends one byte and waits for it to come back; the
// time until then is the result, the close after it is not timed.
func echoOnce(addr string) (time.Duration, error) {
	buf := []byte{opEcho}
	start := time.Now()
	c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(buf); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func idleOnce(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	buf := []byte{opIdle}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(buf); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// download times dial to EOF of n bytes sent by the upstream.
func download(addr string, n int64, buf []byte) (time.Duration, error) {
	start := time.Now()
	c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioLimit))
	var hdr [9]byte
	hdr[0] = opDownload
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	if _, err := c.Write(hdr[:]); err != nil {
		return 0, err
	}
	got, err := io.CopyBuffer(onlyWriter{io.Discard}, onlyReader{c}, buf)
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	if got != n {
		return 0, fmt.Errorf("download: got %d bytes, want %d", got, n)
	}
	return d, nil
}

// upload times dial to the upstream's acknowledgement of n bytes.
func upload(addr string, n int64, buf []byte) (time.Duration, error) {
	start := time.Now()
	c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioLimit))
	var hdr [9]byte
	hdr[0] = opUpload
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	if _, err := c.Write(hdr[:]); err != nil {
		return 0, err
	}
	if _, err := io.CopyBuffer(onlyWriter{c}, io.LimitReader(junk{}, n), buf); err != nil {
		return 0, err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(c, hdr[1:]); err != nil {
		return 0, fmt.Errorf("upload acknowledgement: %w", err)
	}
	d := time.Since(start)
	if got := int64(binary.BigEndian.Uint64(hdr[1:])); got != n {
		return 0, fmt.Errorf("upload: upstream got %d bytes, want %d", got, n)
	}
	return d, nil
}

// connectLoop runs n × (socket, blocking connect, close with RST) on one
// OS thread and returns the wall time and the thread's CPU time. RST keeps
// the loop from filling the port range with TIME_WAIT sockets.
func connectLoop(sa *unix.SockaddrInet4, n int) (wall, cpu time.Duration, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	linger := &unix.Linger{Onoff: 1, Linger: 0}
	var c0, c1 unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &c0)
	start := time.Now()
	for range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return 0, 0, err
		}
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, linger); err != nil {
			unix.Close(fd)
			return 0, 0, err
		}
		if err := unix.Connect(fd, sa); err != nil {
			unix.Close(fd)
			return 0, 0, fmt.Errorf("connect: %w", err)
		}
		unix.Close(fd)
	}
	wall = time.Since(start)
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &c1)
	return wall, time.Duration(c1.Nano() - c0.Nano()), nil
}

// junk reads as an endless stream of whatever is in the buffer already,
// so that producing bulk bytes costs nothing.
type junk struct{}

func (junk) Read(p []byte) (int, error) { return len(p), nil }

// onlyReader and onlyWriter hide ReaderFrom/WriterTo so that io.CopyBuffer
// really uses the large buffer given to it.
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func fmts(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		if x >= 100 {
			parts[i] = strconv.FormatFloat(x, 'f', 0, 64)
		} else {
			parts[i] = strconv.FormatFloat(x, 'f', 2, 64)
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}
