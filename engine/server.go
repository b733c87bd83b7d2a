package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Config configures the engine's listeners and dials.
type Config struct {
	// Listen4 and Listen6 are the loopback addresses the kernel redirects
	// to. Port 0 picks a free port (tests); the kernel is told the result.
	Listen4, Listen6 string
	// Mark is set as SO_MARK on upstream dials.
	Mark uint32
	// DialTimeout bounds the upstream connect.
	DialTimeout time.Duration
	// ShutdownGrace is how long open sessions may finish after shutdown
	// starts before they are closed.
	ShutdownGrace time.Duration
	// Events hears session starts and ends (nil: nobody).
	Events SessionEvents
	Log    *slog.Logger
}

// CheckAndSetDefaults validates c and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	if c.Listen4 == "" {
		c.Listen4 = "127.0.0.1:15001"
	}
	if c.Listen6 == "" {
		c.Listen6 = "[::1]:15001"
	}
	for _, a := range []string{c.Listen4, c.Listen6} {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			return fmt.Errorf("engine listen address %q: %w", a, err)
		}
		if !ap.Addr().IsLoopback() {
			return fmt.Errorf("engine listen address %q: must be loopback (the kernel redirects to 127.0.0.1 and ::1)", a)
		}
	}
	if c.Mark == 0 {
		return errors.New("engine mark must be non-zero")
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 10 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return nil
}

// Server accepts redirected connections and runs their sessions.
type Server struct {
	cfg      Config
	origins  OriginLookup
	dir      Directory
	handlers map[string]Handler
	metrics  *Metrics
	dialer   *net.Dialer
	pid      int // the daemon's own

	ln4, ln6 *net.TCPListener
	nextID   atomic.Uint64
	mu       sync.Mutex
	sessions map[uint64]*sessionEntry
	wg       sync.WaitGroup
}

type sessionEntry struct {
	s      *Session
	client net.Conn
	cookie uint64 // the kernel record's key (Origin.Cookie)
}

// NewServer builds a server; handlers maps a target protocol ("tcp",
// "postgres") to its handler. Targets whose protocol has no handler are
// refused: never relayed blindly.
func NewServer(cfg Config, origins OriginLookup, dir Directory, handlers map[string]Handler, m *Metrics) (*Server, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	return &Server{
		cfg: cfg, origins: origins, dir: dir, handlers: handlers, metrics: m,
		dialer:   newDialer(cfg.Mark, cfg.DialTimeout),
		pid:      os.Getpid(),
		sessions: map[uint64]*sessionEntry{},
	}, nil
}

// Listen binds both listeners. It is separate from Serve so that the
// kernel programs can be loaded with the actual ports before any
// connection is redirected.
func (s *Server) Listen() error {
	var err error
	if s.ln4, err = listen("tcp4", s.cfg.Listen4, s.cfg.Mark); err != nil {
		return err
	}
	if s.ln6, err = listen("tcp6", s.cfg.Listen6, s.cfg.Mark); err != nil {
		s.ln4.Close()
		return err
	}
	return nil
}

// listen binds with the engine's mark on the socket: the kernel programs
// let only marked sockets bind the engine's ports (so that nobody else can
// receive agents' connections while the engine is down). The mark is
// cleared once listening, so that accepted connections do not inherit it.
// Without CAP_NET_ADMIN the mark cannot be set; that only matters where
// the programs are attached, which needs more privilege anyway.
func listen(network, addr string, mark uint32) (*net.TCPListener, error) {
	setMark := func(fd uintptr, m uint32) error {
		err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(m))
		if errors.Is(err, unix.EPERM) {
			return nil
		}
		return err
	}
	// No TCP keepalive on accepted connections (Go's default, four
	// setsockopt calls each): the agent is a local process, whose sockets
	// the kernel closes when it dies.
	lc := net.ListenConfig{KeepAlive: -1, Control: func(_, _ string, c syscall.RawConn) error {
		if mark == 0 {
			return nil
		}
		var serr error
		if err := c.Control(func(fd uintptr) { serr = setMark(fd, mark) }); err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		return nil, fmt.Errorf("engine listen on %s: %w", addr, err)
	}
	tl := ln.(*net.TCPListener)
	if mark != 0 {
		rc, err := tl.SyscallConn()
		var serr error
		if err == nil {
			err = rc.Control(func(fd uintptr) { serr = setMark(fd, 0) })
		}
		if err = errors.Join(err, serr); err != nil {
			tl.Close()
			return nil, fmt.Errorf("engine listen on %s: clear mark: %w", addr, err)
		}
	}
	return tl, nil
}

// Ports returns the bound listener ports (IPv4, IPv6).
func (s *Server) Ports() (uint16, uint16) {
	return uint16(s.ln4.Addr().(*net.TCPAddr).Port), uint16(s.ln6.Addr().(*net.TCPAddr).Port)
}

// Serve accepts until ctx is cancelled, then stops accepting, gives open
// sessions ShutdownGrace to finish and closes the rest.
func (s *Server) Serve(ctx context.Context) error {
	if s.ln4 == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	sessCtx, cancelSessions := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSessions()
	var accepting sync.WaitGroup
	for _, ln := range []*net.TCPListener{s.ln4, s.ln6} {
		accepting.Add(1)
		go func() {
			defer accepting.Done()
			s.acceptLoop(sessCtx, ln)
		}()
	}
	<-ctx.Done()
	s.ln4.Close()
	s.ln6.Close()
	accepting.Wait()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.cfg.ShutdownGrace):
		s.cfg.Log.Warn("shutdown grace elapsed; closing open sessions", "open", len(s.Sessions()))
		cancelSessions()
		s.mu.Lock()
		for _, e := range s.sessions {
			e.client.Close()
		}
		s.mu.Unlock()
		<-done
	}
	return nil
}

func (s *Server) acceptLoop(ctx context.Context, ln *net.TCPListener) {
	var delay time.Duration
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off instead of spinning.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.cfg.Log.Error("accept failed", "error", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(ctx, c)
		}()
	}
}

func (s *Server) handle(ctx context.Context, c *net.TCPConn) {
	peer := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	o, err := s.origins.Lookup(c)
	if err != nil {
		// Not redirected by the kernel: a local process dialled the engine
		// port directly, or the record was evicted. Never serve it.
		s.metrics.LookupFailures.Inc()
		s.metrics.Connections.WithLabelValues("", "", "", VerdictNoRecord).Inc()
		s.cfg.Log.Warn("refused connection without redirect record", "peer", peer, "error", err)
		c.Close()
		return
	}
	// The kernel keeps the record for the agent's getpeername() while the
	// connection lives; it is this session's to drop.
	defer func() {
		if err := s.origins.Forget(o); err != nil {
			s.cfg.Log.Warn("cannot delete redirect record", "peer", peer, "error", err)
		}
	}()
	if int(o.PID) == s.pid {
		// The engine's own upstream dial came back: it runs in an agent
		// cgroup (moved there after it started). Relaying it would loop.
		s.metrics.Connections.WithLabelValues("", "", "", VerdictNoRecord).Inc()
		s.cfg.Log.Error("refused the engine's own redirected dial: the daemon is in an agent cgroup; move it out", "peer", peer)
		c.Close()
		return
	}
	id, err := identify(o, peer, s.dir)
	if err != nil {
		s.metrics.Connections.WithLabelValues(id.Agent, "", "", VerdictUnknownTarget).Inc()
		s.cfg.Log.Warn("refused connection to unknown target", "agent", id.Agent, "pid", id.PID, "error", err)
		c.Close()
		return
	}
	h, ok := s.handlers[id.Protocol]
	if !ok {
		s.metrics.Connections.WithLabelValues(id.Agent, id.Target, id.Protocol, VerdictNoHandler).Inc()
		s.cfg.Log.Error("refused connection: no handler for protocol", "agent", id.Agent, "target", id.Target, "protocol", id.Protocol)
		c.Close()
		return
	}

	ready := make(chan struct{})
	sess := &Session{
		ID: s.nextID.Add(1), UID: NewSessionUID(), Identity: id, IdentityReady: ready, Started: time.Now(),
		dialer: s.dialer, metrics: s.metrics,
	}
	sess.Log = s.cfg.Log.With("session", sess.ID, "agent", id.Agent, "target", id.Target)
	s.mu.Lock()
	s.sessions[sess.ID] = &sessionEntry{s: sess, client: c, cookie: o.Cookie}
	s.mu.Unlock()
	s.metrics.SessionsActive.Inc()
	s.metrics.Connections.WithLabelValues(id.Agent, id.Target, id.Protocol, VerdictAccepted).Inc()
	// Off the connect path: the handler dials upstream meanwhile.
	go func() {
		defer close(ready)
		enrich(&sess.Identity)
		id := &sess.Identity
		sess.Log.Info("session start", "uid", sess.UID,
			"roles", id.Roles, "pid", id.PID, "exe", id.Exe, "cgroup", id.CgroupPath,
			"orig_dst", id.OrigDst, "client", id.Client, "protocol", id.Protocol)
		if s.cfg.Events != nil {
			if err := s.cfg.Events.SessionStarted(sess); err != nil {
				sess.Log.Error("session refused: its start could not be recorded", "error", err)
				c.Close()
			}
		}
	}()

	err = h.Serve(ctx, sess, c)
	c.Close()
	<-ready
	if s.cfg.Events != nil {
		s.cfg.Events.SessionEnded(sess, err)
	}

	s.mu.Lock()
	delete(s.sessions, sess.ID)
	s.mu.Unlock()
	s.metrics.SessionsActive.Dec()
	info := sess.Info()
	attrs := []any{"duration", time.Since(sess.Started).Round(time.Microsecond),
		"bytes_to_target", info.BytesToTarget, "bytes_to_client", info.BytesToClient}
	if err != nil {
		sess.Log.Warn("session end", append(attrs, "error", err)...)
	} else {
		sess.Log.Info("session end", attrs...)
	}
}

// RecordCookies returns the keys of the kernel records that open sessions
// own (for redirect.Redirector.Sweep).
func (s *Server) RecordCookies() map[uint64]struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[uint64]struct{}, len(s.sessions))
	for _, e := range s.sessions {
		out[e.cookie] = struct{}{}
	}
	return out
}

// Sessions lists the open sessions, oldest first.
func (s *Server) Sessions() []SessionInfo {
	s.mu.Lock()
	out := make([]SessionInfo, 0, len(s.sessions))
	for _, e := range s.sessions {
		out = append(out, e.s.Info())
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
