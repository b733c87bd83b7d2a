package postgres

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/interlockhq/interlock/engine"
)

// cancelKey is the BackendKeyData the agent sees: random, never the
// server's, so an agent learns nothing it could use directly against the
// server and cannot cancel another agent's queries.
type cancelKey struct {
	pid    uint32
	secret []byte
}

type cancelTarget struct {
	agent     string
	dst       netip.AddrPort
	pid       uint32
	secret    []byte
	secretKey []byte // the agent-side secret, compared in constant time
	sess      *engine.Session
	hold      func() // cancels the statement held for an approval, if any
}

// cancelRegistry maps agent-side keys to upstream backends.
type cancelRegistry struct {
	mu sync.Mutex
	m  map[uint32]*cancelTarget
}

func newCancelRegistry() *cancelRegistry {
	return &cancelRegistry{m: map[uint32]*cancelTarget{}}
}

func (r *cancelRegistry) register(s *engine.Session, up *upstream) cancelKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var b [8]byte
		rand.Read(b[:])
		pid := binary.BigEndian.Uint32(b[:4]) & 0x7fffffff
		if _, taken := r.m[pid]; taken || pid == 0 {
			continue
		}
		secret := append([]byte(nil), b[4:]...)
		r.m[pid] = &cancelTarget{agent: s.Identity.Agent, dst: s.Identity.OrigDst, pid: up.pid, secret: up.secret, secretKey: secret, sess: s}
		return cancelKey{pid: pid, secret: secret}
	}
}

// setHold registers (or with nil clears) the function that cancels the
// statement the session holds.
func (r *cancelRegistry) setHold(k cancelKey, fn func()) {
	r.mu.Lock()
	if t, ok := r.m[k.pid]; ok {
		t.hold = fn
	}
	r.mu.Unlock()
}

func (r *cancelRegistry) unregister(k cancelKey) {
	r.mu.Lock()
	delete(r.m, k.pid)
	r.mu.Unlock()
}

// cancel forwards an agent's CancelRequest to the backend it names, if the
// key is genuine and the requester is the same agent. A forged key does
// nothing, exactly like the server, which never answers cancel requests.
func (r *cancelRegistry) cancel(s *engine.Session, req *pgproto3.CancelRequest) {
	r.mu.Lock()
	t, ok := r.m[req.ProcessID]
	var hold func()
	if ok {
		hold = t.hold
	}
	r.mu.Unlock()
	if !ok || subtle.ConstantTimeCompare(t.secretKey, req.SecretKey) != 1 || t.agent != s.Identity.Agent {
		s.Log.Warn("ignored cancel request with an unknown key", "pid", req.ProcessID)
		return
	}
	if hold != nil {
		// The statement is still held: it has not reached the server.
		hold()
		t.sess.Log.Info("held statement cancelled at the agent's request")
		return
	}
	if err := sendCancel(s, t.dst, t.pid, t.secret); err != nil {
		s.Log.Warn("cancel request failed", "error", err)
		return
	}
	t.sess.Log.Info("query cancelled at the agent's request")
}

// cancelBackend stops whatever the server is doing for a session whose
// agent is gone.
func (r *cancelRegistry) cancelBackend(s *engine.Session, up *upstream) {
	if err := sendCancel(s, s.Identity.OrigDst, up.pid, up.secret); err != nil {
		s.Log.Warn("cancel after agent disconnect failed", "error", err)
		return
	}
	s.Log.Info("cancelled the server's running query: the agent disconnected")
}

func sendCancel(s *engine.Session, dst netip.AddrPort, pid uint32, secret []byte) error {
	ctx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	conn, err := s.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		return fmt.Errorf("dial target: %w", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	msg, _ := (&pgproto3.CancelRequest{ProcessID: pid, SecretKey: secret}).Encode(nil)
	if _, err := conn.Write(msg); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	// The server closes the connection once it has processed the request.
	conn.Read(make([]byte, 1))
	return nil
}
