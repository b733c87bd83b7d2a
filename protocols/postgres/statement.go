package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/interlockhq/interlock/engine/masking"
	"github.com/interlockhq/interlock/engine/policy"
)

// Protocol paths a statement can arrive on, for events and metrics.
const (
	PathSimple   = "simple"
	PathExtended = "extended"
	PathFastpath = "fastpath"
)

// decision is the outcome for one protocol message (a Query may hold several
// statements; the first refusal wins).
type decision struct {
	refuse    *pgproto3.ErrorResponse
	terminate *Terminate // an observer ends the session
	// mask masks the results of the forwarded statements (the union of
	// their masks), nil when none applies; copies are its COPY … TO
	// STDOUT statements, in order.
	mask   *masking.Masker
	copies []*copyOut
	// rewrite, when set, is sent instead of the agent's query text.
	rewrite string
	// approved: a statement needed a human approval and got it (it covers
	// one execution).
	approved bool
	// recordN is the recording's number for a single statement (0: not
	// recorded), see Superseder.
	recordN int
	// tx is the transaction state the first statement was decided in,
	// effect what executing a single statement does to it.
	tx     txState
	effect txEffect
}

// decide classifies sql, asks the policy about every statement and tells
// the observer. inTx is the transaction state before the first statement.
func (ss *session) decide(ctx context.Context, sql, path string) (decision, *Classification) {
	cl, err := ss.h.cfg.Classifier.Classify(sql)
	if err != nil {
		ss.s.Log.Error("classifier failed; refusing the statement", "error", err)
		return decision{refuse: refusal("the statement could not be classified (internal error)", "")}, nil
	}
	pol := ss.h.cfg.Policy()
	roles := pol.AgentRoles(ss.s.Identity.Agent)
	counted := int64(0) // a Query is counted in requests before it is decided
	if path == PathSimple {
		counted = 1
	}
	tx := ss.txState(counted)
	inTx, txSure := tx.inTx, tx.sure
	type decided struct {
		op     policy.Operation
		d      policy.Decision
		refuse *pgproto3.ErrorResponse
	}
	ds := make([]decided, len(cl.Statements))
	var out decision
	for i := range cl.Statements {
		st := &cl.Statements[i]
		op := st.Op
		if st.Execute != "" {
			prep, ok := ss.prepared[st.Execute]
			for j := i - 1; j >= 0; j-- {
				// A PREPARE earlier in the same query string wins.
				if cl.Statements[j].Prepare == st.Execute {
					prep, ok = sqlPrepared{op: cl.Statements[j].Op}, true
					break
				}
			}
			switch {
			case ok && prep.unsure:
				op.Unclassified = true
				op.Reason = fmt.Sprintf("EXECUTE of prepared statement %q, which a DEALLOCATE may or may not have removed (it was pipelined, followed a failing statement or ran in a failed transaction): send DEALLOCATE %s on its own, then PREPARE it again", st.Execute, st.Execute)
			case ok:
				op = st.ResolveExecute(prep.op)
			default:
				op.Unclassified = true
				op.Reason = fmt.Sprintf("EXECUTE of prepared statement %q, which this session did not prepare through Interlock", st.Execute)
			}
		}
		op.Agent, op.Target, op.Protocol, op.Roles = ss.s.Identity.Agent, ss.target.Name, policy.ProtocolPostgres, roles
		op.Attrs.InTransaction = inTx
		op.Objects = catalogReads(op.Objects)
		d := ss.decideOp(pol, &op, txSure)
		ds[i] = decided{op: op, d: d, refuse: ss.verdict(&d)}
		if name, ok := pinnedSetting(&op, st.ReadOnlyOn); ok && ds[i].refuse == nil {
			// The classification of every later statement depends on these
			// settings keeping the values the engine pinned at startup, so
			// no policy can allow changing them.
			why := "it would change how later statements are understood"
			if guardedSetting(strings.ToLower(name)) {
				why = "with the engine's credentials it could switch off triggers, constraints or read-only mode, hide the session from the server's log or audit, or change the server messages Interlock relies on"
			}
			ds[i].refuse = refusal("changing "+name+" is not allowed through Interlock: "+why, "")
		}
		ownName, storeName := interlockNames(st.Text)
		if ds[i].refuse == nil && (ownName || namesSentinel(st.Prepare) || namesSentinel(st.Execute) || namesSentinel(st.Deallocate)) {
			// Interlock's own names: the statement a refusal is replaced
			// with, and the server-side names of the agent's statements
			// and portals. An agent that could create or drop those could
			// make a refusal run its statement, or a Bind reach another
			// statement than the one decided.
			ds[i].refuse = refusal("statements may not name "+sentinelPrefix+"…, "+stmtPrefix+"… or "+portalPrefix+"…, which Interlock uses itself", "")
		}
		if ds[i].refuse == nil && storeName {
			// The approvals and recording stores may live on a server the
			// agent reaches (another database of a target): a write there
			// could approve its own statement or rewrite the record.
			ds[i].refuse = refusal("statements may not name interlock_approvals, interlock_records or interlock_heads, Interlock's own tables", "")
		}
		if ds[i].refuse == nil && unicodeIdent(st.Text) {
			ds[i].refuse = refusal(`identifiers with Unicode escapes (U&"…") are not accepted: they can spell names Interlock reserves`, "")
		}
		if ds[i].refuse == nil && st.Execute != "" && path != PathSimple {
			// Decided now with the statement the name holds now, run at
			// any later Execute of the portal, when it may hold another.
			ds[i].refuse = refusal("EXECUTE is accepted only in a simple query (drivers execute prepared statements with the protocol's Bind and Execute instead)", "")
		}
		if ds[i].refuse == nil && st.Prepare != "" {
			ds[i].refuse = ss.checkPrepare(cl, i, path)
		}
		if name, ok := ss.maskLeak(&op); ok && ds[i].refuse == nil {
			ds[i].refuse = refusal(name+" is not readable in a session whose results are masked: it holds values from table rows or other sessions' statements, which no mask covers", "")
		}
		if ds[i].refuse != nil && out.refuse == nil {
			out.refuse = ds[i].refuse
		}
		switch st.TxControl.Kind {
		case TxBegin:
			inTx, txSure = true, true
		case TxCommit, TxRollback, TxPrepare:
			inTx, txSure = st.TxControl.Chain, true
		}
	}
	// Masks: the union of the statements' masks applies to all of the
	// request's results; what it cannot cover is refused before the
	// observer hears the fate.
	var (
		mask   *masking.Masker
		specs  []*policy.MaskSpec
		copies []*copyOut
	)
	if ss.ms != nil && out.refuse == nil {
		var spec *policy.MaskSpec
		for i := range ds {
			if s := ds[i].d.Mask(); s != nil {
				specs = append(specs, s)
				spec = mergeSpecs(spec, s)
			}
		}
		for i := range ds {
			if ds[i].op.Action == policy.ActionFetch {
				ss.anyMask() // with masks a reload added
			}
			if ds[i].op.Action == policy.ActionFetch && ss.ms.union != nil {
				// A cursor's rows arrive by FETCH, decided without the
				// query it was declared for: apply every mask the
				// session has been under.
				spec = mergeSpecs(spec, ss.ms.union)
				break
			}
		}
		if spec != nil {
			m, err := ss.h.masker(spec)
			if err != nil {
				ss.s.Log.Error("masking: cannot build the masker; refusing the statement", "error", err)
				return decision{refuse: refusal("the results must be masked, and the masker could not be built (internal error)", "")}, cl
			}
			mask = m
			for i := range ds {
				if ds[i].op.Action != policy.ActionCopyToStdout {
					continue
				}
				co, refuse := ss.copyCheck(cl.Statements[i].Text, m, &ds[i].d)
				if refuse != nil {
					ds[i].refuse = refuse
					if out.refuse == nil {
						out.refuse = refuse
					}
				}
				copies = append(copies, co)
			}
		}
	}
	// The observer hears every statement with its final fate, before
	// anything is forwarded.
	evs := make([]StatementEvent, len(ds))
	// withdraw tells the observer that statements it heard as forwarded
	// were not: a later one was refused (or ended the session) first.
	withdraw := func(upto int, why string) {
		w, ok := ss.h.cfg.Observer.(Withdrawer)
		if !ok {
			return
		}
		for j := 0; j < upto; j++ {
			if evs[j].Forwarded {
				w.Withdrawn(ss.s, &evs[j], why)
			}
		}
	}
	for i := range ds {
		st := &cl.Statements[i]
		evs[i] = StatementEvent{Text: st.Text, Path: path, Op: ds[i].op, Decision: ds[i].d, Forwarded: out.refuse == nil, Notify: ss.notice}
		ev := &evs[i]
		dctx, done := ctx, func() {}
		if ds[i].d.Verdict == policy.VerdictApprove && ev.Forwarded {
			dctx, done = ss.holdContext(ctx)
		}
		err := ss.h.cfg.Observer.Decided(dctx, ss.s, ev)
		if cause := context.Cause(dctx); err != nil && cause == errAgentCancel {
			err = &Refusal{Code: "57014", Message: "canceling statement due to user request (it was waiting for an approval)"}
		}
		done()
		if err != nil {
			if t, ok := errors.AsType[*Terminate](err); ok {
				ss.s.Log.Warn("session terminated by the observer", "error", err)
				withdraw(i+1, fmt.Sprintf("not forwarded: the session was ended at statement %d of the same request (%v)", i+1, err))
				return decision{terminate: t}, cl
			}
			ds[i].refuse = observerRefusal(err)
			ss.s.Log.Warn("statement refused by the observer", "error", err)
			if out.refuse == nil {
				out.refuse = ds[i].refuse
				withdraw(i, fmt.Sprintf("not forwarded: statement %d of the same request was refused (%s)", i+1, ds[i].refuse.Message))
				if w, ok := ss.h.cfg.Observer.(Withdrawer); ok && ev.Forwarded {
					w.Withdrawn(ss.s, ev, "")
				}
			}
		}
		ss.h.cfg.Metrics.statement(ss.s.Identity.Agent, ss.target.Name, ds[i].d.Verdict, ds[i].refuse != nil)
		if ds[i].refuse != nil {
			ss.s.Log.Info("statement blocked", "path", path, "rule", ds[i].d.RuleID, "reason", ds[i].d.Reason(), "sql", truncate(st.Text, 200))
		} else {
			ss.s.Log.Debug("statement decided", "path", path, "verdict", ds[i].d.Verdict, "rule", ds[i].d.RuleID, "forwarded", out.refuse == nil)
		}
	}
	if len(evs) == 1 {
		out.recordN = evs[0].recordN
	}
	out.tx, out.effect = tx, txEffectOf(cl)
	if out.refuse == nil && mask != nil {
		for _, spec := range specs {
			ss.noteMask(spec)
		}
		out.mask, out.copies = mask, copies
	}
	if out.refuse == nil {
		out.rewrite = ss.notePrepared(cl, path)
		for i := range ds {
			out.approved = out.approved || ds[i].d.Verdict == policy.VerdictApprove
		}
	}
	return out, cl
}

// sqlPrepared is what Interlock knows of a statement SQL PREPARE created
// (the server's namespace for these is the agent's: unlike the protocol's
// named statements, see parse, they cannot be renamed).
//
// The table keeps this invariant: every name the server holds from SQL
// PREPARE is in it, with the operation the server runs under that name.
// It may hold more (a PREPARE the server rejected), never less and never
// another statement: a PREPARE of a name already in the table is refused
// (the server would refuse it too, and a rejected PREPARE must not replace
// what the server still runs), and a DEALLOCATE removes a name only when
// the server certainly executes it. Otherwise the name becomes unsure and
// EXECUTE and Bind of it are refused until a DEALLOCATE sent on its own.
type sqlPrepared struct {
	op     policy.Operation
	unsure bool
}

// checkPrepare refuses a SQL PREPARE (the i-th statement of cl) that could
// make the server hold a statement other than the one the table says.
func (ss *session) checkPrepare(cl *Classification, i int, path string) *pgproto3.ErrorResponse {
	if path != PathSimple {
		// Parsed now, run by any later Execute of the portal, perhaps
		// after a DEALLOCATE of its name: the table could not follow.
		return refusal("PREPARE is accepted only in a simple query (drivers prepare with the protocol's Parse message instead)", "")
	}
	name := cl.Statements[i].Prepare
	_, exists := ss.prepared[name]
	for _, st := range cl.Statements[:i] {
		if st.Prepare == name {
			exists = true
		}
	}
	if exists {
		e := refusal(fmt.Sprintf("prepared statement %q already exists; DEALLOCATE it first", name), "")
		e.Code = "42P05" // duplicate_prepared_statement, as the server would say
		return e
	}
	return nil
}

// notePrepared applies a forwarded query's SQL PREPARE, DEALLOCATE and
// DISCARD ALL statements to the prepared statement tables. It returns the
// text to send instead of a query (simple, or a Parse: psycopg in pipeline
// mode) that is only a DEALLOCATE of a protocol-level statement (psycopg
// and Rails drop their statements so): the server knows it by its
// server-side name.
func (ss *session) notePrepared(cl *Classification, path string) (rewrite string) {
	for i := range cl.Statements {
		st := &cl.Statements[i]
		switch {
		case st.Prepare != "":
			ss.prepared[st.Prepare] = sqlPrepared{op: st.Op}
		case st.Deallocate != "":
			p, parsed := ss.parsed[st.Deallocate]
			if _, sql := ss.prepared[st.Deallocate]; parsed && !sql && p.upstream != "" && len(cl.Statements) == 1 {
				rewrite = "DEALLOCATE " + quoteIdent(p.upstream)
			}
			if ss.deallocateIsCertain(st, i, len(cl.Statements), path) {
				if st.Deallocate == "*" {
					clear(ss.prepared)
					clear(ss.parsed)
				} else {
					delete(ss.prepared, st.Deallocate)
					delete(ss.parsed, st.Deallocate)
				}
				continue
			}
			for name, p := range ss.prepared {
				if st.Deallocate == "*" || name == st.Deallocate {
					p.unsure = true
					ss.prepared[name] = p
				}
			}
		}
	}
	return rewrite
}

// deallocateIsCertain reports whether the server will execute the i-th of n
// statements, a DEALLOCATE or DISCARD ALL: it is the first of a simple
// query sent when no other request was outstanding (so the transaction
// state is current) and that state lets it run. A DEALLOCATE of a name the
// server does not hold fails, which leaves the same result.
func (ss *session) deallocateIsCertain(st *Statement, i, n int, path string) bool {
	// The only statement: a server with an older grammar than the
	// classifier's rejects a whole query string that holds something it
	// cannot parse. Nothing outstanding: no other request, and no
	// extended-protocol message since the last Sync (after an error the
	// server skips everything, a Query too, until the Sync); so the
	// transaction state is current too.
	if path != PathSimple || i != 0 || n != 1 || ss.inFlight() != 1 || ss.extendedOpen {
		return false
	}
	switch byte(ss.txStatus.Load()) {
	case 'I':
		return true
	case 'T':
		return st.Tag != "DISCARD ALL" // refused in a transaction block
	}
	return false
}

// txCertain reports whether inTransaction is the state the next statement
// runs under: no other request is outstanding, and what was executed since
// the last Sync either left the state alone or set it for certain (a
// BEGIN, a COMMIT). counted is 1 when the current request (Query,
// FunctionCall) is already counted in requests.
func (ss *session) txCertain(counted int64) bool {
	if ss.segUnsure {
		return false
	}
	// After an executed BEGIN or COMMIT in this segment the state is
	// known whatever the earlier requests do: their answers come first,
	// and the segment runs after them (or not at all).
	return ss.segTxKnown || ss.inFlight() == counted
}

// decideOp asks the policy about op; when the transaction status is not
// certain, in_transaction cannot be trusted and the stricter decision
// under either value wins.
func (ss *session) decideOp(pol *policy.Policy, op *policy.Operation, txSure bool) policy.Decision {
	if txSure {
		return pol.Decide(op)
	}
	return pol.DecideUnsureTx(op)
}

// pinnedSetting reports whether op sets a parameter the engine pins (see
// pinnedParams), or one whose name is only known at run time ("*").
// SHOW reads and RESET returns to the pinned session default: both fine.
func pinnedSetting(op *policy.Operation, readOnlyOn bool) (string, bool) {
	for _, o := range op.Objects {
		if o.Kind != policy.KindSetting || o.Action != policy.ActionSet {
			continue
		}
		name := strings.ToLower(o.Name)
		if readOnlyOn && readOnlySetting(name) {
			continue // turning read-only mode on
		}
		if _, pinned := pinnedParams[name]; pinned || o.Name == "*" || guardedSetting(name) {
			return o.Name, true
		}
	}
	return "", false
}

// guardedSetting reports settings no agent may change even where its
// policy allows SET, because the engine's credentials (often a superuser)
// make them take effect or the engine relies on them:
// session_replication_role = replica switches off triggers, foreign keys
// and rules; the log_* and pgaudit.* settings and track_activities would
// hide the session from the server's log, audit trail and
// pg_stat_activity; default_transaction_read_only and
// transaction_read_only undo a read-only database role's default;
// allow_system_table_mods and dynamic_library_path open the catalogs and
// the loading of server code; lc_messages would translate the server's
// messages, whose English quoting error redaction relies on.
func guardedSetting(name string) bool {
	switch name {
	case "session_replication_role", "lc_messages", "track_activities",
		"default_transaction_read_only", "transaction_read_only",
		"allow_system_table_mods", "dynamic_library_path":
		return true
	}
	return strings.HasPrefix(name, "log_") || strings.HasPrefix(name, "pgaudit.")
}

// readOnlySetting reports the guarded settings that may be turned on (read
// only), just not off.
func readOnlySetting(name string) bool {
	name = strings.ToLower(name)
	return name == "default_transaction_read_only" || name == "transaction_read_only"
}

// catalogReads adds what reading some catalog relations amounts to: the
// planner statistics, password hashes, user mappings' and subscriptions'
// connection strings (with passwords) and large objects hold values of
// every table (they read as table "*", which a `pg_catalog.*` rule does not
// cover), and the configuration-file views call the functions that read
// those files. objs is returned as it is when nothing applies (it may be a
// cached classification's: it is never appended to).
func catalogReads(objs []policy.Object) []policy.Object {
	var extra []policy.Object
	for _, o := range objs {
		if o.Kind != policy.KindTable || !strings.HasPrefix(o.Name, "pg_catalog.") {
			continue
		}
		switch strings.TrimPrefix(o.Name, "pg_catalog.") {
		case "pg_statistic", "pg_stats", "pg_stats_ext", "pg_stats_ext_exprs", "pg_statistic_ext_data",
			"pg_authid", "pg_shadow", "pg_user_mapping", "pg_user_mappings", "pg_largeobject",
			"pg_subscription":
			extra = append(extra, policy.Object{Kind: policy.KindTable, Name: "*", Action: o.Action})
		case "pg_file_settings":
			extra = append(extra, catalogFunction("pg_show_all_file_settings"))
		case "pg_hba_file_rules":
			extra = append(extra, catalogFunction("pg_hba_file_rules"))
		case "pg_ident_file_mappings":
			extra = append(extra, catalogFunction("pg_ident_file_mappings"))
		}
	}
	if extra == nil {
		return objs
	}
	return append(slices.Clone(objs), extra...)
}

func catalogFunction(name string) policy.Object {
	return policy.Object{Kind: policy.KindFunction, Name: "pg_catalog." + name, Action: policy.ActionExecute, Category: policy.CategoryOf(name)}
}

// maskLeakNames are catalog relations and functions whose rows carry data
// values (planner statistics: most common values, histogram bounds) or
// other sessions' statement text with its literals. A `pg_catalog.*` allow
// rule, which clients need, would otherwise hand a masked column's values
// out through them.
var maskLeakNames = map[string]bool{
	"pg_statistic": true, "pg_stats": true, "pg_stats_ext": true, "pg_stats_ext_exprs": true,
	"pg_statistic_ext_data": true, "pg_stat_activity": true, "pg_stat_statements": true,
	"pg_stat_get_activity": true, "pg_stat_get_backend_activity": true,
}

// maskLeak reports the first object of op in maskLeakNames when the
// session is subject to masking.
func (ss *session) maskLeak(op *policy.Operation) (string, bool) {
	if ss.ms == nil || ss.ms.any.Load() == nil {
		return "", false
	}
	for _, o := range op.Objects {
		if o.Kind != policy.KindTable && o.Kind != policy.KindFunction {
			continue
		}
		base := o.Name[strings.LastIndexByte(o.Name, '.')+1:]
		if maskLeakNames[strings.ToLower(base)] {
			return o.Name, true
		}
	}
	return "", false
}

// verdict maps a decision to a refusal, or nil to forward. Approval and
// masking are enforced by their own stages; until an observer takes them
// over they fail closed here.
func (ss *session) verdict(d *policy.Decision) *pgproto3.ErrorResponse {
	switch d.Verdict {
	case policy.VerdictAllow:
		return nil
	case policy.VerdictBlock:
		return refusal(d.Reason(), d.RuleID)
	case policy.VerdictApprove:
		if ss.h.cfg.Observer.Handles(d) {
			if d.Mask() != nil && ss.ms == nil {
				return refusal("the results must be masked (rule "+d.RuleID+"), and masking is not enabled in this engine", d.RuleID)
			}
			return nil
		}
		return refusal("the statement needs a human approval (rule "+d.RuleID+"), and approvals are not enabled in this engine", d.RuleID)
	case policy.VerdictMask:
		if ss.ms != nil || ss.h.cfg.Observer.Handles(d) {
			return nil
		}
		return refusal("the results must be masked (rule "+d.RuleID+"), and masking is not enabled in this engine", d.RuleID)
	}
	return refusal("unknown verdict", d.RuleID)
}

// copyCheck reads a COPY … TO STDOUT whose rows must be masked. Binary
// COPY cannot be masked, and neither can columns the relay cannot name when
// the mask has column rules (COPY (query); COPY t without a column list
// when there is no catalog to ask): those are refused.
func (ss *session) copyCheck(sql string, m *masking.Masker, d *policy.Decision) (*copyOut, *pgproto3.ErrorResponse) {
	co, binary, err := parseCopyOut(sql)
	switch {
	case binary:
		return nil, refusal("binary COPY of results that must be masked is not supported; use text or CSV", d.RuleID)
	case err != nil:
		ss.s.Log.Warn("masking: COPY options not understood; refusing", "error", err)
		return nil, refusal("the COPY options could not be read, and its results must be masked", d.RuleID)
	case co.rel == "" && len(m.Spec().Columns) > 0:
		return nil, refusal("COPY (query) TO STDOUT of results with masked columns is not supported; use SELECT or COPY table (columns) TO STDOUT", d.RuleID)
	case co.cols == nil && ss.ms.cat == nil && len(m.Spec().Columns) > 0:
		return nil, refusal("COPY of results with masked columns must list its columns (COPY t (a, b) TO STDOUT)", d.RuleID)
	}
	return co, nil
}

// refusal is the error an agent gets for a blocked statement: SQLSTATE
// 42501 (insufficient_privilege), the reason and the deciding rule.
func refusal(reason, rule string) *pgproto3.ErrorResponse {
	e := &pgproto3.ErrorResponse{
		Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "42501",
		Message: "Interlock: " + reason,
	}
	if rule != "" {
		e.Hint = "Refused by Interlock policy rule " + rule + "."
	}
	return e
}

// observerRefusal turns an Observer's error into the agent's error: its own
// Refusal, or — nothing runs that was not recorded — a refusal saying the
// statement could not be recorded.
func observerRefusal(err error) *pgproto3.ErrorResponse {
	var r *Refusal
	if errors.As(err, &r) {
		return &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: r.Code, Message: "Interlock: " + r.Message, Hint: r.Hint}
	}
	return refusal("the statement could not be recorded: "+err.Error(), "")
}

// terminate ends the session for an observer: FATAL to the agent, and an
// error that makes clientLoop return, which closes the upstream connection
// (the server then rolls back an open transaction).
func (ss *session) terminate(t *Terminate) error {
	ss.cc.fatal(t.Code, "Interlock: "+t.Message)
	return t
}

// notice sends a NoticeResponse to the agent now.
func (ss *session) notice(msg string) {
	ss.cc.w.send(&pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "01000", Message: "Interlock: " + msg})
}

func (ss *session) query(ctx context.Context, m *pgproto3.Query) error {
	d, _ := ss.decide(ctx, m.String, PathSimple)
	if d.terminate != nil {
		return ss.terminate(d.terminate)
	}
	if d.refuse != nil {
		// If any statement is refused, none is forwarded.
		return ss.forward(&pgproto3.Query{String: ss.block(d.refuse)})
	}
	ss.nextMask, ss.nextCopies = d.mask, d.copies
	if d.rewrite != "" {
		return ss.forward(&pgproto3.Query{String: d.rewrite})
	}
	return ss.forward(m)
}

func (ss *session) parse(ctx context.Context, m *pgproto3.Parse) error {
	// A named statement gets a server-side name of its own, new for every
	// Parse: a Bind then reaches exactly the statement Interlock decided,
	// or none if the server rejected or skipped its Parse (the name did
	// not exist before). Under the agent's own name, a Parse the server
	// rejects (the name is taken) or skips after an error would leave an
	// older statement answering to it. The unnamed statement keeps its
	// name: the server plans it per Bind and drops it at the next Parse.
	upstream := ""
	newName := func() string {
		ss.stmts++
		return ss.stmtPrefix + strconv.FormatUint(ss.stmts, 10)
	}
	if m.Name != "" {
		upstream = newName()
	}
	if namesSentinel(m.Name) {
		e := refusal("statement names may not start with "+sentinelPrefix+" or "+stmtPrefix+", which Interlock uses itself", "")
		ss.parsed[m.Name] = parsedStmt{blocked: e, upstream: upstream}
		return ss.forward(&pgproto3.Parse{Name: upstream, Query: ss.block(e)})
	}
	pol := ss.h.cfg.Policy()
	d, _ := ss.decide(ctx, m.Query, PathExtended)
	if d.terminate != nil {
		return ss.terminate(d.terminate)
	}
	if d.refuse != nil {
		ss.parsed[m.Name] = parsedStmt{blocked: d.refuse, upstream: upstream}
		return ss.forward(&pgproto3.Parse{Name: upstream, Query: ss.block(d.refuse)})
	}
	if d.approved && upstream == "" {
		// An approved statement never sits in the server's unnamed slot:
		// a later unnamed Parse that the server skips (after an error)
		// would leave it there for a Bind Interlock takes for the new one.
		upstream = newName()
	}
	ps := parsedFrom(d, m.Query, pol)
	ps.syncs, ps.done, ps.upstream = ss.syncs, new(atomic.Bool), upstream
	ps.decidedIn, ps.effect, ps.recordN = d.tx, d.effect, d.recordN
	ss.parsed[m.Name] = ps
	query := m.Query
	if d.rewrite != "" {
		query = d.rewrite // DEALLOCATE of a protocol statement, by its server-side name
	}
	return ss.forward(&pgproto3.Parse{Name: upstream, Query: query, ParameterOIDs: m.ParameterOIDs})
}

func parsedFrom(d decision, query string, pol *policy.Policy) parsedStmt {
	ps := parsedStmt{mask: d.mask, query: query, pol: pol, gated: d.approved}
	if d.approved {
		ps.credits = 1 // the approval the Parse waited for: one execution
	}
	if len(d.copies) > 0 {
		ps.copy = d.copies[0]
	}
	return ps
}

// redecide checks a prepared statement again under the policy in force,
// when it was parsed under an older one, or in another transaction state
// than now and a rule tests in_transaction.
func (ss *session) redecide(ctx context.Context, name string, p parsedStmt) (parsedStmt, error) {
	pol := ss.h.cfg.Policy()
	if p.blocked != nil || p.pol == nil {
		return p, nil
	}
	txMoved := pol.ConditionsOnTransaction() && !p.decidedIn.same(ss.txState(0))
	if p.pol == pol && !txMoved {
		return p, nil
	}
	if !p.known(ss.syncs) {
		// The unnamed statement, parsed in an earlier pipeline segment and
		// not confirmed since: the server may hold an older one, which
		// the new policy would have to judge by a text Interlock does not
		// have.
		p = parsedStmt{blocked: refusal("the policy was reloaded since the unnamed statement was prepared, and Interlock cannot tell which statement the server holds: prepare it again", ""), syncs: p.syncs, done: p.done}
		ss.parsed[name] = p
		return p, nil
	}
	if p.pol != pol {
		ss.s.Log.Info("policy reloaded since the statement was prepared; deciding it again", "statement", name)
	}
	if sup, ok := ss.h.cfg.Observer.(Superseder); ok && p.recordN != 0 {
		// This execution is the new decision's: the Parse's record must
		// not wait for its result any more.
		sup.Superseded(ss.s, p.recordN)
	}
	d, _ := ss.decide(ctx, p.query, PathExtended)
	if d.terminate != nil {
		return p, ss.terminate(d.terminate)
	}
	// The server still holds the same statement: what Interlock knows of
	// that carries over.
	syncs, done, upstream := p.syncs, p.done, p.upstream
	if d.refuse != nil {
		p = parsedStmt{blocked: d.refuse}
	} else {
		p = parsedFrom(d, p.query, pol)
		p.decidedIn, p.effect, p.recordN = d.tx, d.effect, d.recordN
	}
	p.syncs, p.done, p.upstream = syncs, done, upstream
	ss.parsed[name] = p
	return p, nil
}

// bind refuses to bind a statement whose Parse was blocked: the server
// never created it, but an unnamed statement's predecessor might still
// exist there, so the Bind is pointed at a name that cannot.
func (ss *session) bind(ctx context.Context, m *pgproto3.Bind) error {
	p, ok := ss.parsed[m.PreparedStatement]
	sp, sqlPrepared := ss.prepared[m.PreparedStatement]
	if m.DestinationPortal != "" {
		// Every forwarded Bind below creates (or fails to create) the
		// portal under this name.
		if len(ss.portals) >= maxPortals {
			clear(ss.portals)
		}
		if old, ok := ss.portals[m.DestinationPortal]; ok && ss.ms != nil {
			// No Execute can reach the older portal any more.
			delete(ss.ms.portals, old)
		}
		ss.nportals++
		up := ss.portalPrefix + strconv.FormatUint(ss.nportals, 10)
		ss.portals[m.DestinationPortal] = up
		m.DestinationPortal = up
	}
	if !ok && sqlPrepared {
		if refuse := ss.bindSQLPrepared(m.PreparedStatement, sp); refuse != nil {
			return ss.forward(&pgproto3.Bind{DestinationPortal: m.DestinationPortal, PreparedStatement: ss.block(refuse)})
		}
	}
	if !ok && !sqlPrepared {
		// Every statement the server holds for this session came through
		// Interlock, by Parse or SQL PREPARE: a name it does not know was
		// closed or deallocated, and binding it could only reach a
		// statement whose Close the server skipped after an error.
		e := refusal(fmt.Sprintf("prepared statement %q does not exist (as far as Interlock knows: closed or deallocated)", m.PreparedStatement), "")
		e.Code = "26000" // invalid_sql_statement_name, as the server says: clients prepare again
		return ss.forward(&pgproto3.Bind{DestinationPortal: m.DestinationPortal, PreparedStatement: ss.block(e)})
	}
	if ok {
		var err error
		if p, err = ss.redecide(ctx, m.PreparedStatement, p); err != nil {
			return err
		}
	}
	// What executing the portal does to the transaction state (a refused
	// Bind fails, and the server skips the rest of the segment).
	if ss.portalTx == nil {
		ss.portalTx = map[string]portalTx{}
	}
	pt := portalTx{effect: txKeeps, boundIn: ss.txState(0)}
	if ok && p.blocked == nil {
		pt.effect = p.effect
	}
	ss.portalTx[m.DestinationPortal] = pt
	if ss.ms != nil {
		// The portal's results are masked like its statement's, when
		// Interlock knows which statement the server holds by that name.
		// Otherwise (a name from SQL PREPARE, or a Parse the server
		// rejected or skipped after an error, so that an older statement
		// may answer to the name) with every mask the session can get.
		pt := &portal{mask: p.mask, copy: p.copy}
		if !ok || !p.known(ss.syncs) {
			pt = &portal{mask: ss.anyMask()}
		}
		ss.ms.bindPortal(m.DestinationPortal, pt)
	}
	if ok && p.blocked != nil {
		return ss.forward(&pgproto3.Bind{DestinationPortal: m.DestinationPortal, PreparedStatement: ss.block(p.blocked)})
	}
	if ok && p.gated {
		// An approval covers one execution: the Parse's approval the
		// first Bind, a new request (and a human) each later one.
		if p.credits > 0 {
			p.credits--
			ss.parsed[m.PreparedStatement] = p
		} else {
			d, _ := ss.decide(ctx, p.query, PathExtended)
			if d.terminate != nil {
				return ss.terminate(d.terminate)
			}
			if d.refuse != nil {
				return ss.forward(&pgproto3.Bind{DestinationPortal: m.DestinationPortal, PreparedStatement: ss.block(d.refuse)})
			}
		}
	}
	if b, isBinder := ss.h.cfg.Observer.(Binder); isBinder {
		ev := BindEvent{Statement: m.PreparedStatement, Portal: m.DestinationPortal, Params: m.Parameters, Formats: m.ParameterFormatCodes}
		if ok && (ss.ms == nil || p.known(ss.syncs)) {
			ev.Text = p.query
		}
		if err := b.Bound(ctx, ss.s, &ev); err != nil {
			// Refused like a blocked statement: the server fails the Bind
			// and skips to Sync, so the agent stays in step.
			return ss.forward(&pgproto3.Bind{DestinationPortal: m.DestinationPortal, PreparedStatement: ss.block(observerRefusal(err))})
		}
	}
	if ok {
		m.PreparedStatement = p.upstream
	}
	return ss.forward(m)
}

// bindSQLPrepared decides a Bind of a statement SQL PREPARE created, under
// the policy in force: the PREPARE was decided under the policy of its
// time, and a Bind does not pass EXECUTE's decision.
func (ss *session) bindSQLPrepared(name string, sp sqlPrepared) *pgproto3.ErrorResponse {
	if sp.unsure {
		return refusal(fmt.Sprintf("prepared statement %q may or may not have been deallocated: send DEALLOCATE %s on its own, then prepare it again", name, name), "")
	}
	pol := ss.h.cfg.Policy()
	op := sp.op
	// As decide does for EXECUTE: catalog relations that hold values count
	// as reading them, and a session masked since the PREPARE may not
	// read what no mask covers.
	op.Objects = catalogReads(slices.Clone(sp.op.Objects))
	op.Agent, op.Target, op.Protocol, op.Roles = ss.s.Identity.Agent, ss.target.Name, policy.ProtocolPostgres, pol.AgentRoles(ss.s.Identity.Agent)
	tx := ss.txState(0)
	op.Attrs.InTransaction = tx.inTx
	d := ss.decideOp(pol, &op, tx.sure)
	if d.Verdict == policy.VerdictApprove {
		return refusal(fmt.Sprintf("prepared statement %q needs a human approval (rule %s): run it with EXECUTE", name, d.RuleID), d.RuleID)
	}
	if refuse := ss.verdict(&d); refuse != nil {
		return refuse
	}
	if ss.ms != nil {
		ss.anyMask() // masks a reload added count too
	}
	if what, ok := ss.maskLeak(&op); ok {
		return refusal(what+" is not readable in a session whose results are masked: it holds values from table rows or other sessions' statements, which no mask covers", "")
	}
	return nil
}

// anyMask is every mask the session can get: those it has been under and
// those the policy in force gives its agent (a reload may have added some).
func (ss *session) anyMask() *masking.Masker {
	ss.noteMask(ss.h.cfg.Policy().MasksFor(ss.s.Identity.Agent, ss.target.Name))
	return ss.ms.any.Load()
}

// functionCall handles the fast-path protocol (libpq's lo_* functions use
// it). The message names the function by OID only, so it is presented to
// the policy as function "fastpath.<oid>" of category unresolved: it may be
// pg_read_file or lo_export, so every block (and approve) rule on a
// function category applies to it, and only a rule naming fastpath.* (or
// without selectors) allows it.
func (ss *session) functionCall(ctx context.Context, m *pgproto3.FunctionCall) error {
	pol := ss.h.cfg.Policy()
	op := policy.Operation{
		Agent: ss.s.Identity.Agent, Target: ss.target.Name, Protocol: policy.ProtocolPostgres,
		Roles: pol.AgentRoles(ss.s.Identity.Agent), Action: policy.ActionExecute,
		Objects: []policy.Object{{Kind: policy.KindFunction, Name: "fastpath." + strconv.FormatUint(uint64(m.Function), 10), Action: policy.ActionExecute, Category: policy.CategoryUnresolved}},
	}
	tx := ss.txState(1)
	op.Attrs.InTransaction = tx.inTx
	d := ss.decideOp(pol, &op, tx.sure)
	refuse := ss.verdict(&d)
	ev := StatementEvent{Text: fmt.Sprintf("<fastpath function call oid=%d>", m.Function), Path: PathFastpath, Op: op, Decision: d, Forwarded: refuse == nil, Notify: ss.notice}
	if err := ss.h.cfg.Observer.Decided(ctx, ss.s, &ev); err != nil {
		if t, ok := errors.AsType[*Terminate](err); ok {
			return ss.terminate(t)
		}
		refuse = observerRefusal(err)
	}
	ss.h.cfg.Metrics.statement(ss.s.Identity.Agent, ss.target.Name, d.Verdict, refuse != nil)
	if refuse != nil {
		ss.s.Log.Info("fastpath call blocked", "oid", m.Function, "rule", d.RuleID)
		// A failing Query gets the same answer shape (error, then
		// ReadyForQuery) as a failing FunctionCall.
		return ss.forward(&pgproto3.Query{String: ss.block(refuse)})
	}
	return ss.forward(m)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
