package postgres

import (
	"context"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/interlockhq/interlock/engine"
	"github.com/interlockhq/interlock/engine/policy"
)

// Observer is how the recording, approval and masking stages plug into a
// session without touching the relay loops. The session calls it at fixed
// points: after each statement is decided (before anything is forwarded),
// and as the server answers.
type Observer interface {
	// Decided is called for every statement with its decision and whether
	// it will be forwarded. It runs before the statement reaches the
	// target; an error refuses the statement (the recording stage uses this
	// to fail closed).
	Decided(ctx context.Context, s *engine.Session, ev *StatementEvent) error
	// Handles reports whether the observer enforces an approve or mask
	// decision itself. When it does not, such statements are refused.
	Handles(d *policy.Decision) bool
	// CommandComplete, ServerError and ReadyForQuery are called for the
	// server's answers, in the order they arrive. Together with the order of
	// Decided events with Forwarded set, they let an observer pair each
	// statement with its result: a simple Query's statements answer in
	// order and an error ends the rest; ReadyForQuery closes the request.
	// ServerError also carries the policy's refusals, as the agent sees them.
	CommandComplete(s *engine.Session, tag []byte)
	ServerError(s *engine.Session, e *pgproto3.ErrorResponse)
	ReadyForQuery(s *engine.Session, txStatus byte)
}

// Refusal is an error an Observer returns from Decided to refuse a
// statement with its own SQLSTATE and message (an approval denied or timed
// out). Any other error refuses it as "could not be recorded".
type Refusal struct {
	Code    string // SQLSTATE, e.g. 42501 or 57014
	Message string
	Hint    string
}

func (r *Refusal) Error() string { return r.Code + ": " + r.Message }

// Terminate is an error an Observer returns from Decided to end the
// session instead of refusing one statement (an approval timed out inside
// a transaction whose rule says terminate): the agent gets a FATAL error
// with Code and Message, and the connection to the target is closed, so
// the server rolls back the open transaction and releases its locks.
type Terminate struct {
	Code    string
	Message string
}

func (t *Terminate) Error() string { return "session terminated: " + t.Code + ": " + t.Message }

// StatementEvent is one decided statement.
type StatementEvent struct {
	Text      string // the statement's own text
	Path      string // PathSimple, PathExtended or PathFastpath
	Op        policy.Operation
	Decision  policy.Decision
	Forwarded bool // false when this or a sibling statement was refused
	// Notify sends a NoticeResponse to the agent at once (e.g. "approval
	// pending"), while Decided holds the statement.
	Notify func(message string)

	recordN int // the statement's number in the session recording, once recorded
}

type nopObserver struct{}

func (nopObserver) Decided(context.Context, *engine.Session, *StatementEvent) error { return nil }
func (nopObserver) Handles(*policy.Decision) bool                                   { return false }
func (nopObserver) CommandComplete(*engine.Session, []byte)                         {}
func (nopObserver) ServerError(*engine.Session, *pgproto3.ErrorResponse)            {}
func (nopObserver) ReadyForQuery(*engine.Session, byte)                             {}

// MaskedCounter is implemented by observers that record how many values
// the masking stage rewrote in a result (the recording stage). The relay
// calls it just before CommandComplete, with the count for that result.
type MaskedCounter interface {
	Masked(s *engine.Session, n int64)
}

// Withdrawer is implemented by observers that keep what they heard (the
// recording stage). A statement heard as forwarded is withdrawn when an
// observer refuses it or a later statement of the same request: the relay
// then forwards none of them. why is empty for the refused statement
// itself, whose refusal then arrives as its result.
type Withdrawer interface {
	Withdrawn(s *engine.Session, ev *StatementEvent, why string)
}

// Superseder is implemented by observers that pair results with the
// statements they heard (the recording stage). A prepared statement
// decided again at a Bind is heard again; the next execution's result
// belongs to that decision, so the earlier one (recordN from its
// StatementEvent) no longer waits for it.
type Superseder interface {
	Superseded(s *engine.Session, recordN int)
}

// ConnObserver is implemented by observers that note the session's
// handshake (the recording stage); the session calls Connected once, after
// the handshake with both sides and before the first statement.
type ConnObserver interface {
	Connected(s *engine.Session, c *ConnEvent)
}

// ConnEvent describes a session's connections once both are up.
type ConnEvent struct {
	Database, DBUser, Auth string
	AgentTLS, TargetTLS    string // TLS versions ("TLS 1.3"), "" without TLS
}

// Binder is implemented by observers that see the parameter values of
// extended-protocol executions (the recording stage, with redaction none).
// The session calls Bound for every Bind of an allowed statement before it
// is forwarded; an error refuses the execution.
type Binder interface {
	Bound(ctx context.Context, s *engine.Session, ev *BindEvent) error
}

// BindEvent is one Bind message of an allowed statement.
type BindEvent struct {
	Statement, Portal string
	Text              string   // the statement's text ("" when not prepared through Interlock)
	Params            [][]byte // nil for SQL NULL
	// Formats are the parameter format codes as the message gives them:
	// none (all text), one (for all) or one per parameter; 1 is binary.
	Formats []int16
}

// Binary reports whether parameter i is in binary format.
func (ev *BindEvent) Binary(i int) bool {
	switch len(ev.Formats) {
	case 0:
		return false
	case 1:
		return ev.Formats[0] == 1
	}
	return i < len(ev.Formats) && ev.Formats[i] == 1
}
