package approvals

import "errors"

// Sentinel errors of Decide and the stores. The API maps them to HTTP
// statuses (see api.go).
var (
	// ErrNotFound: no request has this id.
	ErrNotFound = errors.New("approvals: no such request")
	// ErrDecided: the request already has a decision (approvals are
	// single use).
	ErrDecided = errors.New("approvals: the request was already decided")
	// ErrExpired: the request timed out before the decision.
	ErrExpired = errors.New("approvals: the request has expired")
	// ErrBinding: the decision names a statement digest or session other
	// than the request's.
	ErrBinding = errors.New("approvals: the decision is not bound to this request's session and statement")
	// ErrForbidden: the approver holds none of the rule's approver roles.
	ErrForbidden = errors.New("approvals: the approver holds none of the rule's approver roles")
	// ErrSelfApproval: the approver is the requesting agent.
	ErrSelfApproval = errors.New("approvals: an agent cannot approve its own request")
	// ErrReasonRequired: a denial must say why.
	ErrReasonRequired = errors.New("approvals: a denial needs a reason")
	// ErrInvalid: a malformed decision (e.g. an overlong reason).
	ErrInvalid = errors.New("approvals: invalid decision")
	// ErrUnauthenticated: no valid credentials (missing, malformed,
	// wrong issuer or audience, expired token).
	ErrUnauthenticated = errors.New("approvals: not authenticated")
	// ErrClosed: the manager or store was closed.
	ErrClosed = errors.New("approvals: closed")
)
