package approvals

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestManager(t testing.TB, st Store) *Manager {
	t.Helper()
	if st == nil {
		st = NewMemory()
	}
	m, err := New(Config{Store: st, Host: "h1", Log: quietLog(), PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// held is a statement held in a goroutine: its request (once stored) and
// its outcome.
type held struct {
	req  chan *Request
	done chan Decision
	err  chan error
}

func hold(m *Manager, session, text string, timeout time.Duration, ctx context.Context) *held {
	h := &held{req: make(chan *Request, 1), done: make(chan Decision, 1), err: make(chan error, 1)}
	r := &Request{Agent: "writer", Session: session, Target: "db", Statement: text, Rule: "r1", Approvers: []string{"dba"}, AgentSubject: "agent-sub"}
	go func() {
		d, err := m.Hold(ctx, r, text, timeout, func(r *Request) { h.req <- clone(r) })
		h.err <- err
		h.done <- d
	}()
	return h
}

func (h *held) request(t *testing.T) *Request {
	t.Helper()
	select {
	case r := <-h.req:
		return r
	case err := <-h.err:
		t.Fatalf("hold failed: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no request")
	}
	return nil
}

func (h *held) outcome(t *testing.T, within time.Duration) Decision {
	t.Helper()
	select {
	case err := <-h.err:
		if err != nil {
			t.Fatalf("hold: %v", err)
		}
		return <-h.done
	case <-time.After(within):
		t.Fatalf("still held after %s", within)
	}
	return Decision{}
}

func (h *held) stillHeld(t *testing.T) {
	t.Helper()
	select {
	case <-h.err:
		t.Fatalf("released: %+v", <-h.done)
	case <-time.After(100 * time.Millisecond):
	}
}

var alice = Approver{Subject: "alice", Name: "alice@example.com", Roles: []string{"dba"}}

func TestApprovalBindsToOneRequest(t *testing.T) {
	m := newTestManager(t, nil)
	ctx := context.Background()
	a := hold(m, "session-a", "delete from t where id = 1", time.Minute, ctx)
	b := hold(m, "session-b", "delete from t where id = 1", time.Minute, ctx)
	ra, rb := a.request(t), b.request(t)
	if ra.Digest == rb.Digest {
		t.Fatal("two sessions' statements share a digest")
	}
	if ra.Digest != Digest("session-a", "delete from t where id = 1", ra.Seq) {
		t.Fatal("digest is not sha256(session, text, seq)")
	}
	// A's id with B's digest: the approver was shown another statement.
	if _, err := m.Decide(ctx, ra.ID, alice, true, "", rb.Digest); !errors.Is(err, ErrBinding) {
		t.Fatalf("decide with another digest: %v, want ErrBinding", err)
	}
	// A store decision that names A's id but B's session and digest
	// releases nothing.
	if _, err := m.Store().Decide(ctx, Decision{ID: ra.ID, Session: rb.Session, Digest: rb.Digest, Outcome: Approved, By: "x", At: time.Now()}); !errors.Is(err, ErrBinding) {
		t.Fatalf("store decide unbound: %v", err)
	}
	a.stillHeld(t)
	if _, err := m.Decide(ctx, ra.ID, alice, true, "looks fine", ra.Digest); err != nil {
		t.Fatal(err)
	}
	if d := a.outcome(t, time.Second); d.Outcome != Approved || d.By != "alice@example.com (alice)" || d.Reason != "looks fine" {
		t.Fatalf("A: %+v", d)
	}
	b.stillHeld(t)
	// Single use: A's approval cannot be given again (or replayed).
	if _, err := m.Decide(ctx, ra.ID, alice, true, "", ""); !errors.Is(err, ErrDecided) {
		t.Fatalf("second decision: %v, want ErrDecided", err)
	}
	// The same text again in session A is a new request with a new digest.
	a2 := hold(m, "session-a", "delete from t where id = 1", time.Minute, ctx)
	if r := a2.request(t); r.Digest == ra.Digest || r.ID == ra.ID {
		t.Fatal("a repeated statement reuses the earlier approval's binding")
	}
	a2.stillHeld(t)
	if _, err := m.Decide(ctx, rb.ID, alice, false, "no", ""); err != nil {
		t.Fatal(err)
	}
	if d := b.outcome(t, time.Second); d.Outcome != Denied || d.Reason != "no" {
		t.Fatalf("B: %+v", d)
	}
}

// forgingStore returns a decision bound to another statement for every
// request: a tampered shared store.
type forgingStore struct{ *Memory }

func (f forgingStore) Get(ctx context.Context, id string) (*Request, error) {
	r, err := f.Memory.Get(ctx, id)
	if err == nil {
		r.Decision = &Decision{ID: id, Session: r.Session, Digest: "0000", Outcome: Approved, By: "mallory"}
	}
	return r, err
}

func TestUnboundDecisionReleasesNothing(t *testing.T) {
	st := forgingStore{NewMemory()}
	m := newTestManager(t, st)
	h := hold(m, "s", "delete from t", time.Minute, context.Background())
	r := h.request(t)
	m.wake(r.ID)
	if d := h.outcome(t, time.Second); d.Outcome != Denied {
		t.Fatalf("forged approval: %+v, want denied", d)
	}
}

func TestExpiry(t *testing.T) {
	m := newTestManager(t, nil)
	h := hold(m, "s", "delete from t", 150*time.Millisecond, context.Background())
	r := h.request(t)
	start := time.Now()
	d := h.outcome(t, 2*time.Second)
	if d.Outcome != Expired || time.Since(start) > time.Second {
		t.Fatalf("outcome %+v after %s", d, time.Since(start))
	}
	if _, err := m.Decide(context.Background(), r.ID, alice, true, "", ""); !errors.Is(err, ErrDecided) {
		t.Fatalf("approve after expiry: %v, want ErrDecided", err)
	}
	if l, _ := m.List(context.Background()); len(l) != 0 {
		t.Fatalf("expired request still listed: %+v", l)
	}
	if got := testutil.ToFloat64(m.cfg.Metrics.Decisions.WithLabelValues("expired")); got != 1 {
		t.Errorf("expired decisions = %v", got)
	}
	// An approval that arrives when the request is past its expiry but
	// the holder has not noticed yet is refused by the store.
	st := NewMemory()
	st.Create(context.Background(), &Request{ID: "x", Session: "s", Digest: "d", Approvers: []string{"dba"}, ExpiresAt: time.Now().Add(-time.Second)})
	if _, err := st.Decide(context.Background(), Decision{ID: "x", Session: "s", Digest: "d", Outcome: Approved}); !errors.Is(err, ErrExpired) {
		t.Fatalf("late approval: %v, want ErrExpired", err)
	}
}

func TestCancelledWhenSessionEnds(t *testing.T) {
	m := newTestManager(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	h := hold(m, "s", "delete from t", time.Minute, ctx)
	r := h.request(t)
	cancel()
	if d := h.outcome(t, time.Second); d.Outcome != Cancelled {
		t.Fatalf("outcome %+v", d)
	}
	if _, err := m.Decide(context.Background(), r.ID, alice, true, "", ""); !errors.Is(err, ErrDecided) {
		t.Fatalf("approve after cancel: %v", err)
	}
}

func TestApproverChecks(t *testing.T) {
	m := newTestManager(t, nil)
	ctx := context.Background()
	h := hold(m, "s", "delete from t", time.Minute, ctx)
	r := h.request(t)
	for _, tc := range []struct {
		name    string
		a       Approver
		approve bool
		reason  string
		want    error
	}{
		{"no approver role", Approver{Subject: "bob", Roles: []string{"analyst"}}, true, "", ErrForbidden},
		{"no roles", Approver{Subject: "bob"}, true, "", ErrForbidden},
		{"the agent itself", Approver{Subject: "agent-sub", Roles: []string{"dba"}}, true, "", ErrSelfApproval},
		{"the agent as local wildcard", Approver{Subject: "agent-sub", Roles: []string{AnyRole}}, true, "", ErrSelfApproval},
		{"anonymous", Approver{Roles: []string{"dba"}}, true, "", ErrUnauthenticated},
		{"deny without reason", alice, false, "  ", ErrReasonRequired},
		{"unknown id", alice, true, "", ErrNotFound},
	} {
		id := r.ID
		if tc.want == ErrNotFound {
			id = "nope"
		}
		if _, err := m.Decide(ctx, id, tc.a, tc.approve, tc.reason, ""); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	h.stillHeld(t)
	if _, err := m.Decide(ctx, r.ID, Approver{Subject: "local:root", Roles: []string{AnyRole}}, true, "", ""); err != nil {
		t.Fatalf("local operator: %v", err)
	}
	h.outcome(t, time.Second)
}

// BenchmarkApproveToRelease measures the time from Decide returning to
// the holder being released, on one host (memory store).
func BenchmarkApproveToRelease(b *testing.B) {
	m := newTestManager(b, nil)
	ctx := context.Background()
	var total time.Duration
	for b.Loop() {
		r := &Request{Session: "s", Approvers: []string{"dba"}}
		got := make(chan *Request, 1)
		done := make(chan time.Time, 1)
		go func() {
			m.Hold(ctx, r, "delete", time.Minute, func(r *Request) { got <- clone(r) })
			done <- time.Now()
		}()
		req := <-got
		if _, err := m.Decide(ctx, req.ID, alice, true, "", ""); err != nil {
			b.Fatal(err)
		}
		returned := time.Now()
		total += (<-done).Sub(returned)
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs/release")
}
