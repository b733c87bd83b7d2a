package redirect_test

// Attacks on the redirect path from a review of the sock_diag record
// lookup and the unlabelled_levels mask, each one a scenario that failed
// before its fix. Run: go test -count=1 -v -run PrivilegedAttack ./redirect/

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/interlockhq/interlock/bpf"
	"github.com/interlockhq/interlock/redirect"
	"github.com/interlockhq/interlock/test/harness"
)

// helperEnv makes the test binary one of the helper processes below
// (attacks here, bind guard in bindguard_test.go).
const helperEnv = "INTERLOCK_REDIRECT_HELPER"

// init turns the test binary into a small helper process (it runs before
// TestMain's harness.MaybeDial).
func init() {
	switch os.Getenv(helperEnv) {
	case "":
		return
	case "victim":
		helperVictim()
	case "rstloop":
		helperRSTLoop()
	case "mptcp":
		helperMPTCP()
	case "overmount":
		helperOvermount()
	case "listen":
		// A local user trying to listen on the engine's port; with
		// HELPER_MARK, a process that sets the engine's mark first.
		var lc net.ListenConfig
		if m, err := strconv.ParseUint(os.Getenv("HELPER_MARK"), 0, 32); err == nil {
			lc.Control = func(_, _ string, c syscall.RawConn) error {
				return c.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(m)) })
			}
		}
		ln, err := lc.Listen(context.Background(), "tcp4", os.Getenv("HELPER_ADDR"))
		if err != nil {
			fmt.Printf("err %v\n", err)
			return
		}
		fmt.Printf("ok\n")
		ln.Close()
	case "squat":
		guardChildSquat()
	case "agentdial":
		guardChildAgentDial()
	case "enginelisten":
		guardChildEngineListen()
	case "bindvariants":
		guardChildBindVariants()
	case "owncgroup":
		own, err := redirect.OwnCgroup()
		self, _ := redirect.CgroupOf(os.Getpid())
		fmt.Printf("%s %s %v\n", own, self, err)
	case "sendclose":
		dst := netip.MustParseAddrPort(os.Getenv("HELPER_ADDR"))
		fd, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err := unix.Connect(fd, sa4(dst)); err != nil {
			fmt.Printf("err %v\n", err)
			return
		}
		unix.Write(fd, []byte("cancel!\n"))
		unix.Close(fd)
		fmt.Printf("ok\n")
	}
	os.Exit(0)
}

func sa4(ap netip.AddrPort) *unix.SockaddrInet4 {
	return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
}

// helperVictim: an ordinary agent client that happens to use local port
// HELPER_PORT (an attacker can force or predict the ephemeral port, see the
// report), connects to the target HELPER_ADDR and keeps the connection open
// until stdin closes.
func helperVictim() {
	port, _ := strconv.Atoi(os.Getenv("HELPER_PORT"))
	dst := netip.MustParseAddrPort(os.Getenv("HELPER_ADDR"))
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		err = unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
	}
	if err == nil {
		err = unix.Connect(fd, sa4(dst))
	}
	if err != nil {
		fmt.Printf("err %v\n", err)
		return
	}
	fmt.Printf("ok %d\n", os.Getpid())
	io.Copy(io.Discard, os.Stdin)
	unix.Close(fd)
}

// helperRSTLoop: connect to HELPER_ADDR (a target: redirected) HELPER_N times and
// abort each connection at once (SO_LINGER 0): a reset before the engine
// looks the connection up.
func helperRSTLoop() {
	n, _ := strconv.Atoi(os.Getenv("HELPER_N"))
	dst := netip.MustParseAddrPort(os.Getenv("HELPER_ADDR"))
	ok := 0
	for i := 0; i < n; i++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			continue
		}
		if unix.Connect(fd, sa4(dst)) == nil {
			ok++
		}
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		unix.Close(fd)
	}
	fmt.Printf("%d\n", ok)
}

// helperMPTCP: an MPTCP client to HELPER_ADDR; prints reply, getpeername, error.
func helperMPTCP() {
	dst := netip.MustParseAddrPort(os.Getenv("HELPER_ADDR"))
	out := map[string]string{}
	defer func() { json.NewEncoder(os.Stdout).Encode(out) }()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 262 /* IPPROTO_MPTCP */)
	if err != nil {
		out["err"] = "socket: " + err.Error()
		return
	}
	if err := unix.Connect(fd, sa4(dst)); err != nil {
		out["err"] = "connect: " + err.Error()
		return
	}
	if sa, err := unix.Getpeername(fd); err == nil {
		if s, ok := sa.(*unix.SockaddrInet4); ok {
			out["remote"] = netip.AddrPortFrom(netip.AddrFrom4(s.Addr), uint16(s.Port)).String()
		}
	}
	unix.Write(fd, []byte("ping\n"))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 3})
	buf := make([]byte, 64)
	n, _ := unix.Read(fd, buf)
	if n > 0 {
		out["reply"] = string(buf[:n])
	}
	unix.Close(fd)
}

// helperOvermount runs in a private mount namespace (unshare --mount
// --propagation private): a subtree of the cgroup2 hierarchy is
// bind-mounted over the cgroup2 mount point, as some container setups do,
// while the process stays in the initial cgroup namespace. It reports what
// the daemon would compute.
func helperOvermount() {
	mount, sub := os.Getenv("HELPER_MOUNT"), os.Getenv("HELPER_SUB")
	out := map[string]any{}
	defer func() { json.NewEncoder(os.Stdout).Encode(out) }()
	if err := unix.Mount(sub, mount, "", unix.MS_BIND, ""); err != nil {
		out["err"] = "bind mount: " + err.Error()
		return
	}
	m, err := redirect.Cgroup2Mount()
	if err != nil {
		out["err"] = err.Error()
		return
	}
	labels, err := redirect.ScanLabels(m, m)
	if err != nil {
		out["err"] = err.Error()
		return
	}
	levels := map[string]int{}
	for _, l := range labels {
		levels[strconv.FormatUint(l.ID, 10)] = l.Level() // as cmd/interlock/sync.go
	}
	rootIno, _ := redirect.CgroupID(m)
	out["mount"] = m
	out["global_root"] = redirect.MountAtGlobalRoot(m)
	out["levels"] = levels
	out["mount_ino"] = rootIno
}

// stubInstall installs at a fresh test cgroup with a hand-driven engine
// stub, one agent cgroup (rel) of "analyst" and one target, "db".
func stubInstall(t *testing.T, rel string) (r *redirect.Redirector, eng *engineStub, cg *harness.Cgroups, target netip.AddrPort, agent string) {
	t.Helper()
	harness.RequirePrivileged(t)
	cg = harness.NewCgroups(t)
	pinDir := harness.PinDir(t)
	eng = newEngineStub(t)
	r, err := redirect.Install(redirect.Config{CgroupPath: cg.Root, PinDir: pinDir, EnginePort4: eng.port4, EnginePort6: eng.port6, Mark: 0x494c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); redirect.Uninstall(pinDir) })
	target = upstream(t, "tcp4", "127.0.0.1:0")
	agent = cg.Mkdir(t, rel)
	id, _ := redirect.CgroupID(agent)
	if err := r.Apply(redirect.State{
		Cgroups: map[uint64]string{id: "analyst"},
		Agents:  map[string]redirect.Agent{"analyst": {Name: "analyst"}},
		Targets: map[netip.AddrPort]string{target: "db"},
	}); err != nil {
		t.Fatal(err)
	}
	return r, eng, cg, target, agent
}

// engineStub is a listener pair that the test accepts from by hand.
type engineStub struct {
	ln4, ln6     *net.TCPListener
	port4, port6 uint16
}

func newEngineStub(t *testing.T) *engineStub {
	t.Helper()
	l4, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l4.Close(); l6.Close() })
	return &engineStub{
		ln4: l4.(*net.TCPListener), ln6: l6.(*net.TCPListener),
		port4: uint16(l4.Addr().(*net.TCPAddr).Port), port6: uint16(l6.Addr().(*net.TCPAddr).Port),
	}
}

// serveEngineLine answers "engine\n" to every connection, without lookups.
func (e *engineStub) serveEngineLine() {
	go harness.ServeLine(e.ln4, "engine\n")
	go harness.ServeLine(e.ln6, "engine\n")
}

func addrs(c net.Conn) (peer, local netip.AddrPort) {
	return c.RemoteAddr().(*net.TCPAddr).AddrPort(), c.LocalAddr().(*net.TCPAddr).AddrPort()
}

func words(a netip.Addr) [4]uint32 {
	b := a.Unmap().As16()
	var w [4]uint32
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[i*4:])
	}
	return w
}

func tcpState(t *testing.T, c *net.TCPConn) uint8 {
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st uint8
	rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			st = info.State
		}
	})
	return st
}

// 1. Upgrading from the previous commit makes the pinned `verdicts` map
// incompatible (V_MAX 7 → 5). load() then deletes and recreates EVERY
// pinned map, so agent_cgroups and targets are empty, and converge() swaps
// the new programs into the live links before the daemon's first Apply:
// agents reach targets directly until then.
func TestPrivilegedAttackUpgradeFailsOpen(t *testing.T) {
	harness.RequirePrivileged(t)
	cg := harness.NewCgroups(t)
	pinDir := harness.PinDir(t)
	if err := os.MkdirAll(pinDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { redirect.Uninstall(pinDir) })
	eng := newEngineStub(t)
	eng.serveEngineLine()
	target := upstream(t, "tcp4", "127.0.0.1:0")
	agentCg := cg.Mkdir(t, "agents/a")
	agentID, _ := redirect.CgroupID(agentCg)

	// The previous daemon (commit e89f5f5): its own object, its pins.
	obj, err := exec.Command("git", "-C", "..", "show", "e89f5f5:bpf/redirect_bpfel.o").Output()
	harness.Require(t, err == nil, fmt.Sprintf("needs the previous version's BPF object from git history (git show e89f5f5:bpf/redirect_bpfel.o: %v)", err))
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(obj))
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]any{"engine_port4": eng.port4, "engine_port6": eng.port6, "engine_mark": uint32(0x494c)} {
		if err := spec.Variables[name].Set(v); err != nil {
			t.Fatal(err)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pinDir}})
	if err != nil {
		t.Fatal(err)
	}
	for name, typ := range map[string]ebpf.AttachType{
		"connect4": ebpf.AttachCGroupInet4Connect, "connect6": ebpf.AttachCGroupInet6Connect,
		"sendmsg4": ebpf.AttachCGroupUDP4Sendmsg, "sendmsg6": ebpf.AttachCGroupUDP6Sendmsg,
		"sock_create": ebpf.AttachCGroupInetSockCreate, "sockops": ebpf.AttachCGroupSockOps,
		"getpeername4": ebpf.AttachCgroupInet4GetPeername, "getpeername6": ebpf.AttachCgroupInet6GetPeername,
	} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cg.Root, Attach: typ, Program: coll.Programs["interlock_"+name]})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Pin(filepath.Join(pinDir, "link_"+name)); err != nil {
			t.Fatal(err)
		}
		l.Close()
	}
	if err := coll.Maps["agent_cgroups"].Put(agentID, bpf.RedirectAgentInfo{AgentId: redirect.AgentID("analyst")}); err != nil {
		t.Fatal(err)
	}
	if err := coll.Maps["targets"].Put(bpf.RedirectAddrKey{Ip6: words(target.Addr()), Port: target.Port()}, redirect.TargetID("db")); err != nil {
		t.Fatal(err)
	}
	coll.Close()
	if res := harness.Dial(t, agentCg, "tcp4", target.String()); res.Reply != "engine\n" {
		t.Fatalf("previous version: agent reached %q (err %q), want the engine", res.Reply, res.Err)
	}

	// The upgraded daemon starts: Load and Attach with nothing applied in
	// between (runDaemon applies its state there; this is the worst case).
	var logBuf syncBuf
	r, err := redirect.Install(redirect.Config{
		CgroupPath: cg.Root, PinDir: pinDir, EnginePort4: eng.port4, EnginePort6: eng.port6, Mark: 0x494c,
		Log: slog.New(slog.NewTextHandler(&logBuf, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	t.Logf("install log:\n%s", logBuf.String())
	if v, err := r.Verdicts(); err != nil || v["engine_bind_denied"] != 0 {
		t.Errorf("after the upgrade engine_bind_denied = %d (%v), want 0: the slot held the old record_rekeyed count", v["engine_bind_denied"], err)
	}
	res := harness.Dial(t, agentCg, "tcp4", target.String())
	if res.Reply == "direct\n" {
		t.Errorf("FAIL OPEN: between Install and the first Apply of an upgrade from e89f5f5 the agent reached the target directly (pinned maps recreated empty: %v)",
			strings.Contains(logBuf.String(), "incompatible"))
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// 2. The cookie comes from whatever socket holds the 4-tuple when the
// engine asks, not from the peer of the accepted connection. A non-agent
// process connects straight to the engine port, sends bytes and resets its
// socket; an agent's redirected socket then takes the same local port.
// The engine's lookup for the attacker's accepted connection returns the
// agent's record, and ending that session deletes the agent's record.
func TestPrivilegedAttackAcceptLookupTOCTOU(t *testing.T) {
	r, eng, _, target, victimCg := stubInstall(t, "agents/victim")

	// Attacker: this test process, in no agent cgroup (not redirected).
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	lsa, _ := unix.Getsockname(fd)
	port := lsa.(*unix.SockaddrInet4).Port
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(eng.port4), Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	payload := "attacker bytes, relayed as the victim\n"
	unix.Write(fd, []byte(payload))
	cAtt, err := eng.ln4.AcceptTCP() // accepted; the engine has not looked it up yet
	if err != nil {
		t.Fatal(err)
	}
	defer cAtt.Close()
	unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	unix.Close(fd) // RST: the 4-tuple is free again
	time.Sleep(20 * time.Millisecond)

	// Victim: an agent's redirected connection that gets the same local port.
	cmd := harness.Command(t, victimCg, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=victim", "HELPER_PORT="+strconv.Itoa(port), "HELPER_ADDR="+target.String())
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if !strings.HasPrefix(line, "ok") {
		t.Fatalf("victim: %q", line)
	}
	cVic, err := eng.ln4.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer cVic.Close()

	// The engine now handles the attacker's connection.
	peer, local := addrs(cAtt)
	rec, err := r.Lookup(cAtt)
	t.Logf("attacker conn %s→%s: TCP state %d (7 = CLOSE) at lookup; lookup = %+v, %v", peer, local, tcpState(t, cAtt), rec, err)
	if err == nil {
		buf := make([]byte, 128)
		n, _ := cAtt.Read(buf)
		t.Errorf("IMPERSONATION: a non-redirected connection got agent %d / target %d (victim pid %d); its buffered bytes %q would be relayed upstream as that agent",
			rec.AgentID, rec.TargetID, rec.PID, buf[:n])
		// The attacker's session ends at once; the engine forgets "its" record.
		r.Forget(rec.Cookie)
		if _, err := r.Lookup(cVic); errors.Is(err, redirect.ErrNoRecord) {
			t.Errorf("...and the victim's own connection is then refused: %v", err)
		}
	}
}

func countMap(t *testing.T, p string) int {
	m, err := ebpf.LoadPinnedMap(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var k uint64
	var v bpf.RedirectConnRecord
	n := 0
	it := m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	return n
}

// 3. Records of connections reset before the engine looks them up have
// no session to delete them (the sockops close hook that did is gone);
// without Sweep only LRU eviction of the shared 64k map removes them.
func TestPrivilegedAttackRecordLeak(t *testing.T) {
	f := setup(t)
	target := upstream(t, "tcp4", "127.0.0.1:0")
	f.state.Targets[target] = "db"
	cg := f.labelAgent(t, "agents/a", "analyst")
	f.apply(t)
	before := countMap(t, filepath.Join(f.pinDir, "conn_by_cookie"))
	const n = 300
	cmd := harness.Command(t, cg, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=rstloop", "HELPER_N="+strconv.Itoa(n), "HELPER_ADDR="+target.String())
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // let the engine finish its lookups
	// The daemon sweeps periodically; two sweeps remove what no session
	// claims, and keep what one does.
	m, err := ebpf.LoadPinnedMap(filepath.Join(f.pinDir, "conn_by_cookie"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var keep uint64
	var rec bpf.RedirectConnRecord
	m.Iterate().Next(&keep, &rec)
	for range 2 {
		if _, err := f.r.Sweep(func() map[uint64]struct{} { return map[uint64]struct{}{keep: {}} }); err != nil {
			t.Fatal(err)
		}
	}
	if keep == 0 {
		t.Fatal("no record left to sweep")
	}
	if err := m.Lookup(keep, &rec); err != nil {
		t.Errorf("the record a session claims was swept: %v", err)
	}
	after := countMap(t, filepath.Join(f.pinDir, "conn_by_cookie")) - 1 // the claimed one
	t.Logf("connects completed: %s; records before %d, after %d (the agent process and all its sockets are gone)", strings.TrimSpace(string(out)), before, after)
	if after-before > n/10 {
		t.Errorf("LEAK: %d of %d records of an exited agent's connections remain in conn_by_cookie", after-before, n)
	}
}

// 4. The pinned unlabelled_levels mask is trusted across restarts. Any
// agent_cgroups change made while it was not maintained (a downgrade to
// e89f5f5 and back, once the verdicts incompatibility is fixed) leaves
// agents at newly used levels unseen until the first Apply.
func TestPrivilegedAttackStaleMaskAfterRestart(t *testing.T) {
	f := setup(t)
	if !redirect.MountAtGlobalRoot(f.cg.Mount) {
		harness.Require(t, false, "needs the initial cgroup namespace with the cgroup2 mount at the real root (depths are used only there)")
	}
	target := upstream(t, "tcp4", "127.0.0.1:0")
	f.state.Targets[target] = "db"
	f.labelAgent(t, "a", "analyst")
	f.apply(t)
	f.r.Close()
	// A writer that does not know the mask (the previous version's Apply).
	deep := f.cg.Mkdir(t, "x/y/z/b")
	id, _ := redirect.CgroupID(deep)
	m, err := ebpf.LoadPinnedMap(filepath.Join(f.pinDir, "agent_cgroups"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Put(id, bpf.RedirectAgentInfo{AgentId: redirect.AgentID("analyst")}); err != nil {
		t.Fatal(err)
	}
	m.Close()
	f.install(t) // restart, before the first Apply
	if res := harness.Dial(t, deep, "tcp4", target.String()); res.Reply == "direct\n" {
		t.Errorf("FAIL OPEN (restart window): agent_cgroups holds %s but the pinned mask skips its level", deep)
	}
}

// 5. MountAtGlobalRoot takes the FIRST mountinfo line for the mount point;
// with a subtree bind-mounted over it (initial cgroup namespace), the
// visible mount is the subtree, depths come out too small and the mask
// skips the agent's real level.
func TestPrivilegedAttackOvermountDepth(t *testing.T) {
	f := setup(t)
	target := upstream(t, "tcp4", "127.0.0.1:0")
	f.state.Targets[target] = "db"
	agent := f.cg.Mkdir(t, "agents/a")
	if err := redirect.SetLabel(agent, "analyst"); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=overmount", "HELPER_MOUNT="+f.cg.Mount, "HELPER_SUB="+f.cg.Root)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("overmount helper: %v", err)
	}
	var res struct {
		Mount      string         `json:"mount"`
		GlobalRoot bool           `json:"global_root"`
		Levels     map[string]int `json:"levels"`
		MountIno   uint64         `json:"mount_ino"`
		Err        string         `json:"err"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.Err != "" {
		t.Fatalf("overmount helper: %s %v", out, err)
	}
	t.Logf("daemon's view under the overmount: %+v (a stat of the mount gives inode %d; the global root is 1)", res, res.MountIno)
	if !res.GlobalRoot {
		return // the gate held
	}
	t.Errorf("MountAtGlobalRoot = true for a subtree mounted over the cgroup2 mount point (its inode is %d, the root's is 1)", res.MountIno)
	id, _ := redirect.CgroupID(agent)
	f.state.Cgroups[id] = "analyst"
	f.state.Levels[id] = res.Levels[strconv.FormatUint(id, 10)]
	f.apply(t)
	if d := harness.Dial(t, agent, "tcp4", target.String()); d.Reply == "direct\n" {
		t.Errorf("FAIL OPEN: MountAtGlobalRoot=true, depth computed %d, real %d: the agent reached the target directly",
			f.state.Levels[id], redirect.LabelLevel(f.cg.Mount, agent))
	}
}

// 6. MPTCP agents (allowed by sock_create "like TCP").
func TestPrivilegedAttackMPTCP(t *testing.T) {
	f := setup(t)
	if b, _ := os.ReadFile("/proc/sys/net/mptcp/enabled"); strings.TrimSpace(string(b)) != "1" {
		harness.Require(t, false, "needs MPTCP (net.mptcp.enabled=1)")
	}
	target := upstream(t, "tcp4", "127.0.0.1:0")
	f.state.Targets[target] = "db"
	cg := f.labelAgent(t, "agents/a", "analyst")
	f.apply(t)
	cmd := harness.Command(t, cg, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=mptcp", "HELPER_ADDR="+target.String())
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	var res map[string]string
	json.Unmarshal(out, &res)
	f.eng.mu.Lock()
	errs, recs := f.eng.errs, f.eng.records
	f.eng.mu.Unlock()
	t.Logf("mptcp agent: %v; engine records %d, errors %v", res, len(recs), errs)
	if res["reply"] == "direct\n" {
		t.Errorf("FAIL OPEN: MPTCP agent reached the target directly")
	}
	if res["reply"] != "engine\n" || len(errs) > 0 {
		t.Errorf("MPTCP agent not served (fail closed): %v %v", res, errs)
	}
	if res["remote"] != target.String() {
		t.Logf("note: getpeername on the MPTCP socket shows %s, not the original %s", res["remote"], target)
	}
}

// 7. A label at level 32 or deeper would never be found (find_agent stops
// at level 31): labelling such a cgroup is refused.
func TestPrivilegedAttackDeepLabel(t *testing.T) {
	f := setup(t)
	rel := strings.Repeat("d/", 40)
	p := f.cg.Mkdir(t, strings.TrimSuffix(rel, "/"))
	level := redirect.LabelLevel(f.cg.Mount, p)
	if level <= redirect.MaxLabelLevel {
		t.Fatalf("test cgroup at level %d is not deep enough", level)
	}
	if err := redirect.SetLabel(p, "analyst"); err == nil {
		t.Errorf("labelling a cgroup at level %d succeeded; the kernel searches down to level %d, so its processes would not be agents", level, redirect.MaxLabelLevel)
	}
}

// Sound check: a client that sends and closes (FIN) before the engine looks
// it up (a PostgreSQL CancelRequest) is still found: its FIN_WAIT2/TIME_WAIT
// socket keeps the cookie.
func TestPrivilegedAttackSendAndCloseFound(t *testing.T) {
	r, eng, _, target, agent := stubInstall(t, "agents/a")
	cmd := harness.Command(t, agent, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=sendclose", "HELPER_ADDR="+target.String())
	out, err := cmd.Output()
	if err != nil || !strings.HasPrefix(string(out), "ok") {
		t.Fatalf("client: %s %v", out, err)
	}
	c, err := eng.ln4.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(200 * time.Millisecond)
	rec, err := r.Lookup(c)
	if err != nil {
		t.Fatalf("send-and-close client not found: %v", err)
	}
	t.Logf("found after the client closed: %+v", rec)
}

// 8. While the daemon is down the pinned programs keep rewriting agents'
// target connections to 127.0.0.1:<engine port>. A local user who could
// listen there would receive them; binding the engine's ports needs the
// engine's mark.
func TestPrivilegedAttackEnginePortSquat(t *testing.T) {
	f := setup(t)
	target := upstream(t, "tcp4", "127.0.0.1:0")
	f.state.Targets[target] = "db"
	cg := f.labelAgent(t, "agents/a", "analyst")
	plain := f.cg.Mkdir(t, "plain")
	f.apply(t)
	engineCg := f.claimFor(t, "engine")
	f.r.Close()
	f.eng.close() // daemon stopped
	engineAddr := fmt.Sprintf("127.0.0.1:%d", f.eng.port4)
	for _, addr := range []string{engineAddr, fmt.Sprintf("0.0.0.0:%d", f.eng.port4)} {
		cmd := harness.Command(t, plain, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"=listen", "HELPER_ADDR="+addr)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "operation not permitted") {
			t.Errorf("a non-agent process listening on the engine's port %s: %q, want EPERM", addr, out)
		}
	}
	if res := harness.Dial(t, cg, "tcp4", target.String()); !strings.Contains(res.Err, "connection refused") {
		t.Errorf("engine down: agent's target connection = %+v, want connection refused", res)
	}
	// Nor with the engine's mark: CAP_NET_RAW suffices to set one. Only
	// the engine's cgroup may.
	cmd := harness.Command(t, plain, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=listen", "HELPER_ADDR="+engineAddr, "HELPER_MARK=0x494c")
	if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), "operation not permitted") {
		t.Errorf("listening on the engine's port with the engine's mark from another cgroup: %q %v, want EPERM", out, err)
	}
	cmd = harness.Command(t, engineCg, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=listen", "HELPER_ADDR="+engineAddr)
	if out, err := cmd.Output(); err != nil || !strings.HasPrefix(string(out), "ok") {
		t.Errorf("listening on the engine's port from the engine's cgroup: %q %v", out, err)
	}
}

// io_uring connects without connect(2): from the submitting task, from an
// io-wq worker thread (IOSQE_ASYNC) and from an SQPOLL kernel thread. The
// hooks must see the agent every time (they take the cgroup of the task
// that submitted the request).
func TestPrivilegedIOUringConnect(t *testing.T) {
	_, eng, _, target, agent := stubInstall(t, "agents/analyst")
	eng.serveEngineLine()
	other := upstream(t, "tcp4", "127.0.0.1:0")
	for _, mode := range []string{"tcp4-io_uring", "tcp4-io_uring-async", "tcp4-io_uring-sqpoll"} {
		res := harness.Dial(t, agent, mode, target.String())
		// Where io_uring is off, agents cannot use it either; CI has it.
		harness.Require(t, !strings.Contains(res.Err, harness.ErrNoIOUring.Error()), mode+": "+res.Err)
		if res.Reply != "engine\n" {
			t.Errorf("%s to the target: %+v, want the engine", mode, res)
		}
		if res := harness.Dial(t, agent, mode, other.String()); !strings.Contains(res.Err, "operation not permitted") {
			t.Errorf("%s to a non-target: %+v, want EPERM", mode, res)
		}
	}
}
