package approvals

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Webhook formats.
const (
	FormatJSON  = "json"  // the generic payload: the event and the request
	FormatSlack = "slack" // a Slack-compatible incoming-webhook message
)

// Webhook is one notification endpoint.
type Webhook struct {
	URL    string
	Format string // FormatJSON (default) or FormatSlack
}

// WebhookConfig configures Webhooks.
type WebhookConfig struct {
	Hooks []Webhook
	// Command is how the approve/deny hint in messages starts (default
	// "interlock approvals"), e.g. with --api for remote approvers.
	Command string
	// Attempts is how many times one delivery is tried (default 5), with
	// Backoff doubling between tries (default 500ms, at most 30s). A
	// request's notification is never retried past its expiry.
	Attempts int
	Backoff  time.Duration
	// Timeout bounds one HTTP attempt (default 5s).
	Timeout time.Duration
	// Queue bounds undelivered notifications (default 1024); beyond it
	// they are dropped and counted as failures.
	Queue   int
	Client  *http.Client
	Metrics *Metrics
	Log     *slog.Logger
}

// Webhooks delivers notifications in the background: the session never
// waits for a webhook, and a dead receiver costs retries and a counted
// failure, nothing more.
type Webhooks struct {
	cfg  WebhookConfig
	q    chan delivery
	wg   sync.WaitGroup
	stop chan struct{}
	once sync.Once
}

type delivery struct {
	hook     Webhook
	body     []byte
	deadline time.Time
}

// WebhookEvent is the generic JSON payload.
type WebhookEvent struct {
	Event   string   `json:"event"` // approval.requested, approval.decided
	Request *Request `json:"request"`
	// Approve and Deny are the CLI commands that decide the request.
	Approve string `json:"approve_command,omitempty"`
	Deny    string `json:"deny_command,omitempty"`
}

// NewWebhooks starts the delivery workers.
func NewWebhooks(cfg WebhookConfig) *Webhooks {
	if cfg.Command == "" {
		cfg.Command = "interlock approvals"
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 5
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 500 * time.Millisecond
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 1024
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	w := &Webhooks{cfg: cfg, q: make(chan delivery, cfg.Queue), stop: make(chan struct{})}
	for range 2 {
		w.wg.Add(1)
		go w.run()
	}
	return w
}

// Requested implements Notifier.
func (w *Webhooks) Requested(r *Request) { w.send("approval.requested", r, r.ExpiresAt) }

// Decided implements Notifier.
func (w *Webhooks) Decided(r *Request) { w.send("approval.decided", r, time.Now().Add(10*time.Minute)) }

func (w *Webhooks) send(event string, r *Request, deadline time.Time) {
	for _, h := range w.cfg.Hooks {
		body, err := w.payload(h.Format, event, r)
		if err != nil {
			w.fail(h, fmt.Errorf("encode: %w", err))
			continue
		}
		select {
		case w.q <- delivery{hook: h, body: body, deadline: deadline}:
		default:
			w.fail(h, fmt.Errorf("queue full (%d undelivered)", cap(w.q)))
		}
	}
}

func (w *Webhooks) payload(format, event string, r *Request) ([]byte, error) {
	approve, deny := w.commands(r)
	if format == FormatSlack {
		return json.Marshal(map[string]string{"text": SlackText(event, r, approve, deny)})
	}
	ev := WebhookEvent{Event: event, Request: r}
	if r.Decision == nil {
		ev.Approve, ev.Deny = approve, deny
	}
	return json.Marshal(ev)
}

func (w *Webhooks) commands(r *Request) (approve, deny string) {
	return fmt.Sprintf("%s approve %s --reason '…'", w.cfg.Command, r.ID), fmt.Sprintf("%s deny %s --reason '…'", w.cfg.Command, r.ID)
}

// SlackText is the message of a Slack-compatible payload: what is asked,
// a preview of the statement, and the commands that decide it.
func SlackText(event string, r *Request, approve, deny string) string {
	var b strings.Builder
	if d := r.Decision; d != nil {
		icon := map[Outcome]string{Approved: ":white_check_mark:", Denied: ":no_entry:", Expired: ":hourglass:", Cancelled: ":heavy_multiplication_x:"}[d.Outcome]
		fmt.Fprintf(&b, "%s Interlock approval `%s` %s by %s", icon, r.ID, d.Outcome, slackEscape(d.By))
		if d.Reason != "" {
			fmt.Fprintf(&b, ": %s", slackEscape(d.Reason))
		}
		fmt.Fprintf(&b, "\nagent `%s` on `%s`, rule `%s`", slackEscape(r.Agent), slackEscape(r.Target), slackEscape(r.Rule))
		return b.String()
	}
	fmt.Fprintf(&b, ":raised_hand: *Approval needed*: agent `%s` on `%s` (rule `%s`, approvers %s), expires %s\n",
		slackEscape(r.Agent), slackEscape(r.Target), slackEscape(r.Rule), slackEscape(strings.Join(r.Approvers, ", ")), r.ExpiresAt.Format(time.RFC3339))
	fmt.Fprintf(&b, "```%s```\n", slackEscape(preview(r.Statement, 500)))
	fmt.Fprintf(&b, "Approve: `%s`\nDeny: `%s`", slackEscape(approve), slackEscape(deny))
	return b.String()
}

func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "```", "`​`​`").Replace(s)
}

func preview(s string, n int) string {
	if s == "" {
		return "(statement text not recorded)"
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xc0 == 0x80 {
		n-- // do not cut a UTF-8 sequence
	}
	return s[:n] + "…"
}

func (w *Webhooks) run() {
	defer w.wg.Done()
	for {
		select {
		case <-w.stop:
			return
		case d := <-w.q:
			if err := w.deliver(d); err != nil {
				w.fail(d.hook, err)
			}
		}
	}
}

// deliver tries d until it succeeds, fails for good (a 4xx other than 408
// and 429), runs out of attempts, or passes its deadline.
func (w *Webhooks) deliver(d delivery) error {
	backoff := w.cfg.Backoff
	var err error
	for attempt := 1; ; attempt++ {
		var retry bool
		retry, err = w.post(d)
		if err == nil {
			return nil
		}
		if !retry || attempt >= w.cfg.Attempts {
			return fmt.Errorf("after %d attempt(s): %w", attempt, err)
		}
		if time.Now().Add(backoff).After(d.deadline) {
			return fmt.Errorf("after %d attempt(s), the request expires before the next: %w", attempt, err)
		}
		select {
		case <-w.stop:
			return fmt.Errorf("shutting down after %d attempt(s): %w", attempt, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (w *Webhooks) post(d delivery) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.hook.URL, bytes.NewReader(d.body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "interlock-approvals")
	resp, err := w.cfg.Client.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err // its message would quote the secret URL
		}
		return true, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusRequestTimeout:
		return true, fmt.Errorf("HTTP %s", resp.Status)
	}
	return false, fmt.Errorf("HTTP %s", resp.Status)
}

func (w *Webhooks) fail(h Webhook, err error) {
	w.cfg.Metrics.WebhookFailures.Inc()
	w.cfg.Log.Warn("approval webhook failed", "url", redactURL(h.URL), "format", h.Format, "error", err)
}

// redactURL keeps the scheme and host of a webhook URL: the path of an
// incoming webhook is its secret.
func redactURL(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		if j := strings.IndexByte(u[i+3:], '/'); j >= 0 {
			return u[:i+3+j] + "/…"
		}
	}
	return u
}

// Close stops delivery; notifications still queued are dropped.
func (w *Webhooks) Close() error {
	w.once.Do(func() { close(w.stop) })
	w.wg.Wait()
	return nil
}
