package approvals

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Manager.
type Config struct {
	// Store keeps requests and decisions (default: a new Memory store).
	Store Store
	// Host names this engine in requests (default: the hostname).
	Host string
	// Recorder gets the events for the session recording (nil: the log
	// only).
	Recorder Recorder
	// Notifier tells approvers (nil: nobody is told; they must list).
	Notifier Notifier
	// PollInterval is how often a holder re-reads its request from a
	// shared store, in case a notification was lost (default 2s).
	PollInterval time.Duration
	Metrics      *Metrics
	Log          *slog.Logger
}

// CheckAndSetDefaults validates c and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	if c.Store == nil {
		c.Store = NewMemory()
	}
	if c.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("approvals: hostname: %w", err)
		}
		c.Host = h
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 2 * time.Second
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return nil
}

// Manager holds statements until their decision and takes decisions from
// approvers. It is safe for concurrent use.
type Manager struct {
	cfg Config
	seq atomic.Uint64

	mu      sync.Mutex
	waiters map[string]chan struct{} // request id → wake-up for its holder
}

// New returns a Manager; it subscribes to the store's decisions.
func New(cfg Config) (*Manager, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, waiters: map[string]chan struct{}{}}
	cfg.Store.Subscribe(m.wake)
	return m, nil
}

// Store returns the manager's store.
func (m *Manager) Store() Store { return m.cfg.Store }

// wake tells the holder of request id to look at it again ("": every
// holder, after the store may have missed notifications).
func (m *Manager) wake(id string) {
	m.mu.Lock()
	var chs []chan struct{}
	if id == "" {
		for _, ch := range m.waiters {
			chs = append(chs, ch)
		}
	} else if ch := m.waiters[id]; ch != nil {
		chs = append(chs, ch)
	}
	m.mu.Unlock()
	for _, ch := range chs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Hold stores r as a pending request that expires after timeout, records
// it, tells the notifier and calls pending (which tells the agent), then
// waits for the outcome. text is the statement's original text: only its
// digest is kept, r.Statement carries the redacted text.
//
// Hold returns the decision that ended the request: Approved releases the
// statement; Denied, Expired and Cancelled (ctx ended first) do not. An
// error means the request could not be stored or recorded, and the
// statement must be refused.
func (m *Manager) Hold(ctx context.Context, r *Request, text string, timeout time.Duration, pending func(*Request)) (Decision, error) {
	now := time.Now()
	r.ID = newID()
	r.Host = m.cfg.Host
	r.Seq = m.seq.Add(1)
	r.Digest = Digest(r.Session, text, r.Seq)
	r.RequestedAt = now.UTC()
	r.ExpiresAt = now.Add(timeout).UTC()
	r.Decision = nil

	wake := make(chan struct{}, 1)
	m.mu.Lock()
	m.waiters[r.ID] = wake
	m.mu.Unlock()
	m.cfg.Metrics.Pending.Inc()
	defer func() {
		m.mu.Lock()
		delete(m.waiters, r.ID)
		m.mu.Unlock()
		m.cfg.Metrics.Pending.Dec()
	}()

	if err := m.cfg.Store.Create(ctx, r); err != nil {
		return Decision{}, fmt.Errorf("approvals: store request %s: %w", r.ID, err)
	}
	logEvents(m.cfg.Log, r)
	if m.cfg.Recorder != nil {
		if err := m.cfg.Recorder.ApprovalRequested(ctx, r); err != nil {
			m.finish(r, Decision{Outcome: Cancelled, Reason: "the request could not be recorded"})
			return Decision{}, fmt.Errorf("approvals: record request %s: %w", r.ID, err)
		}
	}
	if m.cfg.Notifier != nil {
		m.cfg.Notifier.Requested(clone(r))
	}
	if pending != nil {
		pending(r)
	}

	d, err := m.wait(ctx, r, wake)
	r.Decision = &d
	m.cfg.Metrics.Decisions.WithLabelValues(string(d.Outcome)).Inc()
	m.cfg.Metrics.Wait.Observe(time.Since(now).Seconds())
	logEvents(m.cfg.Log, r)
	if m.cfg.Notifier != nil {
		m.cfg.Notifier.Decided(clone(r))
	}
	if m.cfg.Recorder != nil {
		rctx := ctx
		if ctx.Err() != nil {
			rctx = context.Background()
		}
		if rerr := m.cfg.Recorder.ApprovalDecided(rctx, r); rerr != nil && err == nil {
			err = fmt.Errorf("approvals: record decision of %s: %w", r.ID, rerr)
		}
	}
	return d, err
}

// wait blocks until r has a decision bound to it, it expires, or ctx ends.
func (m *Manager) wait(ctx context.Context, r *Request, wake <-chan struct{}) (Decision, error) {
	expire := time.NewTimer(time.Until(r.ExpiresAt))
	defer expire.Stop()
	var poll <-chan time.Time
	if m.cfg.Store.Shared() {
		t := time.NewTicker(m.cfg.PollInterval)
		defer t.Stop()
		poll = t.C
	}
	for {
		select {
		case <-wake:
		case <-poll:
		case <-expire.C:
			return m.finish(r, Decision{Outcome: Expired, Reason: fmt.Sprintf("no decision within %s", r.ExpiresAt.Sub(r.RequestedAt).Round(time.Millisecond))}), nil
		case <-ctx.Done():
			return m.finish(r, Decision{Outcome: Cancelled, Reason: "the session or the engine ended first"}), nil
		}
		got, err := m.cfg.Store.Get(ctx, r.ID)
		if err != nil {
			if ctx.Err() == nil {
				m.cfg.Log.Warn("approvals: reading the request failed; still waiting", "id", r.ID, "error", err)
			}
			continue
		}
		if d := got.Decision; d != nil {
			if !d.bound(r) {
				// Not this request's decision (a tampered shared store):
				// it releases nothing, and the request ends denied.
				m.cfg.Log.Error("approvals: a decision not bound to the request; refusing the statement", "id", r.ID, "decision_session", d.Session, "decision_digest", d.Digest)
				return Decision{ID: r.ID, Session: r.Session, Digest: r.Digest, Outcome: Denied, By: "interlock", At: time.Now().UTC(), Reason: "the decision was not bound to this statement"}, nil
			}
			return *d, nil
		}
	}
}

// finish ends r with d (expiry, cancellation) unless a decision won the
// race, which is then the outcome.
func (m *Manager) finish(r *Request, d Decision) Decision {
	d.ID, d.Session, d.Digest, d.By, d.At = r.ID, r.Session, r.Digest, "interlock", time.Now().UTC()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := m.cfg.Store.Decide(ctx, d)
	switch {
	case err == nil:
	case errors.Is(err, ErrDecided) && got != nil && got.Decision != nil && got.Decision.bound(r):
		if d.Outcome == Cancelled {
			// The session is gone: whatever was decided, nothing runs.
			return d
		}
		return *got.Decision
	default:
		m.cfg.Log.Warn("approvals: could not store the end of the request", "id", r.ID, "outcome", d.Outcome, "error", err)
	}
	return d
}

// Approver is a human deciding requests, as authenticated by the API.
type Approver struct {
	// Subject is the identity provider's subject ("sub"), or "local:<user>"
	// for the unix socket.
	Subject string `json:"subject"`
	// Name is for humans: email or preferred_username.
	Name string `json:"name,omitempty"`
	// Roles are the approver roles held; AnyRole holds all of them.
	Roles []string `json:"roles"`
}

// AnyRole in Approver.Roles lets a local operator decide any request.
const AnyRole = "*"

// String is how a decision names its approver.
func (a Approver) String() string {
	if a.Name != "" && a.Name != a.Subject {
		return a.Name + " (" + a.Subject + ")"
	}
	return a.Subject
}

// CanDecide reports why a may not decide r (nil when it may).
func (a Approver) CanDecide(r *Request) error {
	if a.Subject == "" {
		return ErrUnauthenticated
	}
	if r.AgentSubject != "" && a.Subject == r.AgentSubject {
		return ErrSelfApproval
	}
	if slices.Contains(a.Roles, AnyRole) {
		return nil
	}
	for _, role := range a.Roles {
		if slices.Contains(r.Approvers, role) {
			return nil
		}
	}
	return ErrForbidden
}

// Get returns one request.
func (m *Manager) Get(ctx context.Context, id string) (*Request, error) {
	return m.cfg.Store.Get(ctx, id)
}

// List returns the pending requests.
func (m *Manager) List(ctx context.Context) ([]*Request, error) {
	return m.cfg.Store.List(ctx)
}

// Decide approves or denies request id as a. digest, when not empty, must
// be the request's statement digest (what the approver was shown). It
// returns the request with its decision.
func (m *Manager) Decide(ctx context.Context, id string, a Approver, approve bool, reason, digest string) (*Request, error) {
	reason = strings.TrimSpace(reason)
	if !approve && reason == "" {
		return nil, ErrReasonRequired
	}
	if len(reason) > MaxReason {
		return nil, fmt.Errorf("%w: the reason is longer than %d bytes", ErrInvalid, MaxReason)
	}
	r, err := m.cfg.Store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if digest != "" && digest != r.Digest {
		return nil, ErrBinding
	}
	if err := a.CanDecide(r); err != nil {
		return nil, err
	}
	if r.Decision != nil {
		return r, ErrDecided
	}
	if !time.Now().Before(r.ExpiresAt) {
		return r, ErrExpired
	}
	d := Decision{ID: r.ID, Session: r.Session, Digest: r.Digest, Outcome: Denied, By: a.String(), At: time.Now().UTC(), Reason: reason}
	if approve {
		d.Outcome = Approved
	}
	return m.cfg.Store.Decide(ctx, d)
}
