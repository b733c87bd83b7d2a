package approvals

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

type receiver struct {
	mu     sync.Mutex
	bodies []string
	got    chan string
}

func newReceiver(t *testing.T) (*receiver, *httptest.Server) {
	rc := &receiver{got: make(chan string, 16)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.bodies = append(rc.bodies, string(b))
		rc.mu.Unlock()
		rc.got <- string(b)
	}))
	t.Cleanup(srv.Close)
	return rc, srv
}

func (rc *receiver) next(t *testing.T) string {
	t.Helper()
	select {
	case b := <-rc.got:
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("no webhook")
	}
	return ""
}

func TestWebhookPayloads(t *testing.T) {
	jsonRC, jsonSrv := newReceiver(t)
	slackRC, slackSrv := newReceiver(t)
	metrics := NewMetrics(nil)
	wh := NewWebhooks(WebhookConfig{Hooks: []Webhook{{URL: jsonSrv.URL + "/hook", Format: FormatJSON}, {URL: slackSrv.URL + "/services/T/B/secret", Format: FormatSlack}},
		Metrics: metrics, Log: quietLog()})
	defer wh.Close()
	m, _ := New(Config{Host: "h1", Notifier: wh, Metrics: metrics, Log: quietLog()})
	h := hold(m, "s", "delete from orders where note = '<b>&'", time.Minute, context.Background())
	r := h.request(t)

	var ev WebhookEvent
	if err := json.Unmarshal([]byte(jsonRC.next(t)), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Event != "approval.requested" || ev.Request.ID != r.ID || ev.Request.Digest != r.Digest || ev.Approve != "interlock approvals approve "+r.ID+" --reason '…'" {
		t.Fatalf("generic payload: %+v", ev)
	}
	var slack struct {
		Text string `json:"text"`
	}
	if err := json.Unmarshal([]byte(slackRC.next(t)), &slack); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Approval needed", "agent `writer`", "&lt;b&gt;&amp;", "interlock approvals approve " + r.ID, "interlock approvals deny " + r.ID} {
		if !strings.Contains(slack.Text, want) {
			t.Errorf("slack text lacks %q:\n%s", want, slack.Text)
		}
	}
	if _, err := m.Decide(context.Background(), r.ID, alice, false, "not now", ""); err != nil {
		t.Fatal(err)
	}
	h.outcome(t, time.Second)
	json.Unmarshal([]byte(jsonRC.next(t)), &ev)
	if ev.Event != "approval.decided" || ev.Request.Decision == nil || ev.Request.Decision.Outcome != Denied || ev.Request.Decision.Reason != "not now" {
		t.Fatalf("decided payload: %+v", ev)
	}
	json.Unmarshal([]byte(slackRC.next(t)), &slack)
	if !strings.Contains(slack.Text, "denied by alice@example.com (alice): not now") {
		t.Errorf("slack decided text: %s", slack.Text)
	}
	if n := testutil.ToFloat64(metrics.WebhookFailures); n != 0 {
		t.Errorf("failures = %v", n)
	}
}

// A receiver that fails (or hangs) is retried with backoff and counted,
// and the held statement neither waits for it nor outlives its timeout.
func TestWebhookFailureDoesNotBlock(t *testing.T) {
	var calls atomic.Int32
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer failing.Close()
	release := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hanging.Close()
	defer close(release)
	metrics := NewMetrics(nil)
	wh := NewWebhooks(WebhookConfig{Hooks: []Webhook{{URL: failing.URL}, {URL: hanging.URL, Format: FormatSlack}},
		Attempts: 3, Backoff: 20 * time.Millisecond, Timeout: 200 * time.Millisecond, Metrics: metrics, Log: quietLog()})
	defer wh.Close()
	m, _ := New(Config{Host: "h1", Notifier: wh, Metrics: metrics, Log: quietLog()})

	start := time.Now()
	h := hold(m, "s", "delete from t", time.Minute, context.Background())
	r := h.request(t)
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("the agent was told after %s: the hold waited for webhooks", d)
	}
	m.Decide(context.Background(), r.ID, alice, true, "", "")
	h.outcome(t, 100*time.Millisecond)

	// A timeout still ends the hold on time, whatever the receivers do.
	start = time.Now()
	h2 := hold(m, "s", "delete from t", 200*time.Millisecond, context.Background())
	h2.request(t)
	if d := h2.outcome(t, time.Second); d.Outcome != Expired || time.Since(start) > 600*time.Millisecond {
		t.Fatalf("expiry %+v after %s", d, time.Since(start))
	}
	// 4 events to the failing receiver, 3 attempts each; the hanging one
	// times out each attempt. Every event ends as one counted failure.
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(metrics.WebhookFailures) < 8 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := testutil.ToFloat64(metrics.WebhookFailures); n != 8 {
		t.Errorf("failures = %v, want 8 (4 events × 2 receivers)", n)
	}
	if c := calls.Load(); c < 4 || c > 12 {
		t.Errorf("failing receiver called %d times, want retries (3 per event, fewer near expiry)", c)
	}
}

func TestRedactURL(t *testing.T) {
	if got := redactURL("https://hooks.slack.com/services/T/B/secret"); got != "https://hooks.slack.com/…" {
		t.Errorf("redactURL: %s", got)
	}
}
