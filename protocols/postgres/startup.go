package postgres

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/interlockhq/interlock/engine"
)

// startup runs the agent's side of the handshake up to the StartupMessage:
// SSLRequest (TLS with the configured certificate), GSSENCRequest
// (declined), CancelRequest (forwarded to the right backend, then the
// connection ends: startup returns a nil message). Protocol versions newer
// than 3.0 are negotiated down with NegotiateProtocolVersion.
func (h *Handler) startup(s *engine.Session, conn net.Conn) (*clientConn, *pgproto3.StartupMessage, error) {
	cc := newClientConn(conn, h.cfg.MaxMessageSize, &h.bufs)
	tlsDone := false
	for {
		msg, err := cc.be.ReceiveStartupMessage()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, nil, nil // a client that gave up (or a port check)
			}
			cc.fatal("08P01", "Interlock: invalid startup packet: "+err.Error())
			return nil, nil, fmt.Errorf("startup: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest:
			if tlsDone {
				cc.fatal("08P01", "Interlock: SSLRequest after TLS was established")
				return nil, nil, errors.New("startup: second SSLRequest")
			}
			if h.cfg.TLS == nil {
				if _, err := conn.Write([]byte{'N'}); err != nil {
					return nil, nil, fmt.Errorf("startup: answer SSLRequest: %w", err)
				}
				continue
			}
			if _, err := conn.Write([]byte{'S'}); err != nil {
				return nil, nil, fmt.Errorf("startup: answer SSLRequest: %w", err)
			}
			tc := tls.Server(conn, h.cfg.TLS)
			if err := tc.Handshake(); err != nil {
				return nil, nil, fmt.Errorf("startup: TLS handshake with agent: %w", err)
			}
			conn = tc
			// A fresh reader: bytes the agent sent before the handshake
			// (in clear) must never be read as if they came through TLS.
			cc.release(&h.bufs)
			cc = newClientConn(tc, h.cfg.MaxMessageSize, &h.bufs)
			tlsDone = true
		case *pgproto3.GSSEncRequest:
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return nil, nil, fmt.Errorf("startup: answer GSSENCRequest: %w", err)
			}
		case *pgproto3.CancelRequest:
			h.cancels.cancel(s, m)
			return nil, nil, nil
		case *pgproto3.StartupMessage:
			major := m.ProtocolVersion >> 16
			if major != 3 {
				cc.fatal("0A000", fmt.Sprintf("Interlock: unsupported frontend protocol %d.%d", major, m.ProtocolVersion&0xffff))
				return nil, nil, fmt.Errorf("startup: protocol version %#x", m.ProtocolVersion)
			}
			if m.Parameters["replication"] != "" && m.Parameters["replication"] != "false" && m.Parameters["replication"] != "off" && m.Parameters["replication"] != "0" {
				cc.fatal("42501", "Interlock: replication connections are not allowed for agents")
				return nil, nil, errors.New("startup: replication connection refused")
			}
			var unknown []string
			for k := range m.Parameters {
				if strings.HasPrefix(k, "_pq_.") {
					unknown = append(unknown, k)
				}
			}
			if minor := m.ProtocolVersion & 0xffff; minor > 0 || len(unknown) > 0 {
				// We speak 3.0 to the agent whatever the server speaks,
				// since the engine rewrites the key data it sees.
				sort.Strings(unknown)
				cc.w.send(&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unknown})
			}
			return cc, m, nil
		default:
			cc.fatal("08P01", fmt.Sprintf("Interlock: unexpected startup message %T", msg))
			return nil, nil, fmt.Errorf("startup: unexpected %T", msg)
		}
	}
}

// newClientConn wraps the agent's connection; bufs may be nil (tests).
func newClientConn(conn net.Conn, maxMsg int, bufs *bufPool) *clientConn {
	// The wrapper hides the connection's ReadFrom: bufio would otherwise
	// hand every io.CopyN of a server message straight to the socket while
	// its buffer is empty, one write(2) per row.
	w := &lockedWriter{w: bufs.writer(struct{ io.Writer }{conn}, clientBufSize)}
	br := bufs.reader(conn, clientBufSize)
	be := pgproto3.NewBackend(br, w.w)
	be.SetMaxBodyLen(maxMsg)
	return &clientConn{conn: conn, be: be, w: w, br: br}
}

// release returns the buffers to bufs once nothing uses the connection.
func (c *clientConn) release(bufs *bufPool) {
	c.w.mu.Lock()
	bw := c.w.w
	c.w.w = nil // a late send fails rather than write into another session
	c.w.mu.Unlock()
	bufs.putWriter(bw)
	bufs.putReader(c.br)
	c.br, c.be = nil, nil
}

// errReleased is what a send to an agent whose session has ended returns.
var errReleased = errors.New("postgres: the agent's connection was released")

// lockedWriter serialises writes to the agent.
type lockedWriter struct {
	mu  sync.Mutex
	w   *bufio.Writer
	buf []byte
	err error
}

// send encodes msgs, writes and flushes them.
func (l *lockedWriter) send(msgs ...pgproto3.BackendMessage) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w == nil {
		return errReleased
	}
	for _, m := range msgs {
		var err error
		l.buf, err = m.Encode(l.buf[:0])
		if err != nil {
			return fmt.Errorf("encode %T: %w", m, err)
		}
		if _, err := l.w.Write(l.buf); err != nil {
			l.err = err
			return err
		}
	}
	if err := l.w.Flush(); err != nil {
		l.err = err
		return err
	}
	return nil
}
