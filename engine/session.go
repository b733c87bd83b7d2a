package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"sync/atomic"
	"time"
)

// Handler serves the sessions of one protocol. It owns client for the
// duration of Serve and returns when the session is over.
type Handler interface {
	Serve(ctx context.Context, s *Session, client net.Conn) error
}

// SessionEvents hears about every session's start and end; the recording
// stage implements it.
type SessionEvents interface {
	// SessionStarted is called once the identity is complete, before
	// IdentityReady closes, so anything that waits for IdentityReady (the
	// statement recorder) comes after it. An error ends the session:
	// nothing runs that was not recorded.
	SessionStarted(s *Session) error
	// SessionEnded is called when the session is over; err is why, nil for
	// a clean end.
	SessionEnded(s *Session, err error)
}

// Session is one agent connection to one target.
type Session struct {
	ID uint64
	// UID identifies the session beyond this process (recordings, audit):
	// 128 random bits in hex.
	UID string
	// Identity is complete once IdentityReady is closed: the executable and
	// cgroup path are read from /proc off the connect path, concurrently
	// with the handler's upstream dial. Agent, roles, target, pid and
	// addresses are there from the start.
	Identity      Identity
	IdentityReady <-chan struct{}
	Started       time.Time
	Log           *slog.Logger

	dialer  *net.Dialer
	metrics *Metrics
	in, out atomic.Int64
}

// AddBytes accounts relayed bytes; handlers call it as data flows.
func (s *Session) AddBytes(direction string, n int64) {
	if n <= 0 {
		return
	}
	if direction == DirClientToTarget {
		s.in.Add(n)
	} else {
		s.out.Add(n)
	}
	if s.metrics != nil {
		s.metrics.Bytes.WithLabelValues(direction).Add(float64(n))
	}
}

// NewSession returns a session that is not attached to a server, for
// protocol handlers' own tests: it dials without a mark and counts no
// metrics.
func NewSession(id Identity, log *slog.Logger) *Session {
	ready := make(chan struct{})
	close(ready)
	return &Session{ID: 1, UID: NewSessionUID(), Identity: id, IdentityReady: ready, Started: time.Now(), Log: log, dialer: &net.Dialer{}}
}

// SessionInfo is a session as `interlock status` shows it.
type SessionInfo struct {
	ID            uint64    `json:"id"`
	Identity      Identity  `json:"identity"`
	Started       time.Time `json:"started"`
	BytesToTarget int64     `json:"bytes_to_target"`
	BytesToClient int64     `json:"bytes_to_client"`
}

// Info snapshots the session (waiting for the identity to be complete).
func (s *Session) Info() SessionInfo {
	<-s.IdentityReady
	return SessionInfo{ID: s.ID, Identity: s.Identity, Started: s.Started, BytesToTarget: s.in.Load(), BytesToClient: s.out.Load()}
}

// NewSessionUID returns a new random session UID.
func NewSessionUID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
