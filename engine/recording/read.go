package recording

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// SessionSummary is one recorded session, as `interlock sessions list`
// shows it.
type SessionSummary struct {
	ID         string     `json:"id"`
	Host       string     `json:"host"`
	Agent      string     `json:"agent"`
	Target     string     `json:"target"`
	Protocol   string     `json:"protocol"`
	PID        uint32     `json:"pid"`
	Exe        string     `json:"exe,omitempty"`
	Started    time.Time  `json:"started"`
	Ended      *time.Time `json:"ended,omitempty"`
	DurationMS float64    `json:"duration_ms,omitempty"`
	Statements int        `json:"statements"`
	Refused    int        `json:"refused"`
	Reason     string     `json:"end_reason,omitempty"`
}

// ListOptions filters ListSessions.
type ListOptions struct {
	Host   string
	Agent  string
	Target string
	Since  time.Time // sessions started at or after
}

// ListSessions summarises the sessions that started since opts.Since,
// oldest first.
func ListSessions(ctx context.Context, st Store, opts ListOptions) ([]SessionSummary, error) {
	byID := map[string]*SessionSummary{}
	var order []string
	err := st.Scan(ctx, Filter{Host: opts.Host, Since: opts.Since, Types: []Type{TypeSessionStart, TypeStatement, TypeSessionEnd}},
		func(rec *Record, loc string, err error) error {
			if rec == nil {
				return nil // Verify reports unreadable records
			}
			switch rec.Type {
			case TypeSessionStart:
				var ev SessionStart
				if rec.Decode(&ev) != nil || (opts.Agent != "" && ev.Agent != opts.Agent) || (opts.Target != "" && ev.Target != opts.Target) {
					return nil
				}
				byID[rec.Session] = &SessionSummary{ID: rec.Session, Host: rec.Host, Agent: ev.Agent, Target: ev.Target,
					Protocol: ev.Protocol, PID: ev.PID, Exe: ev.Exe, Started: ev.Started}
				order = append(order, rec.Session)
			case TypeStatement:
				if s := byID[rec.Session]; s != nil {
					var ev Statement
					if rec.Decode(&ev) == nil {
						s.Statements++
						if !ev.Forwarded {
							s.Refused++
						}
					}
				}
			case TypeSessionEnd:
				if s := byID[rec.Session]; s != nil {
					var ev SessionEnd
					if rec.Decode(&ev) == nil {
						t := rec.Time
						s.Ended, s.DurationMS, s.Reason = &t, ev.DurationMS, ev.Reason
					}
				}
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	out := make([]SessionSummary, 0, len(order))
	for _, id := range order {
		out = append(out, *byID[id])
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out, nil
}

// ErrSessionNotFound is returned by FindSession.
var ErrSessionNotFound = errors.New("recording: no such session")

// FindSession resolves a session id or a unique prefix of one (at least 4
// characters) to its start record.
func FindSession(ctx context.Context, st Store, host, prefix string) (*Record, error) {
	prefix = strings.ToLower(strings.TrimSpace(prefix))
	if len(prefix) < 4 {
		return nil, fmt.Errorf("session id %q: give at least 4 characters", prefix)
	}
	var found []*Record
	f := Filter{Host: host, Types: []Type{TypeSessionStart}}
	if len(prefix) == 32 {
		f.Session = prefix
	}
	err := st.Scan(ctx, f, func(rec *Record, _ string, _ error) error {
		if rec != nil && strings.HasPrefix(rec.Session, prefix) {
			found = append(found, rec)
		}
		return nil
	})
	switch {
	case err != nil:
		return nil, err
	case len(found) == 0:
		return nil, fmt.Errorf("%w: %s", ErrSessionNotFound, prefix)
	case len(found) > 1:
		return nil, fmt.Errorf("session id %q is ambiguous: %d sessions start with it", prefix, len(found))
	}
	return found[0], nil
}

// SessionRecords returns a session's records from seq from on, in order.
func SessionRecords(ctx context.Context, st Store, host, session string, from uint64) ([]*Record, error) {
	var out []*Record
	err := st.Scan(ctx, Filter{Host: host, Session: session, From: from}, func(rec *Record, _ string, _ error) error {
		if rec != nil {
			out = append(out, rec)
		}
		return nil
	})
	return out, err
}
