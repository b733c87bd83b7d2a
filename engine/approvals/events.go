package approvals

import (
	"context"
	"log/slog"
)

// Recorder receives the approval events that belong in the session
// recording: the request before the agent is told to wait, and the
// decision (who, when, why) before an approved statement is forwarded. An
// error from either refuses the statement: nothing runs that was not
// recorded. See RecordingEvents for the adapter to engine/recording.
type Recorder interface {
	ApprovalRequested(ctx context.Context, r *Request) error
	ApprovalDecided(ctx context.Context, r *Request) error
}

// Notifier tells approvers about requests and decisions (webhooks). Its
// methods must not block: delivery is the notifier's business.
type Notifier interface {
	Requested(r *Request)
	Decided(r *Request)
}

// logEvents writes the events to the daemon log; it always runs, with or
// without a Recorder.
func logEvents(log *slog.Logger, r *Request) {
	if d := r.Decision; d != nil {
		log.Info("approval decided", "id", r.ID, "outcome", d.Outcome, "by", d.By, "reason", d.Reason,
			"agent", r.Agent, "session", r.Session, "rule", r.Rule, "digest", r.Digest, "at", d.At)
		return
	}
	log.Info("approval requested", "id", r.ID, "agent", r.Agent, "session", r.Session, "target", r.Target,
		"rule", r.Rule, "approvers", r.Approvers, "digest", r.Digest, "expires_at", r.ExpiresAt, "statement", r.Statement)
}
