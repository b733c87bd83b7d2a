package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/interlockhq/interlock/engine"
	"github.com/interlockhq/interlock/engine/approvals"
	"github.com/interlockhq/interlock/engine/policy"
	"github.com/interlockhq/interlock/engine/recording"
)

// Approvals is the Observer that enforces approve decisions: it holds the
// statement in Decided, before anything is forwarded, until a human
// decides (approvals.Manager). The agent is told at once, with a notice,
// that the statement waits and for how long.
//
// Outcomes: approved → the statement is forwarded; denied → 42501 with the
// approver and the reason; no decision in time → 57014, or, inside a
// transaction whose rule says on_timeout_in_transaction: terminate, the
// session ends (FATAL 57014) so that the server releases the
// transaction's locks at once.
type Approvals struct {
	m         *approvals.Manager
	redaction string
	policy    func() *policy.Policy
}

// NewApprovals returns the approval stage. redaction (recording.Redact*)
// is how much statement text approvers and webhooks see; policy gives the
// agents' oidc_subject (an approver with it is refused).
func NewApprovals(m *approvals.Manager, redaction string, pol func() *policy.Policy) *Approvals {
	if redaction == "" {
		redaction = recording.RedactParameters
	}
	return &Approvals{m: m, redaction: redaction, policy: pol}
}

// Handles implements Observer: every approve decision.
func (a *Approvals) Handles(d *policy.Decision) bool { return d.Verdict == policy.VerdictApprove }

// Decided implements Observer: it holds forwarded approve statements.
func (a *Approvals) Decided(ctx context.Context, s *engine.Session, ev *StatementEvent) error {
	if ev.Decision.Verdict != policy.VerdictApprove || !ev.Forwarded {
		return nil
	}
	ap := ev.Decision.Approval
	if ap == nil {
		return &Refusal{Code: "42501", Message: "the statement needs an approval, but its rule " + ev.Decision.RuleID + " has no approval settings"}
	}
	inTx := ev.Op.Attrs.InTransaction
	timeout := ap.Timeout
	if inTx && ap.InTransactionTimeout > 0 {
		timeout = ap.InTransactionTimeout
	}
	req := &approvals.Request{
		Agent: s.Identity.Agent, Roles: ev.Op.Roles, Session: s.UID, Target: ev.Op.Target,
		Statement: a.redact(ev.Text), Redaction: a.redaction,
		Action: ev.Op.Action.String(), InTransaction: inTx,
		Rule: ev.Decision.RuleID, Approvers: ap.Approvers,
	}
	for _, o := range ev.Op.Objects {
		req.Objects = append(req.Objects, approvals.Object{Kind: o.Kind.String(), Name: o.Name, Action: o.Action.String()})
	}
	if a.policy != nil {
		if ag, ok := a.policy().Agent(s.Identity.Agent); ok {
			req.AgentSubject = ag.OIDCSubject
		}
	}
	d, err := a.m.Hold(ctx, req, ev.Text, timeout, func(r *approvals.Request) {
		if ev.Notify != nil {
			ev.Notify(fmt.Sprintf("approval pending: id %s, rule %s, timeout %s; the statement runs once an approver (%v) approves it",
				r.ID, r.Rule, timeout, r.Approvers))
		}
	})
	if err != nil {
		s.Log.Error("approval could not be requested; refusing the statement", "error", err)
		return &Refusal{Code: "42501", Message: "the statement needs an approval, and the approval request failed: " + err.Error()}
	}
	switch d.Outcome {
	case approvals.Approved:
		s.Log.Info("statement approved", "id", req.ID, "by", d.By, "rule", req.Rule)
		return nil
	case approvals.Denied:
		msg := "the statement was denied by " + d.By
		if d.Reason != "" {
			msg += ": " + d.Reason
		}
		return &Refusal{Code: "42501", Message: msg, Hint: "Approval " + req.ID + " for rule " + req.Rule + "."}
	case approvals.Expired:
		msg := fmt.Sprintf("no approval within %s (approval %s, rule %s)", timeout, req.ID, req.Rule)
		if inTx && ap.OnTimeoutInTransaction == policy.TxTerminate {
			return &Terminate{Code: "57014", Message: msg + "; terminating the session to release the transaction's locks"}
		}
		return &Refusal{Code: "57014", Message: "canceling statement: " + msg}
	}
	return &Refusal{Code: "57014", Message: fmt.Sprintf("approval %s cancelled: %s", req.ID, d.Reason)}
}

func (a *Approvals) redact(text string) string {
	switch a.redaction {
	case recording.RedactNone:
		return text
	case recording.RedactFull:
		return ""
	}
	return scrubLiterals(text)
}

// CommandComplete implements Observer.
func (*Approvals) CommandComplete(*engine.Session, []byte) {}

// ServerError implements Observer.
func (*Approvals) ServerError(*engine.Session, *pgproto3.ErrorResponse) {}

// ReadyForQuery implements Observer.
func (*Approvals) ReadyForQuery(*engine.Session, byte) {}

var _ Observer = (*Approvals)(nil)
