package redirect_test

// The bind hooks that keep everyone but the engine off its ports, from a
// review of their first version. Each test failed while the problem it
// names existed. Run: go test -count=1 -v -run PrivilegedGuard ./redirect/

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/interlockhq/interlock/engine"
	"github.com/interlockhq/interlock/redirect"
	"github.com/interlockhq/interlock/test/harness"
)

// guardChildSquat: listen on HELPER_ADDR (with SO_MARK HELPER_MARK when set), print
// "ok" or the error, then accept one connection for up to 5 s and print
// the first line it sends.
func guardChildSquat() {
	ap := netip.MustParseAddrPort(os.Getenv("HELPER_ADDR"))
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		fmt.Printf("err socket: %v\n", err)
		return
	}
	if m, perr := strconv.ParseUint(os.Getenv("HELPER_MARK"), 0, 32); perr == nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(m)); err != nil {
			fmt.Printf("err SO_MARK: %v\n", err)
			return
		}
	}
	if err := unix.Bind(fd, sa4(ap)); err != nil {
		fmt.Printf("err bind: %v\n", err)
		return
	}
	if err := unix.Listen(fd, 16); err != nil {
		fmt.Printf("err listen: %v\n", err)
		return
	}
	fmt.Printf("ok\n")
	os.Stdout.Sync()
	f := os.NewFile(uintptr(fd), "squat")
	ln, err := net.FileListener(f)
	if err != nil {
		fmt.Printf("err %v\n", err)
		return
	}
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		fmt.Printf("accept %v\n", err)
		return
	}
	c.SetDeadline(time.Now().Add(3 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Write([]byte("squatter\n"))
	fmt.Printf("got %q\n", line)
}

// guardChildAgentDial: connect to HELPER_ADDR, send a secret line, print the reply.
func guardChildAgentDial() {
	c, err := net.DialTimeout("tcp4", os.Getenv("HELPER_ADDR"), 3*time.Second)
	if err != nil {
		fmt.Printf("dial %v\n", err)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	c.Write([]byte("agent secret\n"))
	line, err := bufio.NewReader(c).ReadString('\n')
	fmt.Printf("reply %q %v\n", line, err)
}

// guardChildEngineListen: the engine's own Listen (engine.Server) with mark
// HELPER_MARK on HELPER_PORT4/HELPER_PORT6.
func guardChildEngineListen() {
	m, _ := strconv.ParseUint(os.Getenv("HELPER_MARK"), 0, 32)
	// As the daemon does before it listens.
	mount, err := redirect.Cgroup2Mount()
	var own string
	if err == nil {
		own, err = redirect.OwnCgroup()
	}
	var id uint64
	if err == nil {
		if id, err = redirect.EngineCgroup(mount, own); errors.Is(err, redirect.ErrSharedCgroup) {
			err = nil
		}
	}
	if err == nil {
		err = redirect.ClaimEnginePorts(os.Getenv("HELPER_PIN"), id)
	}
	if err != nil {
		fmt.Printf("err %v\n", err)
		return
	}
	srv, err := engine.NewServer(engine.Config{
		Listen4: "127.0.0.1:" + os.Getenv("HELPER_PORT4"), Listen6: "[::1]:" + os.Getenv("HELPER_PORT6"), Mark: uint32(m),
	}, nil, nil, nil, nil)
	if err == nil {
		err = srv.Listen()
	}
	if err != nil {
		fmt.Printf("err %v\n", err)
		return
	}
	fmt.Printf("ok\n")
}

// startSquat starts guardChildSquat in cgroup cg (or, cg "", as a plain child
// of this test process) via prefix (e.g. setpriv …) and waits for its
// first line.
func startSquat(t *testing.T, cg string, env []string, prefix ...string) (first string, rest func() string) {
	t.Helper()
	args := append(append([]string{}, prefix...), os.Args[0], "-test.run=^$")
	var cmd *exec.Cmd
	if cg != "" {
		cmd = harness.Command(t, cg, args[0], args[1:]...)
	} else {
		cmd = exec.Command(args[0], args[1:]...)
	}
	cmd.Env = append(append(os.Environ(), helperEnv+"=squat"), env...)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	r := bufio.NewReader(stdout)
	first, _ = r.ReadString('\n')
	return strings.TrimSpace(first), func() string {
		s, _ := r.ReadString('\n')
		return strings.TrimSpace(s)
	}
}

// R2-3. SO_MARK needs CAP_NET_RAW *or* CAP_NET_ADMIN since Linux 5.17
// (README: "setting a mark needs CAP_NET_ADMIN"). A process with only
// CAP_NET_RAW (a container's root with Docker's default capabilities and
// the host network, a monitoring tool) sets the engine's mark and binds
// its port. (An agent with CAP_NET_RAW likewise passes connect4's loop
// guard and reaches targets directly.)
func TestPrivilegedGuardMarkWithCapNetRawOnly(t *testing.T) {
	f := setup(t)
	target := upstream(t, "tcp4", "127.0.0.1:0")
	f.state.Targets[target] = "db"
	agent := f.labelAgent(t, "agents/a", "analyst")
	plain := f.cg.Mkdir(t, "plain")
	f.apply(t)
	f.claimFor(t, "engine")
	f.r.Close()
	f.eng.close()
	// A copy of the test binary that uid 65534 may execute.
	dir, err := os.MkdirTemp("", "guardChild-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "redirect.test")
	if b, err := os.ReadFile(os.Args[0]); err != nil || os.WriteFile(bin, b, 0o755) != nil {
		t.Fatal("copy test binary", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", f.eng.port4)
	drop := func(caps string) []string {
		return []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
			"--inh-caps=-all" + caps, "--ambient-caps=-all" + caps, "--bounding-set=-all" + caps, "--", bin}
	}
	// Control: no capabilities at all → EPERM.
	if first, _ := startSquat(t, plain, []string{"HELPER_ADDR=" + addr, "HELPER_MARK=0x494c"}, drop("")[:len(drop(""))-1]...); !strings.Contains(first, "SO_MARK") {
		t.Fatalf("control without capabilities: %q, want SO_MARK EPERM", first)
	}
	first, rest := startSquat(t, plain, []string{"HELPER_ADDR=" + addr, "HELPER_MARK=0x494c"}, drop(",+net_raw")[:len(drop(",+net_raw"))-1]...)
	if first != "ok" {
		t.Logf("uid 65534 with CAP_NET_RAW only: %s", first)
		return
	}
	res := harness.Dial(t, agent, "tcp4", target.String())
	t.Errorf("SQUAT: uid 65534 with only CAP_NET_RAW set the engine's mark and listened on its port; agent got %+v, squatter %s", res, rest())
}

// R2-4. The pinned bind hooks keep the previous run's mark as a constant.
// A restart with another engine.mark (config edit, or a default that
// changes) cannot bind the engine's ports at all: the daemon never starts
// again until `interlock uninstall` (which removes every pin: agents go
// direct until the next start attaches).
func TestPrivilegedGuardMarkChangeBlocksRestart(t *testing.T) {
	f := setup(t) // pinned with mark 0x494c
	plain := f.cg.Mkdir(t, "plain")
	f.r.Close()
	f.eng.close()
	run := func(mark string) string {
		cmd := harness.Command(t, plain, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"=enginelisten", "HELPER_MARK="+mark, "HELPER_PIN="+f.pinDir,
			"HELPER_PORT4="+strconv.Itoa(int(f.eng.port4)), "HELPER_PORT6="+strconv.Itoa(int(f.eng.port6)))
		out, _ := cmd.Output()
		return strings.TrimSpace(string(out))
	}
	if out := run("0x494c"); out != "ok" {
		t.Fatalf("restart with the same mark: %s", out)
	}
	if out := run("0x4c"); out != "ok" {
		t.Errorf("DAEMON CANNOT RESTART: engine.mark changed 0x494c → 0x4c while the old programs are pinned: %s", out)
	}
}

// guardChildBindVariants tries every way to bind HELPER_PORT4/HELPER_PORT6 it knows
// and prints the errors as JSON ("" = bound).
func guardChildBindVariants() {
	p4, _ := strconv.Atoi(os.Getenv("HELPER_PORT4"))
	p6, _ := strconv.Atoi(os.Getenv("HELPER_PORT6"))
	out := map[string]string{}
	try := func(name string, family, typ, proto int, sa unix.Sockaddr, opts ...int) {
		fd, err := unix.Socket(family, typ, proto)
		if err != nil {
			out[name] = "socket: " + err.Error()
			return
		}
		defer unix.Close(fd)
		for _, o := range opts {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, o, 1)
		}
		if family == unix.AF_INET6 {
			unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
		}
		if err := unix.Bind(fd, sa); err != nil {
			out[name] = err.Error()
			return
		}
		out[name] = ""
	}
	lo4 := [4]byte{127, 0, 0, 1}
	var any6, lo6, mapped [16]byte
	lo6[15] = 1
	copy(mapped[10:], []byte{0xff, 0xff, 127, 0, 0, 1})
	try("tcp4 127.0.0.1:p4", unix.AF_INET, unix.SOCK_STREAM, 0, &unix.SockaddrInet4{Port: p4, Addr: lo4})
	try("tcp4 0.0.0.0:p4 reuseport", unix.AF_INET, unix.SOCK_STREAM, 0, &unix.SockaddrInet4{Port: p4}, unix.SO_REUSEPORT, unix.SO_REUSEADDR)
	try("tcp4 127.0.0.2:p6", unix.AF_INET, unix.SOCK_STREAM, 0, &unix.SockaddrInet4{Port: p6, Addr: [4]byte{127, 0, 0, 2}})
	try("tcp6 [::1]:p6", unix.AF_INET6, unix.SOCK_STREAM, 0, &unix.SockaddrInet6{Port: p6, Addr: lo6})
	try("tcp6 [::]:p4 dual-stack", unix.AF_INET6, unix.SOCK_STREAM, 0, &unix.SockaddrInet6{Port: p4, Addr: any6})
	try("tcp6 [::ffff:127.0.0.1]:p4", unix.AF_INET6, unix.SOCK_STREAM, 0, &unix.SockaddrInet6{Port: p4, Addr: mapped})
	try("mptcp4 127.0.0.1:p4", unix.AF_INET, unix.SOCK_STREAM, 262, &unix.SockaddrInet4{Port: p4, Addr: lo4})
	try("mptcp6 [::ffff:127.0.0.1]:p4", unix.AF_INET6, unix.SOCK_STREAM, 262, &unix.SockaddrInet6{Port: p4, Addr: mapped})
	try("sctp4 127.0.0.1:p4", unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP, &unix.SockaddrInet4{Port: p4, Addr: lo4})
	json.NewEncoder(os.Stdout).Encode(out)
}

// Sound check: with the daemon down, every explicit bind() of the engine's
// ports from below the attach cgroup is refused, whatever the family,
// address, protocol or SO_REUSEPORT.
func TestPrivilegedGuardBindVariantsDenied(t *testing.T) {
	f := setup(t)
	plain := f.cg.Mkdir(t, "plain")
	f.r.Close()
	f.eng.close()
	cmd := harness.Command(t, plain, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=bindvariants",
		"HELPER_PORT4="+strconv.Itoa(int(f.eng.port4)), "HELPER_PORT6="+strconv.Itoa(int(f.eng.port6)))
	b, err := cmd.Output()
	if err != nil {
		t.Fatal(err, string(b))
	}
	var res map[string]string
	json.Unmarshal(b, &res)
	for name, e := range res {
		t.Logf("%-32s %s", name, e)
		if e == "" {
			t.Errorf("bound the engine's port: %s", name)
		}
	}
}

// TestPrivilegedGuardOutsideTheAttachSubtree: with the programs attached
// to a subtree (redirect.cgroup), a process outside it could listen on the
// engine's port while the daemon is down. The bind hooks attach higher up
// (redirect.guard_cgroup, the root in production; here the test's root).
func TestPrivilegedGuardOutsideTheAttachSubtree(t *testing.T) {
	harness.RequirePrivileged(t)
	cg := harness.NewCgroups(t)
	pinDir := harness.PinDir(t)
	eng := newEngineStub(t)
	attach := cg.Mkdir(t, "attach")
	outside := cg.Mkdir(t, "outside")
	r, err := redirect.Install(redirect.Config{CgroupPath: attach, GuardCgroupPath: cg.Root, PinDir: pinDir,
		EnginePort4: eng.port4, EnginePort6: eng.port6, Mark: 0x494c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); redirect.Uninstall(pinDir) })
	st, err := redirect.ReadStatus(pinDir)
	if err != nil {
		t.Fatal(err)
	}
	attachID, _ := redirect.CgroupID(attach)
	rootID, _ := redirect.CgroupID(cg.Root)
	for _, l := range st.Links {
		want := attachID
		if strings.HasPrefix(l.Hook, "bind") {
			want = rootID
		}
		if l.CgroupID != want {
			t.Errorf("%s attached at cgroup %d, want %d", l.Hook, l.CgroupID, want)
		}
	}
	r.Close()
	eng.ln4.Close()
	eng.ln6.Close()
	cmd := harness.Command(t, outside, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=listen", fmt.Sprintf("HELPER_ADDR=127.0.0.1:%d", eng.port4))
	if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), "operation not permitted") {
		t.Errorf("a process outside the attach subtree listening on the engine's port: %q %v, want EPERM", out, err)
	}
}

// TestPrivilegedGuardNeverClaimsTheRootCgroup: every process not put in a
// cgroup is in the root cgroup; claiming it would let all of them bind
// the engine's ports. A daemon there claims nothing (the mark stands in).
func TestPrivilegedGuardNeverClaimsTheRootCgroup(t *testing.T) {
	harness.RequirePrivileged(t)
	mount, err := redirect.Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := redirect.CgroupOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	claimed, _ := redirect.EngineCgroup(mount, rel)
	own, _ := redirect.CgroupID(filepath.Join(mount, rel))
	switch {
	case own == 1 && claimed != 0:
		t.Errorf("a daemon in the root cgroup claimed cgroup %d for the engine's ports", claimed)
	case own != 1 && claimed != own:
		t.Errorf("claimed cgroup %d, want the daemon's own %d (%s)", claimed, own, rel)
	}
}

// TestPrivilegedGuardOwnCgroupInANamespace: in a cgroup namespace of its
// own (a Kubernetes pod) the daemon sees itself at "/", which is the root
// cgroup's path on the host's mount: it would claim nothing. OwnCgroup
// reads its real cgroup from the initial namespace.
func TestPrivilegedGuardOwnCgroupInANamespace(t *testing.T) {
	harness.RequirePrivileged(t)
	cg := harness.NewCgroups(t)
	pod := cg.Mkdir(t, "pod")
	cmd := harness.Command(t, pod, "unshare", "--cgroup", os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=owncgroup")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v %s", err, out)
	}
	f := strings.Fields(string(out))
	if len(f) < 2 {
		t.Fatalf("helper: %q", out)
	}
	if want := strings.TrimPrefix(pod, cg.Mount); f[0] != want {
		t.Errorf("OwnCgroup in a cgroup namespace = %q, want %q (the namespace itself shows %q)", f[0], want, f[1])
	}
	if f[1] != "/" {
		t.Logf("note: /proc/self/cgroup in the namespace shows %q", f[1])
	}
}
