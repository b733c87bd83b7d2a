package approvals

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// Request is one statement held for a decision. Field names are the JSON
// of the API, the webhooks and the shared store.
type Request struct {
	ID      string   `json:"id"`
	Agent   string   `json:"agent"`
	Roles   []string `json:"roles,omitempty"`
	Session string   `json:"session"` // engine.Session.UID
	Host    string   `json:"host"`    // the engine holding the statement
	Target  string   `json:"target"`
	// Statement is the text as the redaction setting allows (Redaction);
	// Digest binds the approval to the exact original text.
	Statement     string   `json:"statement"`
	Redaction     string   `json:"redaction"`
	Action        string   `json:"action"`
	Objects       []Object `json:"objects,omitempty"`
	InTransaction bool     `json:"in_transaction"`
	Rule          string   `json:"rule"`
	Approvers     []string `json:"approvers"`
	// AgentSubject is the agent's oidc_subject in the policy: an approver
	// with this subject is refused.
	AgentSubject string    `json:"agent_subject,omitempty"`
	Seq          uint64    `json:"seq"`
	Digest       string    `json:"digest"`
	RequestedAt  time.Time `json:"requested_at"`
	ExpiresAt    time.Time `json:"expires_at"`

	// Decision is nil while the request is pending.
	Decision *Decision `json:"decision,omitempty"`
}

// Object is one thing the statement touches, as the classifier saw it.
type Object struct {
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	Action string `json:"action"`
}

// Pending reports whether r awaits a decision at now.
func (r *Request) Pending(now time.Time) bool {
	return r.Decision == nil && now.Before(r.ExpiresAt)
}

// Outcome is how a request ended.
type Outcome string

const (
	Approved  Outcome = "approved"
	Denied    Outcome = "denied"
	Expired   Outcome = "expired"   // nobody decided in time
	Cancelled Outcome = "cancelled" // the session or the engine went away first
)

// Decision ends a request. Session and Digest repeat the request's binding:
// the holder releases its statement only for a decision that names its own
// request, session and digest.
type Decision struct {
	ID      string    `json:"id"`
	Session string    `json:"session"`
	Digest  string    `json:"digest"`
	Outcome Outcome   `json:"outcome"`
	By      string    `json:"by"` // the approver's identity, or "interlock" for expiry and cancellation
	At      time.Time `json:"at"`
	Reason  string    `json:"reason,omitempty"`
}

// bound reports whether d is a decision for r.
func (d *Decision) bound(r *Request) bool {
	return d.ID == r.ID && d.Session == r.Session && d.Digest == r.Digest
}

// Digest is the statement digest an approval is bound to: SHA-256 over the
// session UID, the statement's original text and the request's sequence
// number, so the same text run again (or in another session) needs a new
// approval.
func Digest(session, text string, seq uint64) string {
	h := sha256.New()
	h.Write([]byte(session))
	h.Write([]byte{0})
	h.Write([]byte(text))
	h.Write([]byte{0})
	h.Write(strconv.AppendUint(nil, seq, 10))
	return hex.EncodeToString(h.Sum(nil))
}

// newID returns a request id: 16 random bytes in hex, short enough to type
// in `interlock approvals approve ID` with the shell's help.
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// MaxReason bounds an approver's reason (it travels in notifications and
// NOTIFY payloads, and to the agent).
const MaxReason = 1000
