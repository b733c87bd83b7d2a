package postgres

import (
	"context"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/interlockhq/interlock/engine"
	"github.com/interlockhq/interlock/engine/policy"
)

// Observers runs several observers as one, in order: the recording stage
// first (nothing runs that was not recorded), then approvals (which may hold
// the statement), then masking. Decided stops at the first error.
type Observers []Observer

// Decided implements Observer.
func (os Observers) Decided(ctx context.Context, s *engine.Session, ev *StatementEvent) error {
	for _, o := range os {
		if err := o.Decided(ctx, s, ev); err != nil {
			return err
		}
	}
	return nil
}

// Handles reports whether any observer enforces d.
func (os Observers) Handles(d *policy.Decision) bool {
	for _, o := range os {
		if o.Handles(d) {
			return true
		}
	}
	return false
}

// CommandComplete implements Observer.
func (os Observers) CommandComplete(s *engine.Session, tag []byte) {
	for _, o := range os {
		o.CommandComplete(s, tag)
	}
}

// ServerError implements Observer.
func (os Observers) ServerError(s *engine.Session, e *pgproto3.ErrorResponse) {
	for _, o := range os {
		o.ServerError(s, e)
	}
}

// ReadyForQuery implements Observer.
func (os Observers) ReadyForQuery(s *engine.Session, txStatus byte) {
	for _, o := range os {
		o.ReadyForQuery(s, txStatus)
	}
}

// Masked implements MaskedCounter for the observers that do.
func (os Observers) Masked(s *engine.Session, n int64) {
	for _, o := range os {
		if mc, ok := o.(MaskedCounter); ok {
			mc.Masked(s, n)
		}
	}
}

// Withdrawn implements Withdrawer for the observers that do.
func (os Observers) Withdrawn(s *engine.Session, ev *StatementEvent, why string) {
	for _, o := range os {
		if w, ok := o.(Withdrawer); ok {
			w.Withdrawn(s, ev, why)
		}
	}
}

// Superseded implements Superseder for the observers that do.
func (os Observers) Superseded(s *engine.Session, recordN int) {
	for _, o := range os {
		if sp, ok := o.(Superseder); ok {
			sp.Superseded(s, recordN)
		}
	}
}

// Connected implements ConnObserver for the observers that do.
func (os Observers) Connected(s *engine.Session, c *ConnEvent) {
	for _, o := range os {
		if co, ok := o.(ConnObserver); ok {
			co.Connected(s, c)
		}
	}
}

// Bound implements Binder for the observers that do; the first error
// refuses the execution.
func (os Observers) Bound(ctx context.Context, s *engine.Session, ev *BindEvent) error {
	for _, o := range os {
		if b, ok := o.(Binder); ok {
			if err := b.Bound(ctx, s, ev); err != nil {
				return err
			}
		}
	}
	return nil
}
