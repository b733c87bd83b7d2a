package bench

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/interlockhq/interlock/test/harness"
)

// The agent pgbench runs as, and the policy's name for the database.
const (
	pgAgent     = "pgbench-agent"
	pgTarget    = "bench-pg"
	pgRawTarget = "bench-pg-raw" // the same server as an opaque tcp target
	pgScale     = 10
)

// pgWorkload is one pgbench invocation, run on every path.
type pgWorkload struct {
	name     string   // sub-benchmark name
	label    string   // as written in the issue
	args     []string // pgbench options besides connection, duration and -n
	clients  int
	perTx    int  // statements per transaction, to check the engine saw them all
	prepared bool // -M prepared: each connection parses (and the engine decides) once
	connect  bool // -C: a new connection per transaction
	latency  bool // log per-transaction latencies (-l) for the p50
	target   string
}

var pgWorkloads = []pgWorkload{
	{name: "select-c1", label: "-S -c1", args: []string{"-S", "-c", "1", "-j", "1"}, clients: 1, perTx: 1, latency: true,
		target: "added p50 ≤ 30 µs"},
	{name: "select-c8", label: "-S -c8", args: []string{"-S", "-c", "8", "-j", "2"}, clients: 8, perTx: 1,
		target: "≥ 0.80× direct, ≥ 1.0× PgBouncer"},
	{name: "select-prepared-c8", label: "-S -M prepared -c8", args: []string{"-S", "-M", "prepared", "-c", "8", "-j", "2"}, clients: 8, perTx: 1, prepared: true},
	{name: "tpcb-c8", label: "TPC-B -c8", args: []string{"-b", "tpcb-like", "-c", "8", "-j", "2"}, clients: 8, perTx: 7},
	{name: "select-connect-c4", label: "-S -C -c4", args: []string{"-S", "-C", "-c", "4", "-j", "2"}, clients: 4, perTx: 1, connect: true,
		target: "≥ 0.80× direct"},
}

// pgPath is one way pgbench reaches the database.
type pgPath struct {
	name   string // direct, interlock, pgbouncer
	cgroup string // where pgbench runs
	addr   netip.AddrPort
	agent  bool       // through the engine: every statement must be decided
	relay  bool       // through the engine's opaque tcp relay: connections, no statements
	proxy  func() int // the proxy's process id, whose CPU time is counted (nil: none)
}

// pgResult is one pgbench run.
type pgResult struct {
	tps    float64
	txns   int64
	lats   []float64 // per-transaction latencies in µs, with -l
	cpu    time.Duration
	cs     int64 // the proxy's context switches (all threads)
	engine pgCounters
}

// pgAgg is what the rounds of one path add up to.
type pgAgg struct {
	tps  []float64
	txns int64
	lats []float64
	cpu  time.Duration
	cs   int64
}

func (a *pgAgg) add(r pgResult) {
	a.tps = append(a.tps, r.tps)
	a.txns += r.txns
	a.lats = append(a.lats, r.lats...)
	a.cpu += r.cpu
	a.cs += r.cs
}

// csPerTx is the proxy's context switches per transaction: each is a
// sleep and a wake-up, which on a virtual machine cost more than most
// of the proxy's own work.
func (a *pgAgg) csPerTx() float64 {
	if a.txns == 0 {
		return 0
	}
	return float64(a.cs) / float64(a.txns)
}

// cpuPerTx is the proxy's CPU time per transaction in µs: a steadier
// measure of its cost than throughput on a machine shared with other work.
func (a *pgAgg) cpuPerTx() float64 {
	if a.txns == 0 {
		return 0
	}
	return float64(a.cpu) / float64(time.Microsecond) / float64(a.txns)
}

// medianTPS is the median over rounds: a burst of other work on the
// machine spoils one round, not the result.
func (a *pgAgg) medianTPS() float64 { return pgQuantile(a.tps, 0.5) }

func (a *pgAgg) p50() float64 { return pgQuantile(a.lats, 0.5) }

// pgEnv is one benchmark's world: a cgroup subtree with a plain and an
// agent cgroup, the daemon attached at it with a policy whose postgres
// target is the database's address as clients dial it, and the tools.
type pgEnv struct {
	cg       *harness.Cgroups
	d        *harness.Daemon
	plain    string
	agent    string
	target   netip.AddrPort // what pgbench dials on the direct and Interlock paths
	maint    netip.AddrPort // where maintenance (init, vacuum) connects directly
	password string
	pgbench  string
	psql     string
	perfDir  string // INTERLOCK_PGBENCH_PERF: record the daemon with perf during Interlock runs
}

// pgSeconds is the length of one pgbench run (INTERLOCK_PGBENCH_SECONDS
// overrides it), pgRounds how many runs each path gets per workload, in
// alternating order.
func pgSeconds() int {
	if s, err := strconv.Atoi(os.Getenv("INTERLOCK_PGBENCH_SECONDS")); err == nil && s > 0 {
		return s
	}
	return 3
}

const pgRounds = 3

// pgRecording is the daemon's recording.store: none unless
// INTERLOCK_PGBENCH_RECORDING says otherwise (files, the product's
// default). These benchmarks measure the PostgreSQL handler: statement
// classification, policy and relay; BenchmarkRecordingPgbench measures what
// recording adds (a durable write before every statement).
func pgRecording() string {
	if s := os.Getenv("INTERLOCK_PGBENCH_RECORDING"); s != "" {
		return s
	}
	return "none"
}

// pgRequire checks the privileges and the client tools, installing
// pgbouncer with apt-get when it is wanted and missing.
func pgRequire(b *testing.B, bouncer bool) (pgbench, psql string) {
	b.Helper()
	harness.RequirePrivileged(b)
	bin := harness.PostgresBinDir()
	harness.Require(b, bin != "", "needs PostgreSQL server binaries (apt-get install postgresql)")
	pgbench, psql = filepath.Join(bin, "pgbench"), filepath.Join(bin, "psql")
	harness.Require(b, harness.Exists(pgbench), "needs pgbench ("+pgbench+"; apt-get install postgresql)")
	harness.Require(b, harness.Exists(psql), "needs psql ("+psql+"; apt-get install postgresql-client)")
	if bouncer {
		if _, err := exec.LookPath("pgbouncer"); err != nil && !harness.Exists("/usr/sbin/pgbouncer") {
			pgInstall(b, "pgbouncer")
		}
		_, err := exec.LookPath("pgbouncer")
		harness.Require(b, err == nil || harness.Exists("/usr/sbin/pgbouncer"), "needs pgbouncer, and apt-get install pgbouncer did not provide it")
	}
	return pgbench, psql
}

var pgInstallOnce sync.Once

func pgInstall(b *testing.B, pkg string) {
	pgInstallOnce.Do(func() {
		b.Logf("installing %s with apt-get", pkg)
		cmd := exec.Command("apt-get", "install", "-y", "-qq", "--no-install-recommends", pkg)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Logf("apt-get install %s: %v\n%s", pkg, err, out)
		}
	})
}

// pgNewEnv starts the daemon for a database that clients reach at target
// (and maintenance at maint) and labels the agent cgroup.
// raw, when valid, is the server's address as an opaque tcp target (the
// relay without the PostgreSQL handler, for comparison).
func pgNewEnv(b *testing.B, target, maint, raw netip.AddrPort, password, pgbench, psql string) *pgEnv {
	b.Helper()
	prioritize(b)
	e := &pgEnv{cg: harness.NewCgroups(b), target: target, maint: maint, password: password, pgbench: pgbench, psql: psql,
		perfDir: os.Getenv("INTERLOCK_PGBENCH_PERF")}
	e.plain = e.cg.Mkdir(b, "plain")
	e.agent = e.cg.Mkdir(b, "agents/pgbench")
	pwFile := filepath.Join(b.TempDir(), "db-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	e.d = harness.NewDaemon(b, e.cg.Root, harness.PinDir(b), pgPolicy(target, raw, pwFile))
	// The harness runs daemons at debug level, which logs every statement
	// decision into the test process: measure at the default level.
	cfg, err := os.ReadFile(e.d.ConfigPath)
	if err != nil {
		b.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), "level: debug", "level: info", 1) + "recording:\n  store: " + pgRecording() + "\n")
	if err := os.WriteFile(e.d.ConfigPath, cfg, 0o600); err != nil {
		b.Fatal(err)
	}
	e.d.Start()
	if out, err := e.d.CLI("label", e.agent, pgAgent); err != nil {
		b.Fatalf("interlock label: %v\n%s", err, out)
	}
	rel := strings.TrimPrefix(e.agent, e.cg.Mount)
	if !harness.WaitFor(5*time.Second, func() bool {
		labels, _ := e.d.Status()["labelled_cgroups"].([]any)
		for _, l := range labels {
			if m, _ := l.(map[string]any); m["path"] == rel {
				return true
			}
		}
		return false
	}) {
		b.Fatalf("the daemon never reported the label of %s", rel)
	}
	return e
}

// pgPolicy allows what pgbench does, and nothing else: reads and writes of
// its tables, the catalog query it uses to find out how pgbench_accounts is
// partitioned, transaction control and session settings. Every statement
// is classified and decided.
func pgPolicy(target, raw netip.AddrPort, pwFile string) string {
	rawTarget := ""
	if raw.IsValid() {
		rawTarget = fmt.Sprintf("  - {name: %s, protocol: tcp, address: %q}\n", pgRawTarget, raw)
	}
	return fmt.Sprintf(`version: 1
targets:
  - name: %s
    protocol: postgres
    address: "%s"
    auth: inject
    credentials: {user: postgres, password_file: %s}
    tls: {mode: disable}
%s
agents:
  - name: %s
    roles: [pgbench]
    egress: deny
roles:
  - name: pgbench
    rules:
      - {id: pgbench-tables, targets: [%[1]s], actions: [read, write], tables: ["public.pgbench_*"], decision: allow}
      - {id: pgbench-catalog, targets: [%[1]s], actions: [read], tables: ["pg_catalog.*"], decision: allow}
      - {id: pgbench-session, targets: [%[1]s], actions: [transaction, set, show], decision: allow}
`, pgTarget, target, pwFile, strings.TrimSuffix(rawTarget, "\n"), pgAgent)
}

// pgEnvVars are libpq's settings for every client: no TLS anywhere (the
// harness server has none, and the engine would otherwise offer its own
// certificate to the agent only), no GSS probe.
func (e *pgEnv) pgEnvVars() []string {
	return append(os.Environ(), "PGPASSWORD="+e.password, "PGSSLMODE=disable", "PGGSSENCMODE=disable", "PGCONNECT_TIMEOUT=10")
}

// initialise creates the pgbench tables at scale pgScale, directly.
func (e *pgEnv) initialise(b *testing.B) {
	b.Helper()
	start := time.Now()
	cmd := exec.Command(e.pgbench, "-i", "-q", "-s", strconv.Itoa(pgScale), "-h", e.maint.Addr().String(), "-p", strconv.Itoa(int(e.maint.Port())), "-U", "postgres", "postgres")
	cmd.Env = e.pgEnvVars()
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	b.Logf("pgbench -i -s %d in %v", pgScale, time.Since(start).Round(time.Millisecond))
}

// maintain does what pgbench does before a run unless given -n (vacuum the
// small tables, empty the history), directly: VACUUM is maintenance,
// which the agent's policy does not allow, so every path runs with -n from
// the same starting state.
func (e *pgEnv) maintain(tb testing.TB) {
	tb.Helper()
	cmd := exec.Command(e.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1",
		"-h", e.maint.Addr().String(), "-p", strconv.Itoa(int(e.maint.Port())), "-U", "postgres", "-d", "postgres",
		"-c", "vacuum pgbench_branches", "-c", "vacuum pgbench_tellers", "-c", "truncate pgbench_history")
	cmd.Env = e.pgEnvVars()
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("vacuum before a run: %v\n%s", err, out)
	}
}

var (
	pgReTPS    = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
	pgReTxns   = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	pgReFailed = regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`)
)

// run runs pgbench once on path and checks that the engine saw exactly
// the agent's statements, every one decided and none refused.
func (e *pgEnv) run(tb testing.TB, p pgPath, w pgWorkload, seconds int) pgResult {
	tb.Helper()
	dir, err := os.MkdirTemp("", "interlock-pgbench-")
	if err != nil {
		tb.Fatal(err)
	}
	defer os.RemoveAll(dir)
	args := append(slices.Clone(w.args), "-n", "-T", strconv.Itoa(seconds),
		"-h", p.addr.Addr().String(), "-p", strconv.Itoa(int(p.addr.Port())), "-U", "postgres")
	if w.latency {
		args = append(args, "-l", "--log-prefix", filepath.Join(dir, "tx"))
	}
	args = append(args, "postgres")
	cmd := harness.Command(tb, p.cgroup, e.pgbench, args...)
	cmd.Env = e.pgEnvVars()
	cmd.Dir = dir
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out

	before := e.counters(tb)
	var cpu0 time.Duration
	var cs0 int64
	if p.proxy != nil {
		cpu0, cs0 = pgProcCPU(tb, p.proxy()), pgProcSwitches(p.proxy())
	}
	stopPerf := e.perf(tb, p, w)
	if err := cmd.Start(); err != nil {
		stopPerf()
		tb.Fatalf("start pgbench: %v", err)
	}
	guard := time.AfterFunc(time.Duration(seconds)*time.Second+90*time.Second, func() { cmd.Process.Kill() })
	err = cmd.Wait()
	guard.Stop()
	stopPerf()
	var cpu1 time.Duration
	var cs1 int64
	if p.proxy != nil {
		cpu1, cs1 = pgProcCPU(tb, p.proxy()), pgProcSwitches(p.proxy())
	}
	after := e.counters(tb)
	text := out.String()
	if err != nil {
		tb.Fatalf("pgbench %s on the %s path: %v\n%s", strings.Join(args, " "), p.name, err, text)
	}
	r := pgResult{engine: after.minus(before), cpu: cpu1 - cpu0, cs: cs1 - cs0}
	num := func(re *regexp.Regexp) string {
		m := re.FindStringSubmatch(text)
		if m == nil {
			tb.Fatalf("pgbench on the %s path: no %q in its output:\n%s", p.name, re, text)
		}
		return m[1]
	}
	r.txns, _ = strconv.ParseInt(num(pgReTxns), 10, 64)
	if r.txns == 0 {
		tb.Fatalf("pgbench on the %s path processed no transaction in %d s (a stall?):\n%s", p.name, seconds, text)
	}
	if m := pgReFailed.FindStringSubmatch(text); m != nil && m[1] != "0" {
		tb.Fatalf("pgbench on the %s path: %s failed transactions:\n%s", p.name, m[1], text)
	}
	r.tps, _ = strconv.ParseFloat(num(pgReTPS), 64)
	if w.latency {
		r.lats = pgReadLatencies(tb, dir)
	}

	// The numbers mean something only if the Interlock runs went through
	// the engine, statement by statement, and the others did not.
	c := r.engine
	if p.agent {
		conns, stmts := int64(w.clients), r.txns*int64(w.perTx)
		if w.connect {
			conns = r.txns
		}
		if w.prepared {
			// Bind and Execute of a statement whose Parse was allowed
			// are not decided again.
			stmts = conns * int64(w.perTx)
		}
		if c.refused != 0 || c.forwarded < stmts || c.connections < conns {
			tb.Fatalf("the engine decided %d statements (%d refused) on %d connections for %d transactions of %s: want ≥ %d statements, none refused, ≥ %d connections\n%s",
				c.forwarded+c.refused, c.refused, c.connections, r.txns, w.label, stmts, conns, text)
		}
	} else if p.relay {
		conns := int64(w.clients)
		if w.connect {
			conns = r.txns
		}
		if c.forwarded+c.refused != 0 || c.connections < conns {
			tb.Fatalf("the %s path: the engine decided %d statements on %d connections for %d transactions of %s: want none on ≥ %d connections (opaque relay)", p.name, c.forwarded+c.refused, c.connections, r.txns, w.label, conns)
		}
	} else if c.forwarded+c.refused != 0 || c.connections != 0 {
		tb.Fatalf("the %s path went through the engine: %d statements, %d connections", p.name, c.forwarded+c.refused, c.connections)
	}
	return r
}

// pgReadLatencies reads pgbench's per-transaction logs ("client_id
// transaction_no time script_no time_epoch time_us …", time in µs).
func pgReadLatencies(tb testing.TB, dir string) []float64 {
	tb.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "tx.*"))
	var lats []float64
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			tb.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 3 {
				continue
			}
			if v, err := strconv.ParseFloat(fs[2], 64); err == nil {
				lats = append(lats, v)
			}
		}
		fh.Close()
	}
	if len(lats) == 0 {
		tb.Fatalf("no per-transaction latencies in %v", files)
	}
	return lats
}

// pgCounters are the engine's counters that a run must move (or not).
type pgCounters struct {
	forwarded, refused, connections int64
}

func (a pgCounters) minus(b pgCounters) pgCounters {
	return pgCounters{a.forwarded - b.forwarded, a.refused - b.refused, a.connections - b.connections}
}

func (e *pgEnv) counters(tb testing.TB) pgCounters {
	tb.Helper()
	resp, err := http.Get("http://" + e.d.Metrics + "/metrics")
	if err != nil {
		tb.Fatalf("scrape the daemon's metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	sum := func(name string, labels ...string) int64 {
		var total float64
		for _, line := range strings.Split(string(body), "\n") {
			rest, ok := strings.CutPrefix(line, name)
			if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
				continue
			}
			match := true
			for _, l := range labels {
				match = match && strings.Contains(rest, l)
			}
			if match {
				v, _ := strconv.ParseFloat(rest[strings.LastIndexByte(rest, ' ')+1:], 64)
				total += v
			}
		}
		return int64(total)
	}
	return pgCounters{
		forwarded:   sum("interlock_statements_total", `outcome="forwarded"`),
		refused:     sum("interlock_statements_total", `outcome="refused"`),
		connections: sum("interlock_connections_total", `verdict="accepted"`),
	}
}

// perf records the daemon with perf during an Interlock run when
// INTERLOCK_PGBENCH_PERF names a directory; it returns the stop function.
func (e *pgEnv) perf(tb testing.TB, p pgPath, w pgWorkload) func() {
	if e.perfDir == "" || !p.agent {
		return func() {}
	}
	pid := e.d.PID()
	if pid == 0 {
		tb.Logf("perf: daemon process not found")
		return func() {}
	}
	out := filepath.Join(e.perfDir, fmt.Sprintf("%s-%s-%d.data", strings.ReplaceAll(tb.Name(), "/", "_"), w.name, time.Now().UnixNano()))
	cmd := exec.Command("perf", "record", "-F", "999", "-g", "-p", strconv.Itoa(pid), "-o", out)
	if err := cmd.Start(); err != nil {
		tb.Logf("perf: %v", err)
		return func() {}
	}
	time.Sleep(300 * time.Millisecond) // let it attach
	return func() {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
	}
}

// pgProcCPU returns the user and system CPU time of a process (all its
// threads) so far.
func pgProcCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatalf("CPU time of process %d: %v", pid, err)
	}
	// Fields after the command name, which may hold spaces: state is
	// field 3, utime and stime are fields 14 and 15.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(f) < 13 {
		tb.Fatalf("/proc/%d/stat: %q", pid, stat)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / pgClockTicks
}

// pgProcSwitches sums the voluntary and involuntary context switches of a
// process's threads (threads that have exited are not counted: the
// proxies here keep theirs).
func pgProcSwitches(pid int) int64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	var n int64
	for _, t := range tasks {
		st, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(st), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				x, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += x
			}
		}
	}
	return n
}

// pgClockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on
// every Linux architecture Go supports).
const pgClockTicks = 100

// pgStartBouncer starts PgBouncer in session mode in front of the server
// at server (a loopback address), as the postgres user in a cgroup of the
// test's subtree, with SCRAM authentication of clients and to the server.
// It is stopped (by pid) at cleanup.
func pgStartBouncer(b *testing.B, e *pgEnv, server netip.AddrPort) (addr netip.AddrPort, pid int) {
	b.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		bin = "/usr/sbin/pgbouncer"
	}
	u, err := user.Lookup("postgres")
	harness.Require(b, err == nil, "needs the postgres system user for PgBouncer")
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "interlock-pgbouncer-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	port := harness.FreePort(b)
	ini := fmt.Sprintf(`[databases]
postgres = host=%s port=%d dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = scram-sha-256
auth_file = %s
pool_mode = session
max_client_conn = 200
default_pool_size = 20
server_tls_sslmode = disable
client_tls_sslmode = disable
logfile = %s
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
`, server.Addr(), server.Port(), port, filepath.Join(dir, "userlist.txt"), filepath.Join(dir, "pgbouncer.log"))
	files := map[string]string{
		"pgbouncer.ini": ini,
		// A plain password lets PgBouncer log in to the server with SCRAM.
		"userlist.txt": fmt.Sprintf("%q %q\n", "postgres", e.password),
	}
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			b.Fatal(err)
		}
		os.Chown(p, uid, gid)
	}
	os.Chown(dir, uid, gid)

	cmd := harness.Command(b, e.cg.Mkdir(b, "pgbouncer"), bin, filepath.Join(dir, "pgbouncer.ini"))
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		b.Fatalf("start pgbouncer: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	b.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	addr = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	ok := harness.WaitFor(10*time.Second, func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		q := exec.Command(e.psql, "-X", "-At", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres", "-d", "postgres", "-c", "select 1")
		q.Env = e.pgEnvVars()
		o, err := q.CombinedOutput()
		return err == nil && strings.TrimSpace(string(o)) == "1"
	})
	select {
	case <-exited:
		log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
		b.Fatalf("pgbouncer exited at start: %s\n%s", out.String(), log)
	default:
	}
	if !ok {
		log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
		b.Fatalf("pgbouncer did not answer on %s:\n%s", addr, log)
	}
	return addr, cmd.Process.Pid
}

func pgQuantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
