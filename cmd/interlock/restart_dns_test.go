package main

// From a review of the transaction-state and restart handling; each test
// failed while the problem it names existed.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/interlockhq/interlock/engine/policy"
	"github.com/interlockhq/interlock/redirect"
	"github.com/interlockhq/interlock/test/harness"
)

func TestMain(m *testing.M) {
	harness.MaybeDial()
	maybeSetLabel()
	os.Exit(m.Run())
}

// A target given by DNS name: the previous run resolved it and its
// addresses are in the pinned targets map. The daemon restarts while DNS
// fails: resolve() keeps "previous addresses", but a new process has none,
// so the first tick (before Attach, with the old programs still attached
// and sharing the pinned map) deletes the target's addresses from the
// kernel. An agent with egress: allow then reaches the target directly
// for as long as DNS stays down. README: "so there is no window of direct
// access".
func TestPrivilegedRestartDuringDNSOutageKeepsTarget(t *testing.T) {
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
	id, _ := redirect.CgroupID(agent)

	// The previous run: db.restart-test.invalid resolved to the target.
	r, err := redirect.Install(rcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { redirect.Uninstall(pinDir) })
	if err := r.Apply(redirect.State{
		Cgroups: map[uint64]string{id: "writer"},
		Agents:  map[string]redirect.Agent{"writer": {Name: "writer", EgressAllow: true}},
		Targets: map[netip.AddrPort]string{target: "db"},
	}); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if res := harness.Dial(t, agent, "tcp4", target.String()); res.Reply != "engine\n" {
		t.Fatalf("previous run: agent got %+v, want the engine", res)
	}

	// Restart while DNS is down.
	saved := net.DefaultResolver
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("DNS is down (test)")
	}}
	t.Cleanup(func() { net.DefaultResolver = saved })
	pol, err := policy.Parse("restart.yaml", []byte(fmt.Sprintf(`version: 1
targets:
  - {name: db, protocol: tcp, address: "db.restart-test.invalid:%d"}
agents:
  - {name: writer, roles: [writer], egress: allow}
roles:
  - name: writer
    rules:
      - {actions: [read], decision: allow}
`, target.Port())))
	if err != nil {
		t.Fatal(err)
	}
	mount, _ := redirect.Cgroup2Mount()
	r2, err := redirect.Load(rcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	ks := &kernelSync{
		r: r2, mount: mount, root: cg.Root, levels: redirect.MountAtGlobalRoot(mount),
		pol: func() *policy.Policy { return pol }, dir: &directory{}, log: rcfg.Log, resolveEvery: time.Minute,
	}
	// As runDaemon: tick between Load and Attach.
	if err := ks.tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if res := harness.Dial(t, agent, "tcp4", target.String()); res.Reply == "direct\n" {
		t.Errorf("FAIL OPEN (before Attach, old programs): restart during a DNS outage dropped the target's pinned addresses; egress: allow agent reached it directly: %+v", res)
	}
	if err := r2.Attach(); err != nil {
		t.Fatal(err)
	}
	if res := harness.Dial(t, agent, "tcp4", target.String()); res.Reply == "direct\n" {
		t.Errorf("FAIL OPEN (after Attach): egress: allow agent reaches the DNS-named target directly while DNS is down: %+v", res)
	}
}

func TestPortListed(t *testing.T) {
	for _, c := range []struct {
		list string
		port int
		want bool
	}{
		{"", 15001, false},
		{"15001", 15001, true},
		{"8080,15000-15010", 15001, true},
		{"8080,15002-15010", 15001, false},
		{" 15001 , 9", 9, true},
	} {
		if got := portListed(c.list, c.port); got != c.want {
			t.Errorf("portListed(%q, %d) = %v, want %v", c.list, c.port, got, c.want)
		}
	}
}
