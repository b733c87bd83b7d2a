package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/interlockhq/interlock/engine/policy"
	"github.com/interlockhq/interlock/redirect"
	"github.com/interlockhq/interlock/test/harness"
)

// A label scan that cannot read part of the cgroup tree (EMFILE under
// load, a permission problem) returns what it could read. Applied as the
// whole truth, it deleted the unread agent cgroups from the kernel, and
// their processes reached targets directly until the next good scan; at a
// restart, before Attach, even through the old programs.
func TestPrivilegedIncompleteLabelScanKeepsAgents(t *testing.T) {
	harness.RequirePrivileged(t)
	cg := harness.NewCgroups(t)
	pinDir := harness.PinDir(t)
	eng4 := harness.LineServer(t, "tcp4", "127.0.0.1:0", "engine\n")
	eng6 := harness.LineServer(t, "tcp6", "[::1]:0", "engine\n")
	target := harness.LineServer(t, "tcp4", "127.0.0.1:0", "direct\n").Addr().(*net.TCPAddr).AddrPort()
	rcfg := redirect.Config{
		CgroupPath: cg.Root, PinDir: pinDir, Mark: 0x494c,
		EnginePort4: uint16(eng4.Addr().(*net.TCPAddr).Port), EnginePort6: uint16(eng6.Addr().(*net.TCPAddr).Port),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	agent := cg.Mkdir(t, "agents/w")
	if err := redirect.SetLabel(agent, "writer"); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse("sync.yaml", []byte(`version: 1
targets:
  - {name: db, protocol: tcp, address: "`+target.String()+`"}
agents:
  - {name: writer, roles: [writer], egress: allow}
roles:
  - name: writer
    rules:
      - {actions: [read], decision: allow}
`))
	if err != nil {
		t.Fatal(err)
	}
	mount, _ := redirect.Cgroup2Mount()
	scanFails := false
	newSync := func(r *redirect.Redirector) *kernelSync {
		return &kernelSync{
			r: r, mount: mount, root: cg.Root, levels: redirect.MountAtGlobalRoot(mount),
			pol: func() *policy.Policy { return pol }, dir: &directory{}, log: rcfg.Log, resolveEvery: time.Minute,
			scan: func(mount, root string) ([]redirect.LabelledCgroup, error) {
				if scanFails {
					return nil, errors.New("scan cgroup labels: cannot read 1 cgroups (test)")
				}
				return redirect.ScanLabels(mount, root)
			},
		}
	}
	dial := func(when, want string) {
		t.Helper()
		if res := harness.Dial(t, agent, "tcp4", target.String()); res.Reply != want {
			t.Errorf("%s: agent got %+v, want %q", when, res, want)
		}
	}

	r, err := redirect.Install(rcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { redirect.Uninstall(pinDir) })
	ks := newSync(r)
	if err := ks.tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	dial("after a good scan", "engine\n")

	scanFails = true
	if err := ks.tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	dial("FAIL OPEN: after a scan that could not read the agent's cgroup", "engine\n")
	r.Close()

	// A restart whose first scan fails: the kernel keeps the agent through
	// the old programs (before Attach) and the new ones.
	r2, err := redirect.Load(rcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	ks = newSync(r2)
	if err := ks.tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	dial("FAIL OPEN: restart with a failing scan, before Attach", "engine\n")
	if err := r2.Attach(); err != nil {
		t.Fatal(err)
	}
	dial("FAIL OPEN: restart with a failing scan, after Attach", "engine\n")

	// Once scans succeed again, a removed label is removed from the kernel.
	scanFails = false
	if err := redirect.RemoveLabel(agent); err != nil {
		t.Fatal(err)
	}
	if err := ks.tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	dial("after the label was removed and a scan succeeded", "direct\n")
}

// setLabelEnv makes the test binary set the label xattr on a cgroup the
// way any process may (no checks of ours) and exit: the test starts it as
// an unprivileged user.
const setLabelEnv = "INTERLOCK_TEST_SETLABEL"

func maybeSetLabel() {
	spec := os.Getenv(setLabelEnv)
	if spec == "" {
		return
	}
	path, agent, _ := strings.Cut(spec, "=")
	if err := unix.Setxattr(path, redirect.LabelXattr, []byte(agent), 0); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// A user who owns a cgroup (a systemd delegation) can set user.* xattrs
// on it and its children. Honoured, such a label let an agent relabel a
// child cgroup as a more privileged agent (the deeper label wins), and
// let any user make itself an agent, to be served with that agent's
// identity. Only labels on root-owned cgroups that only root may write
// count.
func TestPrivilegedUserLabelsAreIgnored(t *testing.T) {
	harness.RequirePrivileged(t)
	cg := harness.NewCgroups(t)
	pinDir := harness.PinDir(t)
	eng4 := harness.LineServer(t, "tcp4", "127.0.0.1:0", "engine\n")
	eng6 := harness.LineServer(t, "tcp6", "[::1]:0", "engine\n")
	target := harness.LineServer(t, "tcp4", "127.0.0.1:0", "direct\n").Addr().(*net.TCPAddr).AddrPort()
	other := harness.LineServer(t, "tcp4", "127.0.0.1:0", "other\n").Addr().(*net.TCPAddr).AddrPort()
	rcfg := redirect.Config{
		CgroupPath: cg.Root, PinDir: pinDir, Mark: 0x494c,
		EnginePort4: uint16(eng4.Addr().(*net.TCPAddr).Port), EnginePort6: uint16(eng6.Addr().(*net.TCPAddr).Port),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	pol, err := policy.Parse("labels.yaml", []byte(`version: 1
targets:
  - {name: db, protocol: tcp, address: "`+target.String()+`"}
agents:
  - {name: analyst, roles: [analyst], egress: deny}
  - {name: writer, roles: [analyst], egress: allow}
roles:
  - name: analyst
    rules:
      - {actions: [read], decision: allow}
`))
	if err != nil {
		t.Fatal(err)
	}
	const nobody = 65534
	// The operator's label on a root-owned cgroup; below it, a cgroup
	// delegated to an unprivileged user.
	analyst := cg.Mkdir(t, "agents/analyst")
	if err := redirect.SetLabel(analyst, "analyst"); err != nil {
		t.Fatal(err)
	}
	delegated := cg.Mkdir(t, "agents/analyst/delegated")
	// And a user's own cgroup outside every agent cgroup.
	user := cg.Mkdir(t, "users/u")
	for _, p := range []string{delegated, user} {
		if err := os.Chown(p, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	// The test binary, where the user may run it.
	dir, err := os.MkdirTemp("", "interlock-setlabel-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "setlabel")
	if b, err := os.ReadFile(os.Args[0]); err != nil || os.WriteFile(bin, b, 0o755) != nil {
		t.Fatalf("copy test binary: %v", err)
	}
	setAsUser := func(path, agent string) {
		t.Helper()
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), setLabelEnv+"="+path+"="+agent)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("uid %d could not label %s: %v %s", nobody, path, err, out)
		}
	}
	setAsUser(delegated, "writer")
	setAsUser(user, "writer")

	r, err := redirect.Install(rcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { redirect.Uninstall(pinDir) })
	defer r.Close()
	mount, _ := redirect.Cgroup2Mount()
	ks := &kernelSync{
		r: r, mount: mount, root: cg.Root, levels: redirect.MountAtGlobalRoot(mount),
		pol: func() *policy.Policy { return pol }, dir: &directory{}, log: rcfg.Log, resolveEvery: time.Minute,
	}
	if err := ks.tick(context.Background()); err != nil {
		t.Fatal(err)
	}

	// The delegated child stays analyst: egress deny, not writer's allow.
	if res := harness.Dial(t, delegated, "tcp4", other.String()); !strings.Contains(res.Err, "operation not permitted") {
		t.Errorf("ESCALATION: a user's label on its delegated child made it writer (egress allow): %+v", res)
	}
	if res := harness.Dial(t, delegated, "tcp4", target.String()); res.Reply != "engine\n" {
		t.Errorf("delegated child of an agent cgroup: %+v, want the engine", res)
	}
	// The user's own cgroup gains no identity: its processes are agents
	// with no roles and egress deny (a label set by root on a delegated
	// cgroup looks the same, and must not fail open).
	state, labels := ks.snapshot()
	userID, _ := redirect.CgroupID(user)
	if got := state.Cgroups[userID]; got != redirect.UntrustedAgent {
		t.Errorf("a user's self-made label: kernel agent %q, want %q", got, redirect.UntrustedAgent)
	}
	if res := harness.Dial(t, user, "tcp4", other.String()); !strings.Contains(res.Err, "operation not permitted") {
		t.Errorf("a user's self-made label: %+v to a non-target, want EPERM", res)
	}
	delegatedID, _ := redirect.CgroupID(delegated)
	if _, ok := state.Cgroups[delegatedID]; ok {
		t.Errorf("an ignored label below an honoured one reached the kernel: %v", state.Cgroups)
	}
	ignored := 0
	for _, l := range labels {
		if l.Ignored != "" {
			ignored++
			if !strings.Contains(l.Ignored, "owned by uid 65534") {
				t.Errorf("ignored label %s: reason %q", l.Path, l.Ignored)
			}
		}
	}
	if ignored != 2 {
		t.Errorf("labels reported as ignored: %d of %+v, want 2", ignored, labels)
	}

	// `interlock label` refuses such cgroups, and group-writable ones.
	if err := redirect.SetLabel(user, "analyst"); !errors.Is(err, redirect.ErrUntrustedLabel) {
		t.Errorf("SetLabel on a user's cgroup: %v, want ErrUntrustedLabel", err)
	}
	open := cg.Mkdir(t, "open")
	if err := os.Chmod(open, 0o775); err != nil {
		t.Fatal(err)
	}
	if err := redirect.SetLabel(open, "analyst"); !errors.Is(err, redirect.ErrUntrustedLabel) {
		t.Errorf("SetLabel on a group-writable cgroup: %v, want ErrUntrustedLabel", err)
	}
}

// Moving a process needs write access to the cgroup.procs of the
// destination and of the common ancestor, not of the source: a user who
// owns an ancestor of a labelled cgroup (a systemd delegation above it)
// makes a sibling cgroup and moves its agent processes there, or renames
// the cgroup away from a static path. Such labels are still honoured (the
// processes are intercepted while they stay), but reported; `interlock
// label` refuses them.
func TestPrivilegedEscapableLabelsReported(t *testing.T) {
	harness.RequirePrivileged(t)
	for _, static := range []bool{false, true} {
		t.Run(fmt.Sprintf("static=%v", static), func(t *testing.T) {
			cg := harness.NewCgroups(t)
			pinDir := harness.PinDir(t)
			eng4 := harness.LineServer(t, "tcp4", "127.0.0.1:0", "engine\n")
			eng6 := harness.LineServer(t, "tcp6", "[::1]:0", "engine\n")
			target := harness.LineServer(t, "tcp4", "127.0.0.1:0", "direct\n").Addr().String()
			rcfg := redirect.Config{
				CgroupPath: cg.Root, PinDir: pinDir, Mark: 0x494c,
				EnginePort4: uint16(eng4.Addr().(*net.TCPAddr).Port), EnginePort6: uint16(eng6.Addr().(*net.TCPAddr).Port),
				Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			}
			const nobody = 65534
			user := cg.Mkdir(t, "user") // delegated as systemd does it
			for _, f := range []string{"", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"} {
				if err := os.Chown(filepath.Join(user, f), nobody, nobody); err != nil {
					t.Fatal(err)
				}
			}
			agent := cg.Mkdir(t, "user/agent") // root-owned, 0755
			if err := redirect.SetLabel(agent, "analyst"); !errors.Is(err, redirect.ErrEscapableLabel) || !strings.Contains(err.Error(), "uid 65534") {
				t.Errorf("SetLabel below a delegated cgroup: %v, want ErrEscapableLabel naming uid 65534", err)
			}
			cgroups := ""
			if static {
				cgroups = ", cgroups: [" + cg.Rel("user/agent") + "]"
			} else if err := unix.Setxattr(agent, redirect.LabelXattr, []byte("analyst"), 0); err != nil {
				t.Fatal(err)
			}
			pol, err := policy.Parse("escapable.yaml", []byte(`version: 1
targets:
  - {name: db, protocol: tcp, address: "`+target+`"}
agents:
  - {name: analyst, roles: [analyst], egress: deny`+cgroups+`}
roles:
  - name: analyst
    rules:
      - {actions: [read], decision: allow}
`))
			if err != nil {
				t.Fatal(err)
			}
			r, err := redirect.Install(rcfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close(); redirect.Uninstall(pinDir) })
			mount, _ := redirect.Cgroup2Mount()
			ks := &kernelSync{
				r: r, mount: mount, root: cg.Root, levels: redirect.MountAtGlobalRoot(mount),
				pol: func() *policy.Policy { return pol }, dir: &directory{}, log: rcfg.Log, resolveEvery: time.Minute,
			}
			if err := ks.tick(context.Background()); err != nil {
				t.Fatal(err)
			}
			if res := harness.Dial(t, agent, "tcp4", target); res.Reply != "engine\n" {
				t.Errorf("processes in the escapable agent cgroup: %+v, want the engine", res)
			}
			_, labels := ks.snapshot()
			if len(labels) != 1 || labels[0].Ignored != "" || !strings.Contains(labels[0].Escapable, cg.Rel("user")+" (uid 65534") {
				t.Errorf("labels: %+v, want one honoured and reported escapable because of /user", labels)
			}
		})
	}
}

// An incomplete scan keeps only what it may have missed. A user who owns
// any cgroup can make the scan of it fail (a label longer than a name made
// getxattr fail with ERANGE); when that kept every agent cgroup the kernel
// knew, unlabelling never took effect (a demoted agent kept egress allow)
// and removed cgroups piled up in the map until it was full.
func TestPrivilegedIncompleteScanKeepsOnlyUnread(t *testing.T) {
	harness.RequirePrivileged(t)
	cg := harness.NewCgroups(t)
	pinDir := harness.PinDir(t)
	eng4 := harness.LineServer(t, "tcp4", "127.0.0.1:0", "engine\n")
	eng6 := harness.LineServer(t, "tcp6", "[::1]:0", "engine\n")
	target := harness.LineServer(t, "tcp4", "127.0.0.1:0", "direct\n").Addr().(*net.TCPAddr).AddrPort()
	other := harness.LineServer(t, "tcp4", "127.0.0.1:0", "other\n").Addr().(*net.TCPAddr).AddrPort()
	rcfg := redirect.Config{
		CgroupPath: cg.Root, PinDir: pinDir, Mark: 0x494c,
		EnginePort4: uint16(eng4.Addr().(*net.TCPAddr).Port), EnginePort6: uint16(eng6.Addr().(*net.TCPAddr).Port),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	pol, err := policy.Parse("keep.yaml", []byte(`version: 1
targets:
  - {name: db, protocol: tcp, address: "`+target.String()+`"}
agents:
  - {name: analyst, roles: [r], egress: deny}
  - {name: writer, roles: [r], egress: allow}
roles:
  - name: r
    rules:
      - {actions: [read], decision: allow}
`))
	if err != nil {
		t.Fatal(err)
	}
	agents := cg.Mkdir(t, "agents")
	w := cg.Mkdir(t, "agents/w")
	tmp := cg.Mkdir(t, "agents/tmp")
	hidden := cg.Mkdir(t, "hidden/h")
	for path, agent := range map[string]string{agents: "analyst", w: "writer", tmp: "writer", hidden: "writer"} {
		if err := redirect.SetLabel(path, agent); err != nil {
			t.Fatal(err)
		}
	}
	// A user's cgroup with a label longer than any name.
	user := cg.Mkdir(t, "users/u")
	if err := os.Chown(user, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(user, redirect.LabelXattr, []byte(strings.Repeat("x", 300)), 0); err != nil {
		t.Fatal(err)
	}
	r, err := redirect.Install(rcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); redirect.Uninstall(pinDir) })
	mount, _ := redirect.Cgroup2Mount()
	hiddenRoot := filepath.Dir(hidden)
	unreadable := false
	ks := &kernelSync{
		r: r, mount: mount, root: cg.Root, levels: redirect.MountAtGlobalRoot(mount),
		pol: func() *policy.Policy { return pol }, dir: &directory{}, log: rcfg.Log, resolveEvery: time.Minute,
		// As ScanLabels reports a subtree it cannot read (permissions).
		scan: func(mount, root string) ([]redirect.LabelledCgroup, error) {
			labels, err := redirect.ScanLabels(mount, root)
			if err != nil || !unreadable {
				return labels, err
			}
			var seen []redirect.LabelledCgroup
			for _, l := range labels {
				if !strings.HasPrefix(filepath.Join(mount, l.Path), hiddenRoot) {
					seen = append(seen, l)
				}
			}
			return seen, &redirect.IncompleteScanError{Unreadable: []string{hiddenRoot}}
		},
	}
	tick := func() {
		t.Helper()
		if err := ks.tick(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	tick()
	if _, err := redirect.ScanLabels(mount, cg.Root); err != nil {
		t.Errorf("an oversized label made the scan incomplete: %v", err)
	}
	if res := harness.Dial(t, w, "tcp4", other.String()); res.Reply != "other\n" {
		t.Fatalf("writer (egress allow) before: %+v", res)
	}

	unreadable = true
	// The operator demotes w (it inherits analyst: egress deny), and an
	// exec'd agent's cgroup goes away.
	if err := redirect.RemoveLabel(w); err != nil {
		t.Fatal(err)
	}
	tmpID, _ := redirect.CgroupID(tmp)
	if err := os.Remove(tmp); err != nil {
		t.Fatal(err)
	}
	tick()
	if res := harness.Dial(t, w, "tcp4", other.String()); !strings.Contains(res.Err, "operation not permitted") {
		t.Errorf("unlabelling during an incomplete scan: the demoted cgroup kept writer's egress allow: %+v", res)
	}
	if known, _ := redirect.AgentCgroupKnown(pinDir, tmpID); known {
		t.Errorf("a removed agent cgroup stayed in the kernel map during an incomplete scan")
	}
	// What the scan could not read stays an agent.
	if res := harness.Dial(t, hidden, "tcp4", target.String()); res.Reply != "engine\n" {
		t.Errorf("FAIL OPEN: an agent cgroup the scan could not read: %+v, want the engine", res)
	}
}
