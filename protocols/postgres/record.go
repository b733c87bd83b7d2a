package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/interlockhq/interlock/engine"
	"github.com/interlockhq/interlock/engine/policy"
	"github.com/interlockhq/interlock/engine/recording"
)

// Recorder is the Observer that records every statement of a session, and
// the server's answers, into the recording chain. A statement's record is
// durable before Decided returns, so before the statement is forwarded;
// when it cannot be written, Decided fails and the statement is refused
// (fail closed).
//
// What is recorded of the text depends on the redaction setting:
//
//   - none: the statement as the agent sent it;
//   - parameters: literals replaced by $n placeholders and comments
//     removed (scrubLiterals);
//   - full: no text at all.
//
// In every mode the record has the fingerprint (a hash of the scrubbed
// text, equal for the same statement with other values), the length of the
// text, the classification (action and objects), the verdict, the deciding
// rule and whether the statement was forwarded. Values bound to extended
// protocol parameters (Bind) are not recorded in any mode.
//
// Results are paired with statements in the order the server answers (see
// recording.SessionLog): a simple Query's statements answer in order and an
// error ends the request; a statement parsed in one request and executed in
// a later one is paired with its first execution, and later executions of
// it are recorded as results of no statement (n 0).
type Recorder struct {
	rec *recording.Recorder
}

// NewRecorder builds the observer.
func NewRecorder(r *recording.Recorder) *Recorder { return &Recorder{rec: r} }

// Decided implements Observer.
func (o *Recorder) Decided(ctx context.Context, s *engine.Session, ev *StatementEvent) error {
	l, err := o.rec.Session(s)
	if err != nil {
		return err
	}
	st := statementRecord(ev, l.Redaction())
	// The refused statement of a refused request gets Interlock's refusal
	// as its answer; its siblings that the policy allowed get none.
	awaits := ev.Forwarded || ev.Decision.Verdict != policy.VerdictAllow
	if err := l.Statement(ctx, st, awaits); err != nil {
		return err
	}
	ev.recordN = st.N
	return nil
}

// Withdrawn implements Withdrawer: the statement's record said forwarded,
// and it was not; its result says so.
func (o *Recorder) Withdrawn(s *engine.Session, ev *StatementEvent, why string) {
	if ev.recordN == 0 {
		return
	}
	l, err := o.rec.Session(s)
	if err != nil {
		return
	}
	if why == "" {
		l.Refusing(ev.recordN)
		return
	}
	l.Withdrawn(ev.recordN, "42501", why)
}

// Superseded implements Superseder.
func (o *Recorder) Superseded(s *engine.Session, recordN int) {
	if l, err := o.rec.Session(s); err == nil {
		l.Unpend(recordN)
	}
}

// Connected implements ConnObserver.
func (o *Recorder) Connected(s *engine.Session, c *ConnEvent) {
	if l, err := o.rec.Session(s); err == nil {
		l.Connected(&recording.Connected{Database: c.Database, DBUser: c.DBUser, Auth: c.Auth, AgentTLS: c.AgentTLS, TargetTLS: c.TargetTLS})
	}
}

// Bound implements Binder: with redaction none the values an execution
// binds are recorded before it is forwarded (they are the data it runs
// with); with any other redaction they are not recorded at all.
func (o *Recorder) Bound(ctx context.Context, s *engine.Session, ev *BindEvent) error {
	l, err := o.rec.Session(s)
	if err != nil {
		return err
	}
	if l.Redaction() != recording.RedactNone {
		return nil
	}
	return l.Bind(ctx, bindRecord(ev))
}

func bindRecord(ev *BindEvent) *recording.Bind {
	b := &recording.Bind{Statement: ev.Statement, Portal: ev.Portal, Text: ev.Text, Params: make([]*string, len(ev.Params))}
	budget := recording.MaxText
	for i, p := range ev.Params {
		if p == nil {
			continue
		}
		var v string
		if ev.Binary(i) {
			v = `\x` + hex.EncodeToString(p)
		} else {
			v = string(p)
		}
		if len(v) > budget {
			v, b.Truncated = v[:budget], true
		}
		budget -= len(v)
		b.Params[i] = &v
	}
	if len(b.Text) > recording.MaxText {
		b.Text, b.Truncated = b.Text[:recording.MaxText], true
	}
	return b
}

// Handles implements Observer: approvals and masking are other stages.
func (o *Recorder) Handles(*policy.Decision) bool { return false }

// CommandComplete implements Observer.
func (o *Recorder) CommandComplete(s *engine.Session, tag []byte) {
	if l, err := o.rec.Session(s); err == nil {
		t := string(tag)
		l.Completed(&recording.Result{Tag: t, Rows: tagRows(t)})
	}
}

// Masked implements MaskedCounter: the count goes into the next result
// record.
func (o *Recorder) Masked(s *engine.Session, n int64) {
	if l, err := o.rec.Session(s); err == nil {
		l.Masked(n)
	}
}

// ServerError implements Observer.
func (o *Recorder) ServerError(s *engine.Session, e *pgproto3.ErrorResponse) {
	if l, err := o.rec.Session(s); err == nil {
		l.Failed(e.Code, e.Message)
	}
}

// ReadyForQuery implements Observer: nothing to record (an error already
// ended the request's pairing, see recording.SessionLog.Failed).
func (o *Recorder) ReadyForQuery(*engine.Session, byte) {}

func statementRecord(ev *StatementEvent, redaction string) *recording.Statement {
	scrubbed := scrubLiterals(ev.Text)
	sum := sha256.Sum256([]byte(strings.Join(strings.Fields(scrubbed), " ")))
	st := &recording.Statement{
		Path: ev.Path, Redaction: redaction, Fingerprint: hex.EncodeToString(sum[:16]), TextBytes: len(ev.Text),
		Action: ev.Op.Action.String(), InTx: ev.Op.Attrs.InTransaction, Unclassified: ev.Op.Unclassified,
		Verdict: ev.Decision.Verdict.String(), Rule: ev.Decision.RuleID, Forwarded: ev.Forwarded,
	}
	switch redaction {
	case recording.RedactNone:
		st.Text = ev.Text
	case recording.RedactParameters:
		st.Text = scrubbed
	}
	if len(st.Text) > recording.MaxText {
		st.Text, st.Truncated = st.Text[:recording.MaxText], true
	}
	if ev.Decision.Verdict != policy.VerdictAllow {
		st.Reason = ev.Decision.Reason()
		if ev.Op.Unclassified && redaction != recording.RedactNone {
			// The classifier's reason may quote the text (a parse error
			// near a literal).
			st.Reason = "the statement could not be classified"
		}
	}
	if len(ev.Op.Objects) > 0 {
		st.Objects = make([]recording.Object, len(ev.Op.Objects))
		for i, ob := range ev.Op.Objects {
			st.Objects[i] = recording.Object{Kind: ob.Kind.String(), Name: ob.Name, Action: ob.Action.String()}
			if ob.Category != policy.CategoryNone {
				st.Objects[i].Category = ob.Category.String()
			}
		}
	}
	return st
}

// tagRows is the row count in a command tag ("SELECT 5", "INSERT 0 5",
// "UPDATE 2", "COPY 10"), nil for tags without one.
func tagRows(tag string) *int64 {
	i := strings.LastIndexByte(tag, ' ')
	if i < 0 {
		return nil
	}
	switch tag[:strings.IndexByte(tag, ' ')] {
	case "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "FETCH", "MOVE":
	default:
		return nil
	}
	n, err := strconv.ParseInt(tag[i+1:], 10, 64)
	if err != nil {
		return nil
	}
	return &n
}
