package recording

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/interlockhq/interlock/engine"
)

// SessionLog is one session's part of the chain: protocol adapters record
// statements and results through it. It is safe for concurrent use (a
// session's client and server loops both record).
type SessionLog struct {
	r  *Recorder
	ID string

	mu      sync.Mutex
	n       int       // statements so far
	pending []pending // statements waiting for their result, oldest first
	masked  int64     // values masked in the result being relayed

	// The connected record: queued by Connected, confirmed by the first
	// statement or bind (connRetry: its write failed, append it again).
	conn      *Connected
	connDone  <-chan error
	connRetry bool
}

type pending struct {
	n         int
	forwarded bool // false: the answer will be Interlock's refusal
}

// SessionStarted implements engine.SessionEvents: the session start is
// durable before any statement of the session is decided.
func (r *Recorder) SessionStarted(s *engine.Session) error {
	id := s.Identity
	ev := SessionStart{
		Agent: id.Agent, Roles: id.Roles, PID: id.PID, Exe: id.Exe, CgroupID: id.CgroupID, CgroupPath: id.CgroupPath,
		Target: id.Target, Protocol: id.Protocol, OrigDst: id.OrigDst.String(), Client: id.Client.String(),
		EngineID: s.ID, Started: s.Started,
	}
	l := &SessionLog{r: r, ID: sessionID(s)}
	if err := r.Append(context.Background(), TypeSessionStart, l.ID, ev); err != nil {
		return err
	}
	r.sessions.Store(s, l)
	return nil
}

// SessionEnded implements engine.SessionEvents.
func (r *Recorder) SessionEnded(s *engine.Session, err error) {
	v, ok := r.sessions.LoadAndDelete(s)
	if !ok {
		return // its start was never recorded, so it ran nothing
	}
	l := v.(*SessionLog)
	info := s.Info()
	reason := "closed"
	if err != nil {
		reason = err.Error()
	}
	l.mu.Lock()
	n := l.n
	l.mu.Unlock()
	ev := SessionEnd{
		DurationMS:    float64(time.Since(s.Started).Microseconds()) / 1000,
		BytesToTarget: info.BytesToTarget, BytesToClient: info.BytesToClient,
		Statements: n, Reason: reason,
	}
	if err := r.Append(context.Background(), TypeSessionEnd, l.ID, ev); err != nil && !errors.Is(err, ErrClosed) {
		r.cfg.Log.Error("recording: session end not recorded", "session", l.ID, "error", err)
	}
}

// Session returns the log of a session whose start was recorded. It waits
// for the session's identity (and so for SessionStarted) first.
func (r *Recorder) Session(s *engine.Session) (*SessionLog, error) {
	<-s.IdentityReady
	v, ok := r.sessions.Load(s)
	if !ok {
		return nil, ErrNoSession
	}
	return v.(*SessionLog), nil
}

func sessionID(s *engine.Session) string {
	if s.UID != "" {
		return s.UID
	}
	return engine.NewSessionUID()
}

// Statement numbers st (st.N), records it and returns once it is durable.
//
// Results are paired with statements in the order the target answers:
// awaitsResult puts the statement in line for one (a forwarded statement,
// or the refused one of a refused request, whose answer is Interlock's
// refusal). The pairing is exact while each request is answered before the
// next one is sent, and for pipelined requests that succeed; after an error
// in a pipeline, later results may be recorded as results of no statement.
func (l *SessionLog) Statement(ctx context.Context, st *Statement, awaitsResult bool) error {
	if err := l.connectedRecorded(ctx); err != nil {
		return err
	}
	l.mu.Lock()
	l.n++
	st.N = l.n
	if awaitsResult {
		l.pending = append(l.pending, pending{n: st.N, forwarded: st.Forwarded})
	}
	l.mu.Unlock()
	return l.r.Append(ctx, TypeStatement, l.ID, st)
}

// Connected records the session's handshake. It does not wait: the
// session's first statement (or bind) waits for it, and is refused when it
// could not be recorded, like a statement whose own record failed.
func (l *SessionLog) Connected(c *Connected) {
	done, err := l.r.appendAsync(TypeConnected, l.ID, c)
	l.mu.Lock()
	l.conn, l.connDone, l.connRetry = c, done, err != nil
	l.mu.Unlock()
}

// connectedRecorded returns once the connected record is durable, writing
// it again if its first write failed.
func (l *SessionLog) connectedRecorded(ctx context.Context) error {
	l.mu.Lock()
	c, done, retry := l.conn, l.connDone, l.connRetry
	l.mu.Unlock()
	if done == nil && !retry {
		return nil
	}
	var err error
	if done != nil {
		select {
		case err = <-done:
		case <-ctx.Done():
			return ctx.Err() // the outcome stays in done for the next call
		}
	}
	if err != nil || done == nil {
		err = l.r.Append(ctx, TypeConnected, l.ID, c)
	}
	l.mu.Lock()
	l.connDone, l.connRetry = nil, err != nil
	l.mu.Unlock()
	return err
}

// Bind records the parameter values of an execution and returns once the
// record is durable (or failed), like Statement.
func (l *SessionLog) Bind(ctx context.Context, b *Bind) error {
	if err := l.connectedRecorded(ctx); err != nil {
		return err
	}
	return l.r.Append(ctx, TypeBind, l.ID, b)
}

// Completed records a successful result for the oldest statement waiting
// for one (res.N stays 0 when none waits: e.g. a prepared statement
// executed again). It does not wait for the record to be durable.
func (l *SessionLog) Completed(res *Result) {
	l.mu.Lock()
	if len(l.pending) > 0 {
		res.N = l.pending[0].n
		l.pending = l.pending[1:]
	}
	if res.Masked == 0 {
		res.Masked, l.masked = l.masked, 0
	}
	l.mu.Unlock()
	l.r.Enqueue(TypeResult, l.ID, res)
}

// Masked notes how many values the masking stage rewrote in the result
// about to complete; the next Completed records the count (never the
// values).
func (l *SessionLog) Masked(n int64) {
	l.mu.Lock()
	l.masked += n
	l.mu.Unlock()
}

// Failed records an error as the result of the oldest statement waiting
// for one. The target skips the rest of a failed request (the rest of a
// simple Query, or up to the next Sync), so the other waiting statements
// get no result and leave the line. The message is
// kept for Interlock's own refusals, and for the target's errors only with
// redaction none (it may quote data).
func (l *SessionLog) Failed(code, message string) {
	res := &Result{Code: code}
	l.mu.Lock()
	if len(l.pending) > 0 {
		res.N, res.Refused = l.pending[0].n, !l.pending[0].forwarded
	}
	l.pending = l.pending[:0]
	l.mu.Unlock()
	if res.Refused || l.r.cfg.Redaction == RedactNone {
		res.Message = message
	}
	l.r.Enqueue(TypeResult, l.ID, res)
}

// Withdrawn records that statement n, recorded as forwarded, was not
// forwarded after all (a later statement of its request was refused
// before anything was sent): its result is a refusal with this code and
// message, and it no longer waits for the target's answer.
func (l *SessionLog) Withdrawn(n int, code, message string) {
	l.Unpend(n)
	l.r.Enqueue(TypeResult, l.ID, &Result{N: n, Code: code, Message: message, Refused: true})
}

// Unpend stops statement n from waiting for a result (a later record
// stands for its execution), without recording anything.
func (l *SessionLog) Unpend(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, p := range l.pending {
		if p.n == n {
			l.pending = append(l.pending[:i], l.pending[i+1:]...)
			return
		}
	}
}

// Refusing notes that statement n, recorded as forwarded, is refused
// after all by a later stage (an approval denied): the refusal that
// arrives as its result is recorded as Interlock's (Result.Refused).
func (l *SessionLog) Refusing(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.pending {
		if l.pending[i].n == n {
			l.pending[i].forwarded = false
		}
	}
}

// Redaction is the recorder's redaction setting.
func (l *SessionLog) Redaction() string { return l.r.cfg.Redaction }
