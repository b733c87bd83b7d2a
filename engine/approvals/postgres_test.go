package approvals

import (
	"context"
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/interlockhq/interlock/test/harness"
)

// TestPostgresStoreAcrossHosts runs two managers ("hosts") on one shared
// store in a real PostgreSQL: a statement held on one is released by an
// approval given on the other, through LISTEN/NOTIFY.
func TestPostgresStoreAcrossHosts(t *testing.T) {
	harness.RequirePrivileged(t)
	pg := harness.StartPostgres(t)
	ctx := context.Background()
	dsn := pg.CreateDatabase(t, "approvals")
	open := func(host string) *Manager {
		st, err := OpenPostgres(ctx, dsn, 5*time.Second, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		// A long poll interval: the release must come from NOTIFY.
		m, err := New(Config{Store: st, Host: host, Log: quietLog(), PollInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	h1, h2 := open("host-1"), open("host-2")

	t.Run("approve on one host releases on the other", func(t *testing.T) {
		var lat, full []time.Duration
		for range 10 {
			h := hold(h1, "s1", "delete from t where id = 1", time.Minute, ctx)
			r := h.request(t)
			l, err := h2.List(ctx)
			if err != nil || len(l) != 1 || l[0].ID != r.ID || l[0].Host != "host-1" {
				t.Fatalf("host-2 lists %+v %v", l, err)
			}
			called := time.Now()
			if _, err := h2.Decide(ctx, r.ID, alice, true, "ok", r.Digest); err != nil {
				t.Fatal(err)
			}
			returned := time.Now()
			if d := h.outcome(t, 2*time.Second); d.Outcome != Approved || d.By != alice.String() {
				t.Fatalf("outcome %+v", d)
			}
			lat = append(lat, time.Since(returned))
			full = append(full, time.Since(called))
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		sort.Slice(full, func(i, j int) bool { return full[i] < full[j] })
		t.Logf("approve (host-2 Decide returns) → release (host-1): median %s, max %s; from the Decide call: median %s, max %s (n=%d)",
			lat[len(lat)/2], lat[len(lat)-1], full[len(full)/2], full[len(full)-1], len(lat))
		if lat[len(lat)/2] > 500*time.Millisecond {
			t.Errorf("median cross-host release %s exceeds 500ms", lat[len(lat)/2])
		}
	})

	t.Run("binding, single use and expiry hold in the shared store", func(t *testing.T) {
		a := hold(h1, "sa", "delete from t", time.Minute, ctx)
		b := hold(h2, "sb", "delete from t", 300*time.Millisecond, ctx)
		ra, rb := a.request(t), b.request(t)
		if _, err := h1.Store().Decide(ctx, Decision{ID: ra.ID, Session: rb.Session, Digest: rb.Digest, Outcome: Approved, By: "x", At: time.Now()}); !errors.Is(err, ErrBinding) {
			t.Fatalf("unbound decision: %v", err)
		}
		a.stillHeld(t)
		if d := b.outcome(t, 2*time.Second); d.Outcome != Expired {
			t.Fatalf("b: %+v", d)
		}
		if _, err := h1.Decide(ctx, rb.ID, alice, true, "", ""); !errors.Is(err, ErrDecided) {
			t.Fatalf("approve expired: %v", err)
		}
		if _, err := h2.Decide(ctx, ra.ID, alice, false, "no", ""); err != nil {
			t.Fatal(err)
		}
		if d := a.outcome(t, 2*time.Second); d.Outcome != Denied || d.Reason != "no" {
			t.Fatalf("a: %+v", d)
		}
		if _, err := h1.Decide(ctx, ra.ID, alice, true, "", ""); !errors.Is(err, ErrDecided) {
			t.Fatalf("second decision: %v", err)
		}
	})

	t.Run("a lost listener is resynced by polling", func(t *testing.T) {
		st, err := OpenPostgres(ctx, dsn, 5*time.Second, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		st.cancel() // stop the listener: only the poll remains
		<-st.done
		m, _ := New(Config{Store: st, Host: "host-3", Log: quietLog(), PollInterval: 50 * time.Millisecond})
		h := hold(m, "s3", "delete", time.Minute, ctx)
		r := h.request(t)
		h2.Decide(ctx, r.ID, alice, true, "", "")
		if d := h.outcome(t, time.Second); d.Outcome != Approved {
			t.Fatalf("%+v", d)
		}
	})
}
