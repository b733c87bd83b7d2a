package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/interlockhq/interlock/test/harness"
)

func TestMain(m *testing.M) {
	harness.MaybeDial()
	harness.MaybePgx()
	maybeAttackChild()
	maybeListenChild()
	os.Exit(m.Run())
}

const listenEnv = "INTERLOCK_E2E_LISTEN"

// maybeListenChild: a process that tries to listen on an address and says
// how it went.
func maybeListenChild() {
	addr := os.Getenv(listenEnv)
	if addr == "" {
		return
	}
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		fmt.Println(err)
		os.Exit(0)
	}
	ln.Close()
	fmt.Println("ok")
	os.Exit(0)
}

// engineAddr is the daemon's IPv4 listener address, from its config.
func engineAddr(t *testing.T, d *harness.Daemon) string {
	t.Helper()
	b, err := os.ReadFile(d.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "listen4:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("no engine.listen4 in the daemon's config")
	return ""
}

// peerEcho is a target that tells each client the address it saw. An agent
// whose own local address comes back reached it directly; through the
// engine, the peer is the engine's socket.
func peerEcho(t *testing.T, network, addr string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "peer=%s\n", c.RemoteAddr())
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// direct reports whether the dial reached the echo target without the
// engine in between: the target saw the agent's own address, and the
// agent's socket is connected to the address it dialed, not to the
// engine. The first alone is no proof: the engine's upstream socket may
// get the same port as the agent's (see harness.DialResult.Peer). A peer
// the helper could not read counts as direct: a test of fail-closed must
// fail then, not pass.
func direct(res harness.DialResult) bool {
	return res.Err == "" && strings.TrimSpace(res.Reply) == "peer="+res.Local &&
		(res.Peer == "" || samePeer(res.Peer, res.Remote))
}

// samePeer compares two addresses, a v4-mapped IPv6 one equal to its IPv4
// form.
func samePeer(a, b string) bool {
	pa, err1 := netip.ParseAddrPort(a)
	pb, err2 := netip.ParseAddrPort(b)
	return err1 == nil && err2 == nil && pa.Addr().Unmap() == pb.Addr().Unmap() && pa.Port() == pb.Port()
}

func relayed(res harness.DialResult) bool {
	return res.Err == "" && strings.HasPrefix(res.Reply, "peer=") && res.Peer != "" && !samePeer(res.Peer, res.Remote)
}

type env struct {
	cg     *harness.Cgroups
	pg     *harness.Postgres
	d      *harness.Daemon
	echo   netip.AddrPort
	echo6  netip.AddrPort
	other  netip.AddrPort
	policy string
}

func policyFor(pgPort int, echo, echo6 netip.AddrPort) string {
	return fmt.Sprintf(`version: 1
targets:
  - name: orders-db
    protocol: tcp
    address: localhost:%d
  - name: orders-db-v6
    protocol: tcp
    address: "[::1]:%d"
  - name: echo
    protocol: tcp
    address: "%s"
  - name: echo6
    protocol: tcp
    address: "%s"
agents:
  - name: analyst
    roles: [analyst]
    egress: deny
  - name: writer
    roles: [writer]
    egress: allow
roles:
  - name: analyst
    rules:
      - {actions: [read], decision: allow}
  - name: writer
    rules:
      - {actions: [read, write], decision: allow}
`, pgPort, pgPort, echo, echo6)
}

func setup(t *testing.T) *env {
	t.Helper()
	harness.RequirePrivileged(t)
	_, err := exec.LookPath("psql")
	harness.Require(t, err == nil, "needs psql (apt-get install postgresql-client)")
	e := &env{cg: harness.NewCgroups(t), pg: harness.StartPostgres(t)}
	e.echo = peerEcho(t, "tcp4", "127.0.0.1:0")
	e.echo6 = peerEcho(t, "tcp6", "[::1]:0")
	e.other = peerEcho(t, "tcp4", "127.0.0.1:0")
	e.policy = policyFor(e.pg.Port, e.echo, e.echo6)
	e.d = harness.NewDaemon(t, e.cg.Root, harness.PinDir(t), e.policy)
	e.d.Start()
	return e
}

// agentCgroup creates a cgroup, labels it with the CLI and waits until the
// daemon has told the kernel.
func (e *env) agentCgroup(t *testing.T, rel, agent string) string {
	t.Helper()
	p := e.cg.Mkdir(t, rel)
	if out, err := e.d.CLI("label", p, agent); err != nil {
		t.Fatalf("interlock label: %v\n%s", err, out)
	}
	e.waitLabel(t, e.cg.Rel(rel), true)
	return p
}

func (e *env) waitLabel(t *testing.T, rel string, present bool) {
	t.Helper()
	start := time.Now()
	ok := harness.WaitFor(3*time.Second, func() bool {
		labels, _ := e.d.Status()["labelled_cgroups"].([]any)
		found := false
		for _, l := range labels {
			if l.(map[string]any)["path"] == rel {
				found = true
			}
		}
		return found == present
	})
	if !ok {
		t.Fatalf("label of %s present=%v not seen by the daemon: %v", rel, !present, e.d.Status()["labelled_cgroups"])
	}
	t.Logf("label change of %s applied after %v", rel, time.Since(start).Round(time.Millisecond))
}

func (e *env) psql(t *testing.T, cgroupPath, host, sql string) (string, error) {
	t.Helper()
	dsn := fmt.Sprintf("host=%s port=%d user=postgres password=%s dbname=postgres sslmode=disable connect_timeout=5", host, e.pg.Port, e.pg.Password)
	cmd := harness.Command(t, cgroupPath, "psql", "-X", "-At", "-d", dsn, "-c", sql)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func TestAgentIsRedirectedAndIdentified(t *testing.T) {
	e := setup(t)
	agent := e.agentCgroup(t, "agents/analyst", "analyst")
	plain := e.cg.Mkdir(t, "plain")

	// A long statement so that the session is still open while we look.
	var wg sync.WaitGroup
	wg.Add(1)
	var out string
	var perr error
	go func() {
		defer wg.Done()
		out, perr = e.psql(t, agent, "127.0.0.1", "select pg_sleep(1.5), 'through'")
	}()
	var sess map[string]any
	harness.WaitFor(5*time.Second, func() bool {
		if s, ok := e.d.Status()["sessions"].([]any); ok && len(s) > 0 {
			sess = s[0].(map[string]any)
			return true
		}
		return false
	})
	wg.Wait()
	if perr != nil || !strings.Contains(out, "through") {
		t.Fatalf("psql as agent: %v\n%s", perr, out)
	}
	if sess == nil {
		t.Fatal("the daemon never showed the agent's session")
	}
	id := sess["identity"].(map[string]any)
	if id["agent"] != "analyst" || id["target"] != "orders-db" || id["orig_dst"] != e.pg.Addr() {
		t.Errorf("session identity = %v", id)
	}
	if !strings.HasSuffix(fmt.Sprint(id["exe"]), "/psql") {
		t.Errorf("exe = %v, want psql", id["exe"])
	}
	if id["pid"].(float64) <= 0 || !strings.HasSuffix(fmt.Sprint(id["cgroup_path"]), "/agents/analyst") {
		t.Errorf("pid/cgroup = %v/%v", id["pid"], id["cgroup_path"])
	}
	if got := e.d.Metric("interlock_connections_total", `agent="analyst"`, `target="orders-db"`, `verdict="accepted"`); got != 1 {
		t.Errorf("connections_total for analyst = %v, want 1", got)
	}

	t.Run("daemon runs with sysmon kept out of deep sleep", func(t *testing.T) {
		// `run` re-executes itself (same pid) with GODEBUG=schedtrace:
		// see cmd/interlock/sysmon.go; the benchmarks show its effect.
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", e.d.PID()))
		if err != nil {
			t.Fatal(err)
		}
		// And under its own name (ps, pgrep), not the re-exec's.
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", e.d.PID())); strings.TrimSpace(string(comm)) != "interlock" {
			t.Errorf("daemon process name %q, want interlock", comm)
		}
		for _, kv := range strings.Split(string(env), "\x00") {
			if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
				if !strings.Contains(v, "schedtrace=") {
					t.Errorf("daemon GODEBUG = %q, want schedtrace set", v)
				}
				return
			}
		}
		t.Errorf("daemon environment has no GODEBUG")
	})

	t.Run("non-agent is not redirected", func(t *testing.T) {
		before := e.d.Metric("interlock_kernel_verdicts_total", `verdict="redirected"`)
		if out, err := e.psql(t, plain, "127.0.0.1", "select 1"); err != nil || out != "1" {
			t.Fatalf("psql from a plain cgroup: %v %s", err, out)
		}
		if res := harness.Dial(t, plain, "tcp4", e.echo.String()); !direct(res) {
			t.Errorf("plain process to echo target: %+v, want direct", res)
		}
		if after := e.d.Metric("interlock_kernel_verdicts_total", `verdict="redirected"`); after != before {
			t.Errorf("redirected counter moved %v → %v for a non-agent", before, after)
		}
	})

	t.Run("ipv6 and v4-mapped", func(t *testing.T) {
		for _, host := range []string{"::1", "::ffff:127.0.0.1"} {
			if out, err := e.psql(t, agent, host, "select 'v6 ok'"); err != nil || out != "v6 ok" {
				t.Errorf("psql to %s as agent: %v %s", host, err, out)
			}
		}
		if res := harness.Dial(t, agent, "tcp6", e.echo6.String()); !relayed(res) {
			t.Errorf("agent to [::1] echo: %+v, want relayed", res)
		}
		mapped := netip.AddrPortFrom(netip.AddrFrom16(e.echo.Addr().As16()), e.echo.Port())
		// Go reports the v4-mapped peer unmapped; the kernel returned the
		// original destination either way.
		if res := harness.Dial(t, agent, "tcp6-mapped", mapped.String()); !relayed(res) || res.Remote != e.echo.String() {
			t.Errorf("agent to v4-mapped echo: %+v, want relayed and getpeername %s", res, mapped)
		}
	})

	t.Run("children and nested cgroups inherit", func(t *testing.T) {
		before := e.d.Metric("interlock_connections_total", `agent="analyst"`, `target="echo"`)
		// A grandchild process: bash → the dial helper.
		cmd := harness.Command(t, agent, "bash", "-c", `exec "$0" -test.run='^$'`, os.Args[0])
		cmd.Env = append(os.Environ(), `INTERLOCK_TEST_DIAL={"Network":"tcp4","Addr":"`+e.echo.String()+`"}`)
		b, err := cmd.Output()
		if err != nil || !strings.Contains(string(b), "peer=127.0.0.1") {
			t.Fatalf("child process dial: %v %s", err, b)
		}
		nested := e.cg.Mkdir(t, "agents/analyst/tools/deeper")
		if res := harness.Dial(t, nested, "tcp4", e.echo.String()); !relayed(res) {
			t.Errorf("nested cgroup dial: %+v, want relayed", res)
		}
		if after := e.d.Metric("interlock_connections_total", `agent="analyst"`, `target="echo"`); after != before+2 {
			t.Errorf("echo connections for analyst %v → %v, want +2", before, after)
		}
	})

	t.Run("egress", func(t *testing.T) {
		res := harness.Dial(t, agent, "tcp4", e.other.String())
		if !strings.Contains(res.Err, "operation not permitted") {
			t.Errorf("analyst (egress deny) to a non-target: %+v, want EPERM", res)
		}
		writer := e.agentCgroup(t, "agents/writer", "writer")
		if res := harness.Dial(t, writer, "tcp4", e.other.String()); !direct(res) {
			t.Errorf("writer (egress allow) to a non-target: %+v, want direct", res)
		}
		if res := harness.Dial(t, writer, "tcp4", e.echo.String()); !relayed(res) {
			t.Errorf("writer to a target: %+v, want relayed", res)
		}
		for _, cg := range []string{agent, writer} {
			if res := harness.Dial(t, cg, "tcp4", e.d.Metrics); !strings.Contains(res.Err, "operation not permitted") {
				t.Errorf("agent to the metrics port: %+v, want EPERM", res)
			}
		}
	})
}

// TestEscapes tries the ways an agent might slip past the connect hooks.
func TestEscapes(t *testing.T) {
	e := setup(t)
	agent := e.agentCgroup(t, "agents/analyst", "analyst")

	// TCP Fast Open: sendto(MSG_FASTOPEN) connects without connect().
	if res := harness.Dial(t, agent, "tcp4-fastopen", e.echo.String()); direct(res) {
		t.Errorf("fast open to a target reached it directly: %+v", res)
	} else if !relayed(res) {
		t.Logf("fast open to a target was refused (acceptable, fail closed): %+v", res)
	}
	if res := harness.Dial(t, agent, "tcp4-fastopen", e.other.String()); !strings.Contains(res.Err, "operation not permitted") {
		t.Errorf("fast open to a non-target: %+v, want EPERM", res)
	}
	// Datagrams, with and without connect().
	for _, addr := range []string{e.other.String(), e.echo.String(), "127.0.0.1:53"} {
		if res := harness.Dial(t, agent, "udp4-sendto", addr); !strings.Contains(res.Err, "operation not permitted") {
			t.Errorf("udp sendto %s: %+v, want EPERM", addr, res)
		}
		if res := harness.Dial(t, agent, "udp4", addr); !strings.Contains(res.Err, "operation not permitted") {
			t.Errorf("udp connect %s: %+v, want EPERM", addr, res)
		}
	}
	// Sockets that send without the connect and sendmsg hooks: raw and
	// ping (ICMP echo) sockets. An egress: deny agent may not open them; a
	// process outside the agents, and an egress: allow agent, may.
	writer := e.agentCgroup(t, "agents/writer", "writer")
	outside := e.cg.Mkdir(t, "outside")
	for _, kind := range []string{"raw4-socket", "ping4-socket"} {
		if res := harness.Dial(t, agent, kind, ""); !strings.Contains(res.Err, "operation not permitted") {
			t.Errorf("%s as an egress: deny agent: %+v, want EPERM", kind, res)
		}
		for name, cg := range map[string]string{"a non-agent": outside, "an egress: allow agent": writer} {
			if res := harness.Dial(t, cg, kind, ""); res.Err != "" {
				t.Errorf("%s as %s: %+v, want a socket", kind, name, res)
			}
		}
	}
	// Another loopback address of the same host is another destination.
	alias := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), e.echo.Port())
	if res := harness.Dial(t, agent, "tcp4", alias.String()); !strings.Contains(res.Err, "operation not permitted") {
		t.Errorf("agent to %s: %+v, want EPERM", alias, res)
	}
	// The engine's listener itself, dialled directly, is not a target.
	st := e.d.Status()
	eng := st["engine"].([]any)[0].(string)
	if res := harness.Dial(t, agent, "tcp4", eng); !strings.Contains(res.Err, "operation not permitted") {
		t.Errorf("agent to the engine listener %s: %+v, want EPERM", eng, res)
	}
	// A non-agent dialling the engine port directly has no kernel record:
	// refused, and counted.
	plain := e.cg.Mkdir(t, "plain")
	if res := harness.Dial(t, plain, "tcp4", eng); res.Reply != "" {
		t.Errorf("non-agent to the engine port got a reply: %+v", res)
	}
	if got := e.d.Metric("interlock_redirect_lookup_failures_total"); got != 1 {
		t.Errorf("lookup failures = %v, want 1", got)
	}
}

func TestLabelsAtRunTime(t *testing.T) {
	e := setup(t)
	cg := e.cg.Mkdir(t, "late")
	if res := harness.Dial(t, cg, "tcp4", e.echo.String()); !direct(res) {
		t.Fatalf("before labelling: %+v", res)
	}
	e.agentCgroup(t, "late", "analyst")
	if res := harness.Dial(t, cg, "tcp4", e.echo.String()); !relayed(res) {
		t.Fatalf("after labelling: %+v", res)
	}
	if out, err := e.d.CLI("unlabel", cg); err != nil {
		t.Fatalf("unlabel: %v %s", err, out)
	}
	e.waitLabel(t, e.cg.Rel("late"), false)
	if res := harness.Dial(t, cg, "tcp4", e.echo.String()); !direct(res) {
		t.Fatalf("after unlabelling: %+v", res)
	}
}

func TestExec(t *testing.T) {
	e := setup(t)
	parent := e.cg.Rel("exec")
	// As a test runs it, not under sudo: the default user is the caller.
	interlockExec := func(args ...string) *exec.Cmd {
		cmd := exec.Command(e.d.Bin, append([]string{"--config", e.d.ConfigPath, "exec", "--agent", "analyst", "--parent", parent}, args...)...)
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "SUDO_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		return cmd
	}
	out, err := interlockExec("--user", "nobody", "--",
		"psql", "-X", "-At", "-d", fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=%s dbname=postgres", e.pg.Port, e.pg.Password),
		"-c", "select 'exec ok'").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "exec ok") {
		t.Fatalf("interlock exec psql: %v\n%s", err, out)
	}
	if got := e.d.Metric("interlock_connections_total", `agent="analyst"`, `target="orders-db"`, `verdict="accepted"`); got != 1 {
		t.Errorf("exec'd psql was not intercepted: connections_total = %v", got)
	}
	entries, _ := os.ReadDir(e.cg.Path("exec"))
	for _, en := range entries {
		if en.IsDir() {
			t.Errorf("exec left its cgroup behind: %s", en.Name())
		}
	}
	// The command runs as --user, with that user's home.
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	out, err = interlockExec("--user", "nobody", "--", "sh", "-c", "echo $(id -u):$(id -g):$HOME").Output()
	if want := nobody.Uid + ":" + nobody.Gid + ":" + nobody.HomeDir; err != nil || strings.TrimSpace(string(out)) != want {
		t.Errorf("exec --user nobody ran as %q (%v), want %s", out, err, want)
	}
	// It cannot gain privileges: a setuid-root program (sudo, su, pkexec)
	// would make it root again, and root leaves its cgroup.
	dir, err := os.MkdirTemp("", "interlock-suid-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	idBin, err := exec.LookPath("id")
	if err != nil {
		t.Fatal(err)
	}
	suid := filepath.Join(dir, "id")
	if b, err := os.ReadFile(idBin); err != nil || os.WriteFile(suid, b, 0o755) != nil || os.Chmod(suid, os.ModeSetuid|0o755) != nil {
		t.Fatalf("setuid copy of id: %v", err)
	}
	plain := harness.Command(t, e.cg.Mkdir(t, "plain"), suid, "-u")
	plain.SysProcAttr.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
	if out, err := plain.Output(); err != nil || strings.TrimSpace(string(out)) != "0" {
		t.Fatalf("the setuid copy of id does not make nobody root here (%q, %v): the test below would prove nothing", out, err)
	}
	if out, err := interlockExec("--user", "nobody", "--", suid, "-u").Output(); err != nil || strings.TrimSpace(string(out)) != nobody.Uid {
		t.Errorf("an agent ran a setuid-root program as euid %q (%v), want %s (no_new_privs)", out, err, nobody.Uid)
	}
	// Nor does it see the caller's environment, but what --env gives.
	t.Setenv("INTERLOCK_TEST_SECRET", "s3cret")
	out, err = interlockExec("--user", "nobody", "--env", "GIVEN=yes", "--", "sh", "-c", "echo secret=$INTERLOCK_TEST_SECRET given=$GIVEN path=${PATH:+set}").Output()
	if err != nil || strings.TrimSpace(string(out)) != "secret= given=yes path=set" {
		t.Errorf("agent environment: %q (%v)", out, err)
	}
	// Root can leave its cgroup and relabel it: refused unless asked for.
	out, err = interlockExec("--", "true").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "refusing to run the agent as root") {
		t.Errorf("exec as root without --user: %v\n%s", err, out)
	}
	out, err = interlockExec("--user", "root", "--", "true").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "refusing to run the agent as root") {
		t.Errorf("exec --user root: %v\n%s", err, out)
	}
	// The exit status is the command's.
	err = interlockExec("--allow-root", "--", "sh", "-c", "exit 7").Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Errorf("exec exit status: %v, want 7", err)
	}
}

// `sudo interlock exec --user bot -- agent` from an operator's terminal:
// in the operator's session, with the operator's tty as its controlling
// terminal, the agent pushed input with TIOCSTI (dev.tty.legacy_tiocsti=1,
// the default on most kernels) that the operator's root shell read once
// exec returned: root again, outside the cgroup, despite --user and
// no_new_privs. The agent now has a session of its own.
func TestExecNoControllingTerminal(t *testing.T) {
	if b, _ := os.ReadFile("/proc/sys/dev/tty/legacy_tiocsti"); strings.TrimSpace(string(b)) == "0" {
		t.Skip("TIOCSTI disabled on this kernel")
	}
	_, err := exec.LookPath("perl")
	harness.Require(t, err == nil, "needs perl (Debian: perl-base)")
	e := setup(t)
	_, pts, screen := newPty(t) // screen: what the terminal shows
	// Into standard input, and into the controlling terminal; exec's own
	// relay may read what lands in the terminal, so the agent says what
	// worked.
	cmd := exec.Command(e.d.Bin, "--config", e.d.ConfigPath, "exec", "--agent", "analyst", "--parent", e.cg.Rel("exec"),
		"--user", "nobody", "--", "perl", "-e", `
			$| = 1;
			open(my $tty, "+<", "/dev/tty");
			for my $fh (\*STDIN, $tty) {
				next unless $fh;
				for (split //, "echo PWNED-AS-ROOT\n") { ioctl($fh, 0x5412, $_) or last; print "TIOCSTI-WORKED\n" }
			}
			print "AGENT-DONE\n"`)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Run(); err != nil {
		t.Logf("exec: %v", err)
	}
	// What the operator's shell reads next from its terminal.
	unix.SetNonblock(int(pts.Fd()), true)
	pts.SetReadDeadline(time.Now().Add(time.Second))
	b := make([]byte, 256)
	k, _ := pts.Read(b)
	if strings.Contains(string(b[:k]), "PWNED-AS-ROOT") {
		t.Errorf("the agent (uid nobody) injected %q into the caller's terminal input: the caller's root shell runs it", b[:k])
	}
	harness.WaitFor(time.Second, func() bool { return strings.Contains(screen.String(), "AGENT-DONE") })
	if out := screen.String(); !strings.Contains(out, "AGENT-DONE") || strings.Contains(out, "TIOCSTI-WORKED") {
		t.Errorf("the agent pushed input into the caller's terminal, or did not run:\n%s", out)
	}
}

// jobShell is a tiny job-control shell: it runs its arguments as a
// foreground job in a process group of its own (as bash does), waits
// until the job ends or stops (^Z), takes the terminal back, and then
// reads the operator's next lines, as a root shell would.
const jobShell = `
use POSIX;
$SIG{TTOU} = 'IGNORE';
$| = 1;
my $pid = fork();
if ($pid == 0) { setpgid(0, 0); exec @ARGV; exit 127 }
setpgid($pid, $pid);
tcsetpgrp(0, $pid);
print "JOB:$pid\n";
waitpid($pid, WUNTRACED);
tcsetpgrp(0, getpgrp());
print "SHELL-BACK\n";
while (defined(my $l = <STDIN>)) { print "SHELL-READ:$l"; last if $l =~ /END/ }
kill('CONT', -$pid);
sleep 30;
`

// In a session of its own the agent is outside the terminal's job
// control: ^Z stops interlock exec (the foreground job), not the agent,
// and a process outside the terminal's session gets no SIGTTIN when it
// reads the terminal. Given the terminal itself, the agent went on
// reading it while exec was stopped, and took the lines meant for the
// operator's root shell (commands, passwords). It gets pipes instead,
// which exec feeds only while it runs.
func TestExecStoppedAgentReadsNoInput(t *testing.T) {
	_, err := exec.LookPath("perl")
	harness.Require(t, err == nil, "needs perl (Debian: perl-base)")
	e := setup(t)
	ptmx, pts, out := newPty(t)
	agent := `$| = 1; print "AGENT-READY\n"; while (defined(my $l = <STDIN>)) { print "AGENT-READ:$l" }`
	cmd := exec.Command("perl", "-e", jobShell, e.d.Bin, "--config", e.d.ConfigPath, "exec", "--agent", "analyst",
		"--parent", e.cg.Rel("exec"), "--user", "nobody", "--", "perl", "-e", agent)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var job int
	t.Cleanup(func() {
		// Kill the agent through its cgroup (our subtree), let exec clean up.
		filepath.WalkDir(e.cg.Path("exec"), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() && p != e.cg.Path("exec") {
				os.WriteFile(filepath.Join(p, "cgroup.kill"), []byte("1"), 0)
			}
			return nil
		})
		if job > 0 {
			syscall.Kill(job, syscall.SIGCONT)
			time.Sleep(500 * time.Millisecond)
		}
		cmd.Process.Kill()
		cmd.Wait()
	})
	if !harness.WaitFor(10*time.Second, func() bool { return strings.Contains(out.String(), "AGENT-READY") }) {
		t.Fatalf("agent did not start:\n%s", out.String())
	}
	if m := regexp.MustCompile(`JOB:(\d+)`).FindStringSubmatch(out.String()); m != nil {
		job, _ = strconv.Atoi(m[1])
	}
	ptmx.Write([]byte{0x1a}) // ^Z
	if !harness.WaitFor(5*time.Second, func() bool { return strings.Contains(out.String(), "SHELL-BACK") }) {
		t.Fatalf("^Z did not suspend interlock exec:\n%s", out.String())
	}
	st, _ := os.ReadFile("/proc/" + strconv.Itoa(job) + "/stat")
	t.Logf("interlock exec (pid %d) after ^Z: %s", job, st)
	for i := range 5 {
		ptmx.Write([]byte("operator-secret-" + strconv.Itoa(i) + "\n"))
		time.Sleep(100 * time.Millisecond)
	}
	ptmx.Write([]byte("END\n"))
	time.Sleep(500 * time.Millisecond)
	got := out.String()
	t.Logf("terminal:\n%s", got)
	if strings.Contains(got, "AGENT-READ:operator-secret") {
		t.Errorf("with interlock exec suspended (^Z), the agent (uid nobody) read the operator's terminal input meant for the root shell")
	}
}

// newPty returns a terminal pair, and what the terminal shows.
func newPty(t *testing.T) (ptmx, pts *os.File, screen *harness.SyncBuffer) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pts.Close() })
	screen = &harness.SyncBuffer{}
	go func() {
		b := make([]byte, 4096)
		for {
			k, err := ptmx.Read(b)
			if err != nil {
				return
			}
			screen.Write(b[:k])
		}
	}()
	return ptmx, pts, screen
}

// bgShell runs its arguments as a background job of an interactive shell
// (a process group of its own, the terminal left to the shell) and says
// how the job ended.
const bgShell = `
use POSIX;
$| = 1;
my $pid = fork();
if ($pid == 0) { setpgid(0, 0); exec @ARGV; exit 127 }
setpgid($pid, $pid);
waitpid($pid, WUNTRACED);
my $st = ${^CHILD_ERROR_NATIVE};
if (WIFSTOPPED($st)) { print "JOB-STOPPED:sig" . WSTOPSIG($st) . "\n"; kill('KILL', -$pid); waitpid($pid, 0) }
else { print "JOB-EXIT:" . WEXITSTATUS($st) . "\n" }
`

// The relay of a terminal to the agent (see TestExecStoppedAgentReadsNoInput)
// must not change what exec does otherwise.
func TestExecRelay(t *testing.T) {
	_, err := exec.LookPath("perl")
	harness.Require(t, err == nil, "needs perl (Debian: perl-base)")
	e := setup(t)
	execArgs := func(agent string) []string {
		return []string{e.d.Bin, "--config", e.d.ConfigPath, "exec", "--agent", "analyst",
			"--parent", e.cg.Rel("exec"), "--user", "nobody", "--", "perl", "-e", agent}
	}
	// In the background (exec … &), reading the terminal would stop the
	// job (SIGTTIN) before the agent ever ran.
	t.Run("background", func(t *testing.T) {
		_, pts, screen := newPty(t)
		cmd := exec.Command("perl", append([]string{"-e", bgShell}, execArgs(`$|=1; sleep 1; print "AGENT-OUT\n"`)...)...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		harness.WaitFor(time.Second, func() bool { return strings.Contains(screen.String(), "JOB-") })
		if out := screen.String(); !strings.Contains(out, "AGENT-OUT") || !strings.Contains(out, "JOB-EXIT:0") {
			t.Errorf("interlock exec in the background:\n%s", out)
		}
	})
	// Output held back by flow control (^S) when the agent exits is
	// shown once the terminal goes on (^Q), not dropped.
	t.Run("flow-control", func(t *testing.T) {
		ptmx, pts, screen := newPty(t)
		ptmx.Write([]byte{0x13}) // ^S
		args := execArgs(`$|=1; for (1..2000) { print "LINE-$_\n" } print "AGENT-END\n"`)
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		ptmx.Write([]byte{0x11}) // ^Q
		if err := cmd.Wait(); err != nil {
			t.Errorf("exec: %v", err)
		}
		harness.WaitFor(2*time.Second, func() bool { return strings.Contains(screen.String(), "AGENT-END") })
		if out := screen.String(); strings.Count(out, "LINE-") != 2000 || !strings.Contains(out, "AGENT-END") {
			t.Errorf("agent output through a terminal under ^S: %d of 2000 lines, end shown: %v", strings.Count(out, "LINE-"), strings.Contains(out, "AGENT-END"))
		}
	})
	// A terminal the caller passes on a descriptor beyond 0-2 stays with
	// exec.
	t.Run("fd3", func(t *testing.T) {
		_, pts, screen := newPty(t)
		args := execArgs(`$|=1; print "FD3-TTY=", (-t 3 ? 1 : 0), "\n"`)
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
		cmd.ExtraFiles = []*os.File{pts}
		if err := cmd.Run(); err != nil {
			t.Errorf("exec: %v", err)
		}
		harness.WaitFor(time.Second, func() bool { return strings.Contains(screen.String(), "FD3-TTY=") })
		if out := screen.String(); !strings.Contains(out, "FD3-TTY=0") {
			t.Errorf("the agent got the caller's terminal on fd 3:\n%s", out)
		}
	})
}

// killExecCgroups ends what tests left in exec's cgroups.
func killExecCgroups(e *env) {
	filepath.WalkDir(e.cg.Path("exec"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && p != e.cg.Path("exec") {
			os.WriteFile(filepath.Join(p, "cgroup.kill"), []byte("1"), 0)
		}
		return nil
	})
}

// A process of the agent's user outside the agent cgroup (another agent
// session of the same --user, a user daemon, ...) takes the agent's
// stdout pipe with pidfd_getfd (or gets it over a unix socket, SCM_RIGHTS).
// cgroup.kill does not reach it: exec waited forever for the pipe to
// close, and kept relaying that process's output to the caller's
// terminal. It now relays what the pipe holds when the cgroup is empty.
func TestExecPipeHeldOutside(t *testing.T) {
	_, err := exec.LookPath("perl")
	harness.Require(t, err == nil, "needs perl (Debian: perl-base)")
	e := setup(t)
	_, pts, screen := newPty(t)
	cmd := exec.Command(e.d.Bin, "--config", e.d.ConfigPath, "exec", "--agent", "analyst",
		"--parent", e.cg.Rel("exec"), "--user", "nobody", "--", "perl", "-e", `$|=1; print "PID:$$\n"; sleep 2; print "AGENT-BYE\n"; exit 0`)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var holder *exec.Cmd
	t.Cleanup(func() {
		if holder != nil && holder.Process != nil {
			holder.Process.Kill()
			holder.Wait()
		}
		killExecCgroups(e)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	if !harness.WaitFor(10*time.Second, func() bool { return regexp.MustCompile(`PID:\d+`).MatchString(screen.String()) }) {
		t.Fatalf("agent did not start:\n%s", screen.String())
	}
	pid := regexp.MustCompile(`PID:(\d+)`).FindStringSubmatch(screen.String())[1]
	// uid nobody, outside the agent cgroup (in the test's own cgroup).
	holder = exec.Command("perl", "-e", `my $pfd = syscall(434, $ARGV[0]+0, 0); die "pidfd_open: $!\n" if $pfd < 0; my $fd = syscall(438, $pfd, 1, 0); die "pidfd_getfd: $!\n" if $fd < 0; print STDERR "HELD fd $fd\n"; sleep 60`, pid)
	hout := &harness.SyncBuffer{}
	holder.Stdout, holder.Stderr = hout, hout
	holder.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	if !harness.WaitFor(3*time.Second, func() bool { return strings.Contains(hout.String(), "HELD") }) {
		t.Fatalf("holder: %s", hout.String())
	}
	select {
	case err := <-done:
		done <- err
		t.Logf("exec returned: %v", err)
	case <-time.After(8 * time.Second):
		t.Errorf("HANG: exec has not returned 6 s after the agent exited: a uid-nobody process outside the cgroup holds the agent's stdout pipe; agent exited: %v\n%s",
			strings.Contains(screen.String(), "AGENT-BYE"), screen.String())
		// The operator's ^C, a supervisor's SIGTERM: forwarded to the dead agent, ignored.
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			done <- err
			t.Logf("exec ended on SIGINT/SIGTERM: %v", err)
		case <-time.After(3 * time.Second):
			t.Errorf("HANG: exec ignores SIGINT and SIGTERM while it waits for the pipe")
		}
	}
}

// ^Z, then bg, while the relay sits in a read of the terminal (the usual
// idle case): the read restarted after SIGCONT from the background, and
// the kernel stopped exec again with SIGTTIN, leaving the agent
// unsupervised. exec ignores SIGTTIN now, and waits for the foreground.
func TestExecSuspendThenBackground(t *testing.T) {
	_, err := exec.LookPath("perl")
	harness.Require(t, err == nil, "needs perl (Debian: perl-base)")
	e := setup(t)
	ptmx, pts, screen := newPty(t)
	const shell = `
use POSIX;
$SIG{TTOU} = 'IGNORE';
$| = 1;
my $pid = fork();
if ($pid == 0) { setpgid(0, 0); exec @ARGV; exit 127 }
setpgid($pid, $pid);
tcsetpgrp(0, $pid);
waitpid($pid, WUNTRACED);
print "FIRST-STOP:" . WSTOPSIG(${^CHILD_ERROR_NATIVE}) . "\n";
tcsetpgrp(0, getpgrp());
kill('CONT', -$pid);
print "BG\n";
waitpid($pid, WUNTRACED);
my $st = ${^CHILD_ERROR_NATIVE};
if (WIFSTOPPED($st)) { print "JOB-STOPPED:sig" . WSTOPSIG($st) . "\n"; sleep 1; kill('KILL', -$pid); waitpid($pid, 0) }
else { print "JOB-EXIT:" . WEXITSTATUS($st) . "\n" }
`
	cmd := exec.Command("perl", "-e", shell, e.d.Bin, "--config", e.d.ConfigPath, "exec", "--agent", "analyst",
		"--parent", e.cg.Rel("exec"), "--user", "nobody", "--", "perl", "-e", `$|=1; print "AGENT-READY\n"; sleep 4; print "AGENT-OUT\n"`)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		killExecCgroups(e)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	if !harness.WaitFor(10*time.Second, func() bool { return strings.Contains(screen.String(), "AGENT-READY") }) {
		t.Fatalf("agent did not start:\n%s", screen.String())
	}
	time.Sleep(300 * time.Millisecond) // the relay is in read(0)
	ptmx.Write([]byte{0x1a})           // ^Z
	if !harness.WaitFor(8*time.Second, func() bool { return strings.Contains(screen.String(), "JOB-") }) {
		t.Fatalf("no result:\n%s", screen.String())
	}
	out := screen.String()
	t.Logf("terminal:\n%s", out)
	if !strings.Contains(out, "JOB-EXIT:0") {
		t.Errorf("^Z then bg: exec did not run on in the background")
	}
}

// TestFailClosed kills the engine under a stream of agent connections and
// restarts it: no connection may ever reach the target directly.
func TestFailClosed(t *testing.T) {
	e := setup(t)
	agent := e.agentCgroup(t, "agents/a", "analyst")

	var (
		stop                        atomic.Bool
		directN, relayedN, refusedN atomic.Int64
		wg                          sync.WaitGroup
		phase                       atomic.Value // what the daemon is doing
		directs                     []string     // the direct ones, to say when and how
		mu                          sync.Mutex
	)
	phase.Store("running")
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			res := harness.Dial(t, agent, "tcp4", e.echo.String())
			switch {
			case direct(res):
				directN.Add(1)
				mu.Lock()
				directs = append(directs, fmt.Sprintf("%s: %+v", phase.Load(), res))
				mu.Unlock()
			case relayed(res):
				relayedN.Add(1)
				if strings.TrimSpace(res.Reply) == "peer="+res.Local {
					// The engine's upstream socket got the agent's port.
					t.Logf("relayed, though the target saw the agent's address (%s: %+v)", phase.Load(), res)
				}
			default:
				refusedN.Add(1)
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	phase.Store("killing")
	e.d.Kill()
	phase.Store("down")
	time.Sleep(500 * time.Millisecond)
	if res := harness.Dial(t, agent, "tcp4", e.echo.String()); !strings.Contains(res.Err, "connection refused") {
		t.Errorf("engine down: %+v, want connection refused", res)
	}
	if out, _ := e.d.CLI("status"); !strings.Contains(out, "not running") || !strings.Contains(out, "refused until the daemon runs again") {
		t.Errorf("status with the engine down:\n%s", out)
	}
	// Nobody else may take the engine's port meanwhile, and receive the
	// agents' connections; the daemon's own cgroup binds it again below.
	cmd := harness.Command(t, e.cg.Mkdir(t, "squatter"), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), listenEnv+"="+engineAddr(t, e.d))
	if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), "operation not permitted") {
		t.Errorf("a non-agent listening on the engine's port while the daemon is down: %q %v, want EPERM", out, err)
	}
	phase.Store("starting")
	e.d.Start()
	phase.Store("restarted")
	time.Sleep(500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	t.Logf("during kill/restart: relayed=%d refused=%d direct=%d", relayedN.Load(), refusedN.Load(), directN.Load())
	if directN.Load() != 0 {
		t.Fatalf("%d agent connections reached the target directly (daemon phase: dial result):\n%s", directN.Load(), strings.Join(directs, "\n"))
	}
	if refusedN.Load() == 0 || relayedN.Load() == 0 {
		t.Errorf("expected both refused and relayed connections")
	}
	if res := harness.Dial(t, agent, "tcp4", e.echo.String()); !relayed(res) {
		t.Fatalf("after restart: %+v, want relayed", res)
	}
}

func TestUninstall(t *testing.T) {
	e := setup(t)
	agent := e.agentCgroup(t, "agents/a", "analyst")
	if out, err := e.d.CLI("uninstall"); err == nil {
		t.Fatalf("uninstall with the daemon running must refuse:\n%s", out)
	}
	e.d.Stop()
	if out, err := e.d.CLI("uninstall"); err != nil {
		t.Fatalf("uninstall: %v\n%s", err, out)
	}
	if harness.Exists(e.d.PinDir) {
		t.Error("pins remain after uninstall")
	}
	out, _ := e.d.CLI("status")
	if !strings.Contains(out, "no programs attached") {
		t.Errorf("status after uninstall:\n%s", out)
	}
	ok := harness.WaitFor(3*time.Second, func() bool {
		return direct(harness.Dial(t, agent, "tcp4", e.echo.String()))
	})
	if !ok {
		t.Error("programs still attached after uninstall")
	}
	// Nothing of ours is left attached to the cgroup.
	if b, err := exec.Command("bpftool", "cgroup", "show", e.cg.Root).CombinedOutput(); err == nil && strings.Contains(string(b), "interlock") {
		t.Errorf("bpftool still shows programs:\n%s", b)
	}
}
