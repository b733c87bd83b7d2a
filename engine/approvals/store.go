package approvals

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Store keeps requests and their decisions. Exactly one decision wins per
// request; every host's subscriber hears about it.
type Store interface {
	// Create adds a pending request.
	Create(ctx context.Context, r *Request) error
	// Get returns a request with its decision, if any.
	Get(ctx context.Context, id string) (*Request, error)
	// List returns the pending requests (not decided, not expired),
	// oldest first.
	List(ctx context.Context) ([]*Request, error)
	// Decide records d for the pending request d.ID if d carries that
	// request's session and digest (ErrBinding otherwise). Approvals and
	// denials need the request not to have expired (ErrExpired); expiry
	// and cancellation do not. A request that already has a decision
	// returns ErrDecided with the request as it is.
	Decide(ctx context.Context, d Decision) (*Request, error)
	// Subscribe calls fn with the id of every request decided from now
	// on, on any host sharing the store. fn must not block.
	Subscribe(fn func(id string))
	// Shared reports whether other hosts share the store (then holders
	// also poll, in case a notification was lost).
	Shared() bool
	Close() error
}

// Memory is the single-host store. Decided requests are kept for
// Retention (default 1h) so that `show` still finds them.
type Memory struct {
	Retention time.Duration

	mu   sync.Mutex
	reqs map[string]*Request
	subs []func(string)
	now  func() time.Time
}

// NewMemory returns an empty single-host store.
func NewMemory() *Memory {
	return &Memory{Retention: time.Hour, reqs: map[string]*Request{}, now: time.Now}
}

// Create implements Store.
func (m *Memory) Create(_ context.Context, r *Request) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gc()
	c := *r
	m.reqs[r.ID] = &c
	return nil
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, id string) (*Request, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.reqs[id]
	if !ok {
		return nil, ErrNotFound
	}
	return clone(r), nil
}

// List implements Store.
func (m *Memory) List(context.Context) ([]*Request, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	var out []*Request
	for _, r := range m.reqs {
		if r.Pending(now) {
			out = append(out, clone(r))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RequestedAt.Before(out[j].RequestedAt) })
	return out, nil
}

// Decide implements Store.
func (m *Memory) Decide(_ context.Context, d Decision) (*Request, error) {
	m.mu.Lock()
	r, ok := m.reqs[d.ID]
	switch {
	case !ok:
		m.mu.Unlock()
		return nil, ErrNotFound
	case r.Decision != nil:
		c := clone(r)
		m.mu.Unlock()
		return c, ErrDecided
	case d.Session != r.Session || d.Digest != r.Digest:
		m.mu.Unlock()
		return nil, ErrBinding
	case (d.Outcome == Approved || d.Outcome == Denied) && !m.now().Before(r.ExpiresAt):
		c := clone(r)
		m.mu.Unlock()
		return c, ErrExpired
	}
	dc := d
	r.Decision = &dc
	c := clone(r)
	subs := m.subs
	m.mu.Unlock()
	for _, fn := range subs {
		fn(d.ID)
	}
	return c, nil
}

// Subscribe implements Store.
func (m *Memory) Subscribe(fn func(string)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.subs = append(m.subs, fn)
}

// Shared implements Store: a memory store is this host's alone.
func (m *Memory) Shared() bool { return false }

// Close implements Store.
func (m *Memory) Close() error { return nil }

// gc drops requests decided or expired longer than Retention ago.
func (m *Memory) gc() {
	cut := m.now().Add(-m.Retention)
	for id, r := range m.reqs {
		end := r.ExpiresAt
		if r.Decision != nil {
			end = r.Decision.At
		}
		if end.Before(cut) {
			delete(m.reqs, id)
		}
	}
}

func clone(r *Request) *Request {
	c := *r
	c.Roles = append([]string(nil), r.Roles...)
	c.Approvers = append([]string(nil), r.Approvers...)
	c.Objects = append([]Object(nil), r.Objects...)
	if r.Decision != nil {
		d := *r.Decision
		c.Decision = &d
	}
	return &c
}
