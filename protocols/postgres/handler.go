package postgres

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/interlockhq/interlock/engine"
	"github.com/interlockhq/interlock/engine/policy"
)

// Config configures the PostgreSQL handler.
type Config struct {
	// Policy returns the policy in force; it is consulted per statement so
	// that a reload applies to open sessions at the next statement.
	Policy func() *policy.Policy
	// Classifier classifies statements; shared by all sessions (its cache
	// is the point).
	Classifier *Classifier
	// TLS is the certificate presented to agents that ask for TLS
	// (SSLRequest). Nil answers 'N': agents with sslmode=require fail.
	TLS *tls.Config
	// MaxMessageSize bounds one client message (default 64 MiB). A larger
	// message ends the session with a protocol error.
	MaxMessageSize int
	// HandshakeTimeout bounds the startup exchange with the agent and the
	// upstream connect (default 15s).
	HandshakeTimeout time.Duration
	// IdleTimeout closes a session whose client sends nothing for this
	// long (0: never).
	IdleTimeout time.Duration
	// Observer receives the session's events (statement decisions, results)
	// for recording, masking and approvals. Nil: none.
	Observer Observer
	// Masking enforces mask decisions; nil refuses them.
	Masking *MaskingConfig
	Metrics *Metrics
	Log     *slog.Logger
}

// CheckAndSetDefaults validates c and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	if c.Policy == nil {
		return errors.New("postgres handler: Policy is required")
	}
	if c.Classifier == nil {
		c.Classifier = NewClassifier(10000)
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = 64 << 20
	}
	if c.MaxMessageSize < 1024 {
		return fmt.Errorf("postgres handler: max message size %d is too small", c.MaxMessageSize)
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 15 * time.Second
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return nil
}

// Handler serves PostgreSQL sessions; it implements engine.Handler.
type Handler struct {
	cfg     Config
	cancels *cancelRegistry
	maskers sync.Map // *policy.MaskSpec → *masking.Masker
	bufs    bufPool
}

// NewHandler builds a handler.
func NewHandler(cfg Config) (*Handler, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	return &Handler{cfg: cfg, cancels: newCancelRegistry()}, nil
}

// Serve implements engine.Handler: it runs the startup exchange with the
// agent, connects upstream, then relays statement by statement.
func (h *Handler) Serve(ctx context.Context, s *engine.Session, client net.Conn) error {
	client.SetDeadline(time.Now().Add(h.cfg.HandshakeTimeout))
	cc, startup, err := h.startup(s, client)
	if err != nil || startup == nil {
		return err // a cancel request, a refused handshake or a broken client
	}
	pol := h.cfg.Policy()
	target, ok := pol.Target(s.Identity.Target)
	if !ok || target.Protocol != policy.ProtocolPostgres {
		cc.fatal("08004", "Interlock: target "+s.Identity.Target+" is not a PostgreSQL target in the current policy")
		return fmt.Errorf("target %s is not a postgres target in the current policy", s.Identity.Target)
	}
	up, err := h.connectUpstream(ctx, s, cc, target, startup)
	if err != nil {
		return err
	}
	client.SetDeadline(time.Time{})
	if co, ok := h.cfg.Observer.(ConnObserver); ok {
		co.Connected(s, &ConnEvent{Database: up.database, DBUser: up.dbUser, Auth: authMode(target), AgentTLS: tlsVersion(cc.conn), TargetTLS: tlsVersion(up.conn)})
	}
	sess := newSession(h, s, cc, up, target)
	defer func() {
		sess.close()
		// Both loops have ended (run waits for the server's): the
		// buffers can serve another session.
		cc.release(&h.bufs)
		h.bufs.putReader(up.r)
		h.bufs.putWriter(sess.upw)
		up.r, sess.upw = nil, nil
	}()
	return sess.run(ctx)
}

// clientConn is the agent's side: a pgproto3 backend over the (possibly
// TLS-wrapped) connection. Writes are serialised: the relay of server
// messages and the statement loop both write.
type clientConn struct {
	conn net.Conn
	be   *pgproto3.Backend
	w    *lockedWriter
	br   *bufio.Reader // be's, for release
}

// fatal tells the agent why its session ends. It gets a fresh write
// deadline: the read deadline that expired (handshake, idle) would
// otherwise swallow the message.
func (c *clientConn) fatal(code, msg string) {
	c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	c.w.send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg})
}

// tlsVersion names the TLS version of c, "" when c is not TLS.
func tlsVersion(c net.Conn) string {
	if tc, ok := c.(*tls.Conn); ok {
		return tls.VersionName(tc.ConnectionState().Version)
	}
	return ""
}
