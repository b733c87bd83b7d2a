package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

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
