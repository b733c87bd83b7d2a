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
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/interlockhq/interlock/engine/policy"
	"github.com/interlockhq/interlock/redirect"
	"github.com/interlockhq/interlock/test/harness"
)

// syncEnv is a kernelSync's world in a test: a cgroup subtree, a private
// bpffs, an engine stub ("engine\n" on both ports), a target ("direct\n")
// and another address ("other\n"), and a policy with target db and the
// agents analyst (egress deny) and writer (egress allow).
type syncEnv struct {
	cg            *harness.Cgroups
	pinDir, mount string
	target, other string
	rcfg          redirect.Config
	pol           *policy.Policy
}

// newSyncEnv sets one up; extra is appended to analyst's line of the
// policy (", cgroups: [CGROOT/a]", CGROOT the test subtree).
func newSyncEnv(t *testing.T, extra string) *syncEnv {
	t.Helper()
	harness.RequirePrivileged(t)
	e := &syncEnv{cg: harness.NewCgroups(t), pinDir: harness.PinDir(t)}
	eng4 := harness.LineServer(t, "tcp4", "127.0.0.1:0", "engine\n")
	eng6 := harness.LineServer(t, "tcp6", "[::1]:0", "engine\n")
	e.target = harness.LineServer(t, "tcp4", "127.0.0.1:0", "direct\n").Addr().String()
	e.other = harness.LineServer(t, "tcp4", "127.0.0.1:0", "other\n").Addr().String()
	e.rcfg = redirect.Config{
		CgroupPath: e.cg.Root, PinDir: e.pinDir, Mark: 0x494c,
		EnginePort4: uint16(eng4.Addr().(*net.TCPAddr).Port), EnginePort6: uint16(eng6.Addr().(*net.TCPAddr).Port),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	var err error
	e.pol, err = policy.Parse("sync.yaml", []byte(`version: 1
targets:
  - {name: db, protocol: tcp, address: "`+e.target+`"}
agents:
  - {name: analyst, roles: [r], egress: deny`+strings.ReplaceAll(extra, "CGROOT", e.cg.Rel(""))+`}
  - {name: writer, roles: [r], egress: allow}
roles:
  - name: r
    rules:
      - {actions: [read], decision: allow}
`))
	if err != nil {
		t.Fatal(err)
	}
	e.mount, _ = redirect.Cgroup2Mount()
	return e
}

// install attaches the programs, removed when the test ends.
func (e *syncEnv) install(t *testing.T) *redirect.Redirector {
	t.Helper()
	r, err := redirect.Install(e.rcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); redirect.Uninstall(e.pinDir) })
	return r
}

// sync returns a kernelSync over r, as runDaemon makes it.
func (e *syncEnv) sync(r *redirect.Redirector) *kernelSync {
	return &kernelSync{
		r: r, mount: e.mount, root: e.cg.Root, levels: redirect.MountAtGlobalRoot(e.mount),
		pol: func() *policy.Policy { return e.pol }, dir: &directory{}, log: e.rcfg.Log, resolveEvery: time.Minute,
	}
}

func tick(t *testing.T, ks *kernelSync) {
	t.Helper()
	if err := ks.tick(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// dial dials addr from cgroup and checks the reply ("" for EPERM).
func dial(t *testing.T, cgroup, addr, want, what string) {
	t.Helper()
	res := harness.Dial(t, cgroup, "tcp4", addr)
	if want == "" && !strings.Contains(res.Err, "operation not permitted") || want != "" && res.Reply != want {
		t.Errorf("%s: %+v, want %q", what, res, want)
	}
}

// A label scan that cannot read part of the cgroup tree (EMFILE under
// load, a permission problem) returns what it could read. Applied as the
// whole truth, it deleted the unread agent cgroups from the kernel, and
// their processes reached targets directly until the next good scan; at a
// restart, before Attach, even through the old programs.
func TestPrivilegedIncompleteLabelScanKeepsAgents(t *testing.T) {
	e := newSyncEnv(t, "")
	agent := e.cg.Mkdir(t, "agents/w")
	if err := redirect.SetLabel(agent, "writer"); err != nil {
		t.Fatal(err)
	}
	scanFails := false
	newSync := func(r *redirect.Redirector) *kernelSync {
		ks := e.sync(r)
		ks.scan = func(mount, root string) ([]redirect.LabelledCgroup, error) {
			if scanFails {
				return nil, errors.New("scan cgroup labels: cannot read 1 cgroups (test)")
			}
			return redirect.ScanLabels(mount, root)
		}
		return ks
	}
	r := e.install(t)
	ks := newSync(r)
	tick(t, ks)
	dial(t, agent, e.target, "engine\n", "after a good scan")

	scanFails = true
	tick(t, ks)
	dial(t, agent, e.target, "engine\n", "FAIL OPEN: after a scan that could not read the agent's cgroup")
	r.Close()

	// A restart whose first scan fails: the kernel keeps the agent through
	// the old programs (before Attach) and the new ones.
	r2, err := redirect.Load(e.rcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	ks = newSync(r2)
	tick(t, ks)
	dial(t, agent, e.target, "engine\n", "FAIL OPEN: restart with a failing scan, before Attach")
	if err := r2.Attach(); err != nil {
		t.Fatal(err)
	}
	dial(t, agent, e.target, "engine\n", "FAIL OPEN: restart with a failing scan, after Attach")

	// Once scans succeed again, a removed label is removed from the kernel.
	scanFails = false
	if err := redirect.RemoveLabel(agent); err != nil {
		t.Fatal(err)
	}
	tick(t, ks)
	dial(t, agent, e.target, "direct\n", "after the label was removed and a scan succeeded")
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
	e := newSyncEnv(t, "")
	cg := e.cg
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

	ks := e.sync(e.install(t))
	tick(t, ks)

	// The delegated child stays analyst: egress deny, not writer's allow.
	dial(t, delegated, e.other, "", "ESCALATION: a user's label on its delegated child made it writer (egress allow)")
	dial(t, delegated, e.target, "engine\n", "delegated child of an agent cgroup")
	// The user's own cgroup gains no identity: its processes are agents
	// with no roles and egress deny (a label set by root on a delegated
	// cgroup looks the same, and must not fail open).
	state, labels := ks.snapshot()
	userID, _ := redirect.CgroupID(user)
	if got := state.Cgroups[userID]; got != redirect.UntrustedAgent {
		t.Errorf("a user's self-made label: kernel agent %q, want %q", got, redirect.UntrustedAgent)
	}
	dial(t, user, e.other, "", "a user's self-made label, to a non-target")
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
			extra := ""
			if static {
				extra = ", cgroups: [CGROOT/user/agent]"
			}
			e := newSyncEnv(t, extra)
			cg := e.cg
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
			if !static {
				if err := unix.Setxattr(agent, redirect.LabelXattr, []byte("analyst"), 0); err != nil {
					t.Fatal(err)
				}
			}
			ks := e.sync(e.install(t))
			tick(t, ks)
			dial(t, agent, e.target, "engine\n", "processes in the escapable agent cgroup")
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
	e := newSyncEnv(t, "")
	cg := e.cg
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
	hiddenRoot := filepath.Dir(hidden)
	unreadable := false
	ks := e.sync(e.install(t))
	// As ScanLabels reports a subtree it cannot read (permissions).
	ks.scan = func(mount, root string) ([]redirect.LabelledCgroup, error) {
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
	}
	tick(t, ks)
	if _, err := redirect.ScanLabels(e.mount, cg.Root); err != nil {
		t.Errorf("an oversized label made the scan incomplete: %v", err)
	}
	dial(t, w, e.other, "other\n", "writer (egress allow) before")

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
	tick(t, ks)
	dial(t, w, e.other, "", "unlabelling during an incomplete scan: the demoted cgroup kept writer's egress allow")
	if known, _ := redirect.AgentCgroupKnown(e.pinDir, tmpID); known {
		t.Errorf("a removed agent cgroup stayed in the kernel map during an incomplete scan")
	}
	// What the scan could not read stays an agent.
	dial(t, hidden, e.target, "engine\n", "FAIL OPEN: an agent cgroup the scan could not read")
}

// userLabels hands dir to uid 65534 and makes n labelled cgroups in it,
// named by format, as that user could: each its own, label "x".
func userLabels(t *testing.T, dir string, n int, format string) {
	t.Helper()
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf(format, i))
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(p, redirect.LabelXattr, []byte("x"), 0); err != nil {
			t.Fatal(err)
		}
	}
}

// Anyone who owns a cgroup can label its subtree by the thousand. Each
// such label that no honoured label covers is an agent cgroup in the
// kernel; unbounded, they filled the map (16384), and a label the
// operator set afterwards never reached the kernel: its processes
// reached targets directly.
func TestPrivilegedUntrustedLabelFloodLeavesRoom(t *testing.T) {
	e := newSyncEnv(t, "")
	users := e.cg.Mkdir(t, "users")
	userLabels(t, users, 16384+16, "c%d") // more than the map holds
	ks := e.sync(e.install(t))
	tick(t, ks)
	agent := e.cg.Mkdir(t, "agents/new")
	if err := redirect.SetLabel(agent, "analyst"); err != nil {
		t.Fatal(err)
	}
	tick(t, ks)
	dial(t, agent, e.target, "engine\n", "FAIL OPEN: an agent labelled after a flood of untrusted labels")
	state, _ := ks.snapshot()
	if len(state.Untrusted) != maxUntrustedCgroups {
		t.Errorf("untrusted labels in the kernel: %d, want the limit %d", len(state.Untrusted), maxUntrustedCgroups)
	}
	// The first ones (by path) are agents with no roles, the rest not.
	dial(t, filepath.Join(users, "c0"), e.other, "", "a cgroup within the limit, to a non-target")
}

// The cap on untrusted labels is shared out among delegation points: in
// path order, user A's flood filled it, and the label root set on user B's
// delegated cgroup was left out: B's processes reached targets directly.
func TestPrivilegedUntrustedLabelCapSharedByDelegation(t *testing.T) {
	e := newSyncEnv(t, "")
	userLabels(t, e.cg.Mkdir(t, "users/a"), maxUntrustedCgroups, "c%04d")
	// The operator's label on B's delegated cgroup (set by root).
	b := e.cg.Mkdir(t, "users/b")
	if err := os.Chown(b, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(b, redirect.LabelXattr, []byte("analyst"), 0); err != nil {
		t.Fatal(err)
	}
	logs := &harness.SyncBuffer{}
	ks := e.sync(e.install(t))
	ks.log = slog.New(slog.NewTextHandler(logs, nil))
	tick(t, ks)
	dial(t, b, e.target, "engine\n", "FAIL OPEN: a root-set label on user B's cgroup, crowded out by user A's labels")
	dial(t, b, e.other, "", "FAIL OPEN: a root-set label on user B's cgroup (egress deny), crowded out")
	if !strings.Contains(logs.String(), "left_out=1") || !strings.Contains(logs.String(), "c1023") {
		t.Errorf("the error does not name what was left out:\n%s", logs)
	}
}

// Shared out by owner uid, the cap could still be taken by one user: with
// subordinate uids (/etc/subuid, newuidmap), user A chowns the cgroups of
// its own delegation to a thousand different uids inside a user
// namespace, and every one of them came before user B. Delegation points
// cannot be multiplied that way. (newuidmap is emulated: the test, as
// root, writes the maps.)
func TestPrivilegedUntrustedLabelCapSubordinateUIDs(t *testing.T) {
	e := newSyncEnv(t, "")
	a := e.cg.Mkdir(t, "users/a")
	if err := os.Chown(a, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	const n = 1100
	script := `set -e; cd "$1"; i=0; while [ $i -lt ` + strconv.Itoa(n) + ` ]; do d=c$i; mkdir $d; setfattr -n user.interlock.agent -v x $d; i=$((i+1)); chown $i:$i $d; done; stat -c '%u' c0 c1099`
	cmd := exec.Command("/bin/sh", "-c", script, "sh", a)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 1000, Size: 1}, {ContainerID: 1, HostID: 100000, Size: n}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 1000, Size: 1}, {ContainerID: 1, HostID: 100000, Size: n}},
		Credential:  &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true},
	}
	out, err := cmd.CombinedOutput()
	t.Logf("user A inside its user namespace (kuid 1000): %v\n%s", err, out)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	unix.Stat(filepath.Join(a, "c1099"), &st)
	t.Logf("outside: %s/c1099 owned by uid %d (set by uid-1000 user A, no root)", a, st.Uid)

	b := e.cg.Mkdir(t, "users/b")
	if err := os.Chown(b, 2000000, 2000000); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(b, redirect.LabelXattr, []byte("analyst"), 0); err != nil {
		t.Fatal(err)
	}
	ks := e.sync(e.install(t))
	tick(t, ks)
	dial(t, b, e.target, "engine\n", "FAIL OPEN: root-set label on user B's cgroup crowded out by user A's subuid-owned cgroups")
	dial(t, b, e.other, "", "FAIL OPEN: B's agent (egress deny) reaches a non-target")
}
