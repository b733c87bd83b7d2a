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
	// CommandComplete and ServerError are called for the server's answers,
	// in order.
	CommandComplete(s *engine.Session, tag []byte)
	ServerError(s *engine.Session, e *pgproto3.ErrorResponse)
}

// StatementEvent is one decided statement.
type StatementEvent struct {
	Text      string // the statement's own text
	Path      string // PathSimple, PathExtended or PathFastpath
	Op        policy.Operation
	Decision  policy.Decision
	Forwarded bool // false when this or a sibling statement was refused
}

type nopObserver struct{}

func (nopObserver) Decided(context.Context, *engine.Session, *StatementEvent) error { return nil }
func (nopObserver) Handles(*policy.Decision) bool                                   { return false }
func (nopObserver) CommandComplete(*engine.Session, []byte)                         {}
func (nopObserver) ServerError(*engine.Session, *pgproto3.ErrorResponse)            {}
