package approvals

import (
	"context"
	"time"

	"github.com/interlockhq/interlock/engine/recording"
)

// RecordingEvents records approval events in the session's recording
// chain (engine/recording), as TypeApprovalRequested and
// TypeApprovalDecided records of the request's session. The records carry
// recording's ApprovalRequested/ApprovalDecided fields plus the request id,
// digest and expiry. N (the statement number in the recording) is 0: the
// statement record just before names the statement.
type RecordingEvents struct {
	R *recording.Recorder
}

type recordedRequest struct {
	recording.ApprovalRequested
	ID        string    `json:"id"`
	Digest    string    `json:"digest"`
	ExpiresAt time.Time `json:"expires_at"`
	Host      string    `json:"engine_host,omitempty"`
}

type recordedDecision struct {
	recording.ApprovalDecided
	ID      string `json:"id"`
	Digest  string `json:"digest"`
	Outcome string `json:"outcome"`
}

// ApprovalRequested implements Recorder; it returns once the record is
// durable.
func (e RecordingEvents) ApprovalRequested(ctx context.Context, r *Request) error {
	return e.R.Append(ctx, recording.TypeApprovalRequested, r.Session, recordedRequest{
		ApprovalRequested: recording.ApprovalRequested{Rule: r.Rule, Approvers: r.Approvers},
		ID:                r.ID, Digest: r.Digest, ExpiresAt: r.ExpiresAt, Host: r.Host,
	})
}

// ApprovalDecided implements Recorder; it returns once the record is
// durable (an approved statement is forwarded only after).
func (e RecordingEvents) ApprovalDecided(ctx context.Context, r *Request) error {
	d := r.Decision
	return e.R.Append(ctx, recording.TypeApprovalDecided, r.Session, recordedDecision{
		ApprovalDecided: recording.ApprovalDecided{Approved: d.Outcome == Approved, By: d.By, At: d.At, Comment: d.Reason},
		ID:              r.ID, Digest: r.Digest, Outcome: string(d.Outcome),
	})
}
