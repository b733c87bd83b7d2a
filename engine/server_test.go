package engine_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/interlockhq/interlock/engine"
	"github.com/interlockhq/interlock/protocols/tcp"
	"github.com/interlockhq/interlock/test/harness"
)

// These tests run without root: the kernel's part (the redirect record) is
// played by a map from client address to Origin, filled by the test just as
// connect4 fills the BPF map before the engine can accept.

type origins struct {
	mu     sync.Mutex
	m      map[netip.AddrPort]engine.Origin
	locals []netip.AddrPort // the local addresses lookups were made with
}

func (o *origins) Lookup(c *net.TCPConn) (engine.Origin, error) {
	peer := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	o.mu.Lock()
	defer o.mu.Unlock()
	o.locals = append(o.locals, c.LocalAddr().(*net.TCPAddr).AddrPort())
	r, ok := o.m[peer]
	if !ok {
		return r, fmt.Errorf("no record for %s", peer)
	}
	return r, nil
}

func (o *origins) Forget(r engine.Origin) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, v := range o.m {
		if v == r {
			delete(o.m, k)
		}
	}
	return nil
}

func (o *origins) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.m)
}

type dir struct{}

func (dir) Agent(id uint32) (engine.AgentInfo, bool) {
	if id == 1 {
		return engine.AgentInfo{Name: "analyst", Roles: []string{"reader"}}, true
	}
	return engine.AgentInfo{}, false
}

func (dir) Target(id uint32) (engine.TargetInfo, bool) {
	switch id {
	case 10:
		return engine.TargetInfo{Name: "db", Protocol: "tcp"}, true
	case 11:
		return engine.TargetInfo{Name: "weird", Protocol: "gopher"}, true
	}
	return engine.TargetInfo{}, false
}

type fixture struct {
	srv     *engine.Server
	org     *origins
	reg     *prometheus.Registry
	metrics *engine.Metrics
	addr4   string
	cancel  context.CancelFunc
	done    chan error
}

func start(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{org: &origins{m: map[netip.AddrPort]engine.Origin{}}, reg: prometheus.NewRegistry()}
	f.metrics = engine.NewMetrics(f.reg)
	srv, err := engine.NewServer(engine.Config{
		Listen4: "127.0.0.1:0", Listen6: "[::1]:0", Mark: 0x494c, ShutdownGrace: 300 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, f.org, dir{}, map[string]engine.Handler{"tcp": tcp.Handler{}}, f.metrics)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	p4, _ := srv.Ports()
	f.addr4 = fmt.Sprintf("127.0.0.1:%d", p4)
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.done = make(chan error, 1)
	go func() { f.done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-f.done })
	return f
}

// dial connects to the engine as a redirected agent would, registering the
// record for its local address first (bind, record, connect).
func (f *fixture) dial(t *testing.T, o *engine.Origin) net.Conn {
	t.Helper()
	var d net.Dialer
	if o != nil {
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: freePort(t)}
		f.org.mu.Lock()
		ap := d.LocalAddr.(*net.TCPAddr).AddrPort()
		f.org.m[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = *o
		f.org.mu.Unlock()
	}
	c, err := d.Dial("tcp4", f.addr4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func upstream(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
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
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					fmt.Fprintf(c, "upstream:%s", line)
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// needMark gates tests whose sessions dial upstream: the engine sets
// SO_MARK on every upstream socket, which needs CAP_NET_ADMIN.
func needMark(t *testing.T) {
	harness.Require(t, os.Geteuid() == 0, "upstream dials set SO_MARK, which needs CAP_NET_ADMIN (run as root)")
}

func TestRelayAndIdentity(t *testing.T) {
	needMark(t)
	f := start(t)
	up := upstream(t)
	c := f.dial(t, &engine.Origin{Dst: up, AgentID: 1, TargetID: 10, PID: 4242, CgroupID: 77, Cookie: 4343})
	fmt.Fprintf(c, "hello\n")
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil || line != "upstream:hello\n" {
		t.Fatalf("relay: %q %v", line, err)
	}
	sessions := f.srv.Sessions()
	if len(sessions) != 1 {
		t.Fatalf("sessions = %d, want 1", len(sessions))
	}
	id := sessions[0].Identity
	if id.Agent != "analyst" || id.Target != "db" || id.PID != 4242 || id.CgroupID != 77 || id.OrigDst != up || len(id.Roles) != 1 {
		t.Errorf("identity = %+v", id)
	}
	if got := testutil.ToFloat64(f.metrics.SessionsActive); got != 1 {
		t.Errorf("sessions_active = %v", got)
	}
	if owned := f.srv.RecordCookies(); len(owned) != 1 {
		t.Errorf("record cookies of open sessions = %v, want the session's one", owned)
	} else if _, ok := owned[4343]; !ok {
		t.Errorf("record cookies of open sessions = %v, want [4343]", owned)
	}
	c.Close()
	waitFor(t, func() bool { return len(f.srv.Sessions()) == 0 })
	// The session's end drops the kernel's record; it was looked up with
	// the listener's address.
	waitFor(t, func() bool { return f.org.len() == 0 })
	f.org.mu.Lock()
	if len(f.org.locals) != 1 || f.org.locals[0].String() != f.addr4 {
		t.Errorf("lookups made with local addresses %v, want [%s]", f.org.locals, f.addr4)
	}
	f.org.mu.Unlock()
	if got := testutil.ToFloat64(f.metrics.Connections.WithLabelValues("analyst", "db", "tcp", engine.VerdictAccepted)); got != 1 {
		t.Errorf("connections_total accepted = %v", got)
	}
	if got := testutil.ToFloat64(f.metrics.Bytes.WithLabelValues(engine.DirClientToTarget)); got != 6 {
		t.Errorf("bytes client_to_target = %v, want 6", got)
	}
	if got := testutil.ToFloat64(f.metrics.Bytes.WithLabelValues(engine.DirTargetToClient)); got != 15 {
		t.Errorf("bytes target_to_client = %v, want 15", got)
	}
}

func TestRefusals(t *testing.T) {
	f := start(t)
	up := upstream(t)
	cases := []struct {
		name    string
		origin  *engine.Origin
		verdict string
	}{
		{"no kernel record", nil, engine.VerdictNoRecord},
		{"target not in policy", &engine.Origin{Dst: up, AgentID: 1, TargetID: 99}, engine.VerdictUnknownTarget},
		{"protocol without handler", &engine.Origin{Dst: up, AgentID: 1, TargetID: 11}, engine.VerdictNoHandler},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := f.dial(t, tc.origin)
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			fmt.Fprintf(c, "hello\n")
			if n, err := c.Read(make([]byte, 16)); err == nil {
				t.Fatalf("connection served (%d bytes), want it closed", n)
			}
		})
	}
	if got := testutil.ToFloat64(f.metrics.LookupFailures); got != 1 {
		t.Errorf("lookup failures = %v, want 1", got)
	}
	// Refused connections drop their records too.
	waitFor(t, func() bool { return f.org.len() == 0 })
	if got := testutil.ToFloat64(f.metrics.Connections.WithLabelValues("", "", "", engine.VerdictNoRecord)); got != 1 {
		t.Errorf("no_record = %v", got)
	}
	if got := testutil.ToFloat64(f.metrics.Connections.WithLabelValues("analyst", "weird", "gopher", engine.VerdictNoHandler)); got != 1 {
		t.Errorf("no_handler = %v", got)
	}
}

func TestUnknownAgentStillServedAsAgent(t *testing.T) {
	needMark(t)
	f := start(t)
	up := upstream(t)
	c := f.dial(t, &engine.Origin{Dst: up, AgentID: 555, TargetID: 10})
	fmt.Fprintf(c, "x\n")
	bufio.NewReader(c).ReadString('\n')
	s := f.srv.Sessions()
	if len(s) != 1 || !strings.HasPrefix(s[0].Identity.Agent, "unknown-agent-") || len(s[0].Identity.Roles) != 0 {
		t.Fatalf("unknown label: sessions %+v, want an agent with no roles", s)
	}
}

func TestGracefulShutdown(t *testing.T) {
	needMark(t)
	f := start(t)
	up := upstream(t)
	c := f.dial(t, &engine.Origin{Dst: up, AgentID: 1, TargetID: 10})
	fmt.Fprintf(c, "x\n")
	bufio.NewReader(c).ReadString('\n')
	f.cancel()
	// New connections are refused at once; the open session is closed
	// after the grace period.
	if _, err := net.DialTimeout("tcp4", f.addr4, time.Second); err == nil {
		waitFor(t, func() bool {
			_, err := net.DialTimeout("tcp4", f.addr4, time.Second)
			return err != nil
		})
	}
	select {
	case <-f.done:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the shutdown grace")
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("session still open after shutdown")
	}
	f.done <- nil // for the cleanup
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
