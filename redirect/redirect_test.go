package redirect_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/interlockhq/interlock/redirect"
	"github.com/interlockhq/interlock/test/harness"
)

func TestMain(m *testing.M) {
	harness.MaybeDial()
	os.Exit(m.Run())
}

// fakeEngine accepts redirected connections, looks each one up like the
// real engine does, and answers "engine\n".
type fakeEngine struct {
	r       *redirect.Redirector
	port4   uint16
	port6   uint16
	mu      sync.Mutex
	records []redirect.Record
	errs    []error
	close   func()
}

func startFakeEngine(t *testing.T) *fakeEngine {
	t.Helper()
	e := &fakeEngine{}
	ln4, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	e.close = func() { ln4.Close(); ln6.Close() }
	t.Cleanup(e.close)
	e.port4 = uint16(ln4.Addr().(*net.TCPAddr).Port)
	e.port6 = uint16(ln6.Addr().(*net.TCPAddr).Port)
	for _, ln := range []net.Listener{ln4, ln6} {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go e.handle(c)
			}
		}()
	}
	return e
}

func (e *fakeEngine) handle(c net.Conn) {
	defer c.Close()
	rec, err := e.r.Lookup(c.(*net.TCPConn))
	// The agent asks getpeername() right after connect, before it sends
	// its line.
	bufio.NewReader(c).ReadString('\n')
	if err == nil {
		// Like the engine at the end of a session; the agent's socket is
		// still open, so only Forget can make the record go away.
		if ferr := e.r.Forget(rec.Cookie); ferr != nil {
			err = ferr
		} else if _, lerr := e.r.Lookup(c.(*net.TCPConn)); !errors.Is(lerr, redirect.ErrNoRecord) {
			err = fmt.Errorf("record still found after Forget (%v)", lerr)
		}
	}
	e.mu.Lock()
	if err != nil {
		e.errs = append(e.errs, err)
	} else {
		e.records = append(e.records, rec)
	}
	e.mu.Unlock()
	c.Write([]byte("engine\n"))
}

func (e *fakeEngine) last(t *testing.T) redirect.Record {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.errs) > 0 {
		t.Fatalf("engine lookup failed: %v", e.errs)
	}
	if len(e.records) == 0 {
		t.Fatal("engine saw no connection")
	}
	return e.records[len(e.records)-1]
}

// upstream is a stand-in target that answers "direct\n": seeing that
// reply from an agent means the redirect failed open.
func upstream(t *testing.T, network, addr string) netip.AddrPort {
	t.Helper()
	return harness.LineServer(t, network, addr, "direct\n").Addr().(*net.TCPAddr).AddrPort()
}

type fixture struct {
	cg     *harness.Cgroups
	pinDir string
	eng    *fakeEngine
	r      *redirect.Redirector
	state  redirect.State
}

func setup(t *testing.T) *fixture {
	t.Helper()
	harness.RequirePrivileged(t)
	f := &fixture{cg: harness.NewCgroups(t), pinDir: harness.PinDir(t), eng: startFakeEngine(t)}
	f.install(t)
	f.state = redirect.State{
		Cgroups: map[uint64]string{},
		Levels:  map[uint64]int{},
		Agents:  map[string]redirect.Agent{"analyst": {Name: "analyst"}},
		Targets: map[netip.AddrPort]string{},
	}
	return f
}

func (f *fixture) install(t *testing.T) {
	t.Helper()
	r, err := redirect.Install(redirect.Config{
		CgroupPath:  f.cg.Root,
		PinDir:      f.pinDir,
		EnginePort4: f.eng.port4,
		EnginePort6: f.eng.port6,
		Mark:        0x494c,
	})
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	f.r = r
	f.eng.r = r
}

func (f *fixture) labelAgent(t *testing.T, rel, agent string) string {
	t.Helper()
	p := f.cg.Mkdir(t, rel)
	if err := redirect.SetLabel(p, agent); err != nil {
		t.Fatal(err)
	}
	id, err := redirect.CgroupID(p)
	if err != nil {
		t.Fatal(err)
	}
	f.state.Cgroups[id] = agent
	// With its depth, the kernel skips the levels without labels (the
	// label lifecycle test leaves depths out: every level searched).
	if redirect.MountAtGlobalRoot(f.cg.Mount) {
		f.state.Levels[id] = redirect.LabelLevel(f.cg.Mount, p)
	}
	return p
}

func (f *fixture) apply(t *testing.T) {
	t.Helper()
	if err := f.r.Apply(f.state); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

func TestPrivilegedRedirectAgentToEngine(t *testing.T) {
	f := setup(t)
	target4 := upstream(t, "tcp4", "127.0.0.1:0")
	target6 := upstream(t, "tcp6", "[::1]:0")
	f.state.Targets[target4] = "db4"
	f.state.Targets[target6] = "db6"
	agentCg := f.labelAgent(t, "agents/analyst", "analyst")
	plainCg := f.cg.Mkdir(t, "plain")
	f.apply(t)

	cases := []struct {
		name, network, addr string
		want                netip.AddrPort
		target              string
	}{
		{"ipv4", "tcp4", target4.String(), target4, "db4"},
		{"ipv6", "tcp6", target6.String(), target6, "db6"},
		{"v4-mapped", "tcp6-mapped", netip.AddrPortFrom(netip.AddrFrom16(target4.Addr().As16()), target4.Port()).String(), target4, "db4"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := harness.Dial(t, agentCg, tc.network, tc.addr)
			if res.Err != "" {
				t.Fatalf("agent dial: %s", res.Err)
			}
			if res.Reply != "engine\n" {
				t.Fatalf("agent reached %q, want the engine", res.Reply)
			}
			if got := netip.MustParseAddrPort(res.Remote); got.Addr().Unmap() != tc.want.Addr() || got.Port() != tc.want.Port() {
				t.Errorf("agent's getpeername = %s, want the original %s", got, tc.want)
			}
			rec := f.eng.last(t)
			if rec.OrigDst != tc.want {
				t.Errorf("record orig dst = %s, want %s", rec.OrigDst, tc.want)
			}
			if rec.PID != uint32(res.PID) {
				t.Errorf("record pid = %d, want %d", rec.PID, res.PID)
			}
			if rec.AgentID != redirect.AgentID("analyst") || rec.TargetID != redirect.TargetID(tc.target) {
				t.Errorf("record agent/target = %d/%d", rec.AgentID, rec.TargetID)
			}
			if id, _ := redirect.CgroupID(agentCg); rec.CgroupID != id {
				t.Errorf("record cgroup = %d, want %d", rec.CgroupID, id)
			}
		})
	}

	t.Run("direct dial of the engine finds no record", func(t *testing.T) {
		// Anything that reaches the listener without connect4's rewrite
		// (here this test process) has no record, whatever its address.
		c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", f.eng.port4))
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("ping\n"))
		bufio.NewReader(c).ReadString('\n')
		c.Close()
		f.eng.mu.Lock()
		defer f.eng.mu.Unlock()
		if len(f.eng.errs) != 1 || !errors.Is(f.eng.errs[0], redirect.ErrNoRecord) {
			t.Fatalf("engine lookup errors = %v, want one ErrNoRecord", f.eng.errs)
		}
		f.eng.errs = nil
	})

	t.Run("non-agent untouched", func(t *testing.T) {
		res := harness.Dial(t, plainCg, "tcp4", target4.String())
		if res.Reply != "direct\n" {
			t.Fatalf("non-agent reached %q (err %q), want the target directly", res.Reply, res.Err)
		}
	})

	t.Run("a deeper label in another branch", func(t *testing.T) {
		deep := f.labelAgent(t, "teams/x/y/bot", "analyst")
		f.apply(t)
		for _, cg := range []string{deep, agentCg} {
			if res := harness.Dial(t, cg, "tcp4", target4.String()); res.Reply != "engine\n" {
				t.Fatalf("agent in %s reached %q (err %q), want the engine", cg, res.Reply, res.Err)
			}
		}
		if res := harness.Dial(t, f.cg.Mkdir(t, "teams/x/y/other"), "tcp4", target4.String()); res.Reply != "direct\n" {
			t.Fatalf("non-agent at a labelled level reached %q (err %q), want the target directly", res.Reply, res.Err)
		}
		if len(f.state.Levels) == 0 {
			return // not in the initial cgroup namespace: every level is searched
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(f.pinDir, "unlabelled_levels"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		var skip uint32
		if err := m.Lookup(uint32(0), &skip); err != nil {
			t.Fatal(err)
		}
		want := uint32(0xfffffffe)
		for _, l := range f.state.Levels {
			want &^= 1 << l
		}
		if skip != want || len(f.state.Levels) != 2 {
			t.Errorf("unlabelled levels = %#x, want %#x (labels at %v)", skip, want, f.state.Levels)
		}
	})

	t.Run("nested cgroup inherits", func(t *testing.T) {
		child := f.cg.Mkdir(t, "agents/analyst/worker/deeper")
		res := harness.Dial(t, child, "tcp4", target4.String())
		if res.Reply != "engine\n" {
			t.Fatalf("nested agent reached %q (err %q), want the engine", res.Reply, res.Err)
		}
		if id, _ := redirect.CgroupID(child); f.eng.last(t).CgroupID != id {
			t.Errorf("record should carry the child's own cgroup id")
		}
	})
}

func TestPrivilegedEgress(t *testing.T) {
	f := setup(t)
	target := upstream(t, "tcp4", "127.0.0.1:0")
	other := upstream(t, "tcp4", "127.0.0.1:0")
	other6 := upstream(t, "tcp6", "[::1]:0")
	f.state.Targets[target] = "db"
	denyCg := f.labelAgent(t, "deny", "analyst")
	allowCg := f.labelAgent(t, "allow", "writer")
	f.state.Agents["writer"] = redirect.Agent{Name: "writer", EgressAllow: true}
	f.state.EnginePorts = []uint16{9999}
	f.apply(t)

	for _, addr := range []string{other.String(), other6.String()} {
		res := harness.Dial(t, denyCg, "tcp", addr)
		if !strings.Contains(res.Err, "operation not permitted") {
			t.Errorf("egress deny: dial %s = reply %q err %q, want EPERM", addr, res.Reply, res.Err)
		}
	}
	if res := harness.Dial(t, allowCg, "tcp", other.String()); res.Reply != "direct\n" {
		t.Errorf("egress allow: got %q err %q, want direct", res.Reply, res.Err)
	}
	// Targets are still redirected for an egress-allow agent.
	if res := harness.Dial(t, allowCg, "tcp", target.String()); res.Reply != "engine\n" {
		t.Errorf("egress allow agent to target: got %q err %q", res.Reply, res.Err)
	}

	// An explicit exception opens exactly one address:port.
	a := f.state.Agents["analyst"]
	a.Allow = []redirect.EgressRule{{Addr: other.Addr(), Port: other.Port()}}
	f.state.Agents["analyst"] = a
	f.apply(t)
	if res := harness.Dial(t, denyCg, "tcp", other.String()); res.Reply != "direct\n" {
		t.Errorf("egress exception: got %q err %q, want direct", res.Reply, res.Err)
	}
	if res := harness.Dial(t, denyCg, "tcp", other6.String()); !strings.Contains(res.Err, "operation not permitted") {
		t.Errorf("egress exception must not open other addresses: %+v", res)
	}

	// Engine ports are closed to agents even with egress allow.
	if res := harness.Dial(t, allowCg, "tcp", "127.0.0.1:9999"); !strings.Contains(res.Err, "operation not permitted") {
		t.Errorf("engine port: got %+v, want EPERM", res)
	}
}

func TestPrivilegedLabelLifecycle(t *testing.T) {
	f := setup(t)
	target := upstream(t, "tcp4", "127.0.0.1:0")
	f.state.Targets[target] = "db"
	cg := f.cg.Mkdir(t, "later")
	f.apply(t)
	if res := harness.Dial(t, cg, "tcp", target.String()); res.Reply != "direct\n" {
		t.Fatalf("unlabelled: got %+v", res)
	}
	if err := redirect.SetLabel(cg, "analyst"); err != nil {
		t.Fatal(err)
	}
	labels, err := redirect.ScanLabels(f.cg.Mount, f.cg.Root)
	if err != nil || len(labels) != 1 || labels[0].Agent != "analyst" || labels[0].Path != f.cg.Rel("later") {
		t.Fatalf("scan labels = %+v, %v", labels, err)
	}
	f.state.Cgroups[labels[0].ID] = labels[0].Agent
	f.apply(t)
	if res := harness.Dial(t, cg, "tcp", target.String()); res.Reply != "engine\n" {
		t.Fatalf("labelled: got %+v", res)
	}
	if err := redirect.RemoveLabel(cg); err != nil {
		t.Fatal(err)
	}
	delete(f.state.Cgroups, labels[0].ID)
	f.apply(t)
	if res := harness.Dial(t, cg, "tcp", target.String()); res.Reply != "direct\n" {
		t.Fatalf("unlabelled again: got %+v", res)
	}
}

func TestPrivilegedRestartAndUninstall(t *testing.T) {
	f := setup(t)
	target := upstream(t, "tcp4", "127.0.0.1:0")
	f.state.Targets[target] = "db"
	cg := f.labelAgent(t, "a", "analyst")
	f.apply(t)
	before, err := redirect.ReadStatus(f.pinDir)
	if err != nil {
		t.Fatal(err)
	}

	// Engine gone: the pinned programs keep redirecting to a closed port.
	f.r.Close()
	f.eng.close()
	if res := harness.Dial(t, cg, "tcp", target.String()); !strings.Contains(res.Err, "connection refused") {
		t.Fatalf("engine down: want connection refused, got %+v", res)
	}

	// A new engine (on new ports) takes over the pinned links.
	f.eng = startFakeEngine(t)

	// Restart: same pins, programs swapped in the same links, maps kept.
	f.install(t)
	after, err := redirect.ReadStatus(f.pinDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Links) != 9 || len(before.Links) != 9 {
		t.Fatalf("links before %d after %d, want 9 (connect4/6, sendmsg4/6, sock_create, bind4/6, getpeername4/6)", len(before.Links), len(after.Links))
	}
	for i := range after.Links {
		if after.Links[i].LinkID != before.Links[i].LinkID {
			t.Errorf("%s: restart replaced the link (%d → %d) instead of updating it", after.Links[i].Hook, before.Links[i].LinkID, after.Links[i].LinkID)
		}
		if after.Links[i].ProgID == before.Links[i].ProgID {
			t.Errorf("%s: restart did not swap the program", after.Links[i].Hook)
		}
	}
	if res := harness.Dial(t, cg, "tcp", target.String()); res.Reply != "engine\n" {
		t.Fatalf("after restart (maps kept): got %+v", res)
	}

	f.r.Close()
	if err := redirect.Uninstall(f.pinDir); err != nil {
		t.Fatal(err)
	}
	if harness.Exists(f.pinDir) {
		t.Error("pin directory still exists after uninstall")
	}
	if _, err := redirect.ReadStatus(f.pinDir); err == nil {
		t.Error("status still finds links after uninstall")
	}
	// Give the kernel a moment to release the links' last references.
	deadline := time.Now().Add(2 * time.Second)
	for {
		res := harness.Dial(t, cg, "tcp", target.String())
		if res.Reply == "direct\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after uninstall the agent is still redirected: %+v", res)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPrivilegedUpgradeDropsSockops installs over the pins an earlier
// version left: its sockops link (here a stand-in program) and its
// conn_by_peer map must go, so that no sockops program stays attached.
func TestPrivilegedUpgradeDropsSockops(t *testing.T) {
	harness.RequirePrivileged(t)
	cg := harness.NewCgroups(t)
	pinDir := harness.PinDir(t)
	eng := startFakeEngine(t)
	if err := os.MkdirAll(pinDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { redirect.Uninstall(pinDir) })

	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SockOps,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cg.Root, Attach: ebpf.AttachCGroupSockOps, Program: prog})
	if err != nil {
		t.Fatal(err)
	}
	info, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Pin(filepath.Join(pinDir, "link_sockops")); err != nil {
		t.Fatal(err)
	}
	l.Close()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 20, ValueSize: 64, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Pin(filepath.Join(pinDir, "conn_by_peer")); err != nil {
		t.Fatal(err)
	}
	m.Close()

	r, err := redirect.Install(redirect.Config{CgroupPath: cg.Root, PinDir: pinDir, EnginePort4: eng.port4, EnginePort6: eng.port6, Mark: 0x494c})
	if err != nil {
		t.Fatalf("install over an earlier version's pins: %v", err)
	}
	defer r.Close()
	for _, name := range []string{"link_sockops", "conn_by_peer"} {
		if harness.Exists(filepath.Join(pinDir, name)) {
			t.Errorf("%s is still pinned after the upgrade", name)
		}
	}
	if old, err := link.NewFromID(info.ID); err == nil {
		old.Close()
		t.Errorf("the earlier version's sockops link %d still exists", info.ID)
	}
}

// TestPrivilegedIncompatibleMapRecreatedAlone: a map whose layout changed
// between versions is recreated alone (agent cgroups stay), and the hooks
// keep their old programs and maps until Attach, after the daemon has
// applied its state to the new map: no moment in which the agent's
// target is unknown.
func TestPrivilegedIncompatibleMapRecreatedAlone(t *testing.T) {
	f := setup(t)
	target := upstream(t, "tcp4", "127.0.0.1:0")
	f.state.Targets[target] = "db"
	cg := f.labelAgent(t, "agents/a", "analyst")
	f.apply(t)
	f.r.Close()

	// Another version's targets map: another value size.
	pin := filepath.Join(f.pinDir, "targets")
	if err := os.Remove(pin); err != nil {
		t.Fatal(err)
	}
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 20, ValueSize: 8, MaxEntries: 16})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Pin(pin); err != nil {
		t.Fatal(err)
	}
	old.Close()

	r, err := redirect.Load(redirect.Config{CgroupPath: f.cg.Root, PinDir: f.pinDir, EnginePort4: f.eng.port4, EnginePort6: f.eng.port6, Mark: 0x494c})
	if err != nil {
		t.Fatalf("load over an incompatible map: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	f.r, f.eng.r = r, r
	if id, _ := redirect.CgroupID(cg); func() bool { ok, _ := redirect.AgentCgroupKnown(f.pinDir, id); return !ok }() {
		t.Error("the compatible agent_cgroups map was recreated too")
	}
	if res := harness.Dial(t, cg, "tcp4", target.String()); res.Reply != "engine\n" {
		t.Fatalf("between Load and Attach: agent reached %q (err %q), want the engine (old programs, old maps)", res.Reply, res.Err)
	}
	f.apply(t)
	if err := r.Attach(); err != nil {
		t.Fatal(err)
	}
	if res := harness.Dial(t, cg, "tcp4", target.String()); res.Reply != "engine\n" {
		t.Fatalf("after Attach: agent reached %q (err %q), want the engine", res.Reply, res.Err)
	}
}

// claimFor writes a cgroup of the test's subtree as the engine's into the
// pinned engine_cgroup map, as a daemon running in its own cgroup does
// (this test process may run in the root cgroup, which is never claimed).
func (f *fixture) claimFor(t *testing.T, rel string) string {
	t.Helper()
	p := f.cg.Mkdir(t, rel)
	id, err := redirect.CgroupID(p)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.LoadPinnedMap(filepath.Join(f.pinDir, "engine_cgroup"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Put(uint32(0), id); err != nil {
		t.Fatal(err)
	}
	return p
}
