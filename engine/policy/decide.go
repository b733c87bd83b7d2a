package policy

import (
	"fmt"
	"strings"
)

// Verdict is the outcome of a decision.
type Verdict uint8

const (
	// VerdictBlock is the zero value so that a forgotten or zero Decision
	// fails closed.
	VerdictBlock Verdict = iota
	VerdictAllow
	VerdictMask
	VerdictApprove
	verdictCount
)

var verdictNames = [...]string{
	VerdictBlock:   "block",
	VerdictAllow:   "allow",
	VerdictMask:    "mask",
	VerdictApprove: "approve",
}

func (v Verdict) String() string {
	if v < verdictCount {
		return verdictNames[v]
	}
	return "unknown"
}

// ParseVerdict returns the verdict with the given name.
func ParseVerdict(name string) (Verdict, bool) {
	for v := VerdictBlock; v < verdictCount; v++ {
		if verdictNames[v] == name {
			return v, true
		}
	}
	return VerdictBlock, false
}

// rank orders verdicts by precedence: block > approve > mask > allow.
func (v Verdict) rank() int {
	switch v {
	case VerdictAllow:
		return 1
	case VerdictMask:
		return 2
	case VerdictApprove:
		return 3
	}
	return 4
}

// Decision is the answer to one operation.
type Decision struct {
	Verdict Verdict
	// RuleID is the deciding rule: among the matching rules of the winning
	// verdict, the first in the file; or RuleDefaultDeny, RuleUnclassified,
	// RuleUnknownTarget.
	RuleID string
	// Message is the block rule's message, the classifier's reason for an
	// unclassified operation, or empty. See Explain for a full sentence.
	Message string
	// Object is, for a block, the object that matched the block rule or
	// that no rule covered; zero for operations without objects.
	Object Object
	// Approval is the deciding approve rule's settings (nil otherwise).
	Approval *Approval

	masks  maskBits
	policy *Policy
}

// Mask returns the merged masking to apply to the results, or nil. It is set
// for mask decisions and also for approve decisions whose operation matched
// mask rules too: an approved statement's results are still masked.
func (d Decision) Mask() *MaskSpec {
	if d.policy == nil || (d.Verdict != VerdictMask && d.Verdict != VerdictApprove) {
		return nil
	}
	return d.policy.mergeMasks(d.masks)
}

// Reason renders the decision as one sentence for an error message sent to
// the agent or an audit record.
func (d Decision) Reason() string {
	var b strings.Builder
	switch d.RuleID {
	case RuleUnclassified:
		b.WriteString("operation could not be classified")
		if d.Message != "" {
			b.WriteString(": ")
			b.WriteString(d.Message)
		}
		return b.String()
	case RuleUnknownTarget:
		return "target is not defined in the policy"
	case RuleDefaultDeny:
		b.WriteString("no rule allows ")
		writeObject(&b, &d.Object)
		return b.String()
	}
	fmt.Fprintf(&b, "%s by rule %s", d.Verdict, d.RuleID)
	if d.Verdict == VerdictBlock && d.Object.Action != ActionUnknown {
		b.WriteString(" (")
		writeObject(&b, &d.Object)
		b.WriteString(")")
	}
	if d.Message != "" {
		b.WriteString(": ")
		b.WriteString(d.Message)
	}
	return b.String()
}

func writeObject(b *strings.Builder, o *Object) {
	b.WriteString(o.Action.String())
	if o.Kind != 0 {
		b.WriteString(" on ")
		b.WriteString(o.Kind.String())
		b.WriteByte(' ')
		b.WriteString(o.Name)
	}
}

// DecideUnsureTx decides op when the caller cannot tell whether it will
// run inside a transaction block (a statement pipelined behind requests
// whose answers have not come back, which may open or end one): it
// decides under both and returns the stricter decision, so that a rule
// conditioned on in_transaction cannot be met by a guess.
// op.Attrs.InTransaction is left as the caller's best guess.
func (p *Policy) DecideUnsureTx(op *Operation) Decision {
	guess := op.Attrs.InTransaction
	d := p.Decide(op)
	op.Attrs.InTransaction = !guess
	other := p.Decide(op)
	op.Attrs.InTransaction = guess
	return Stricter(d, other)
}

// ConditionsOnTransaction reports whether any rule tests in_transaction:
// only then can the transaction state change a decision.
func (p *Policy) ConditionsOnTransaction() bool { return p.condTx }

// severity orders verdicts from the most permissive to the strictest.
var severity = [...]int{VerdictAllow: 0, VerdictMask: 1, VerdictApprove: 2, VerdictBlock: 3}

// Stricter returns the stricter of two decisions of the same policy: block
// over approve over mask over allow. When both are mask or approve, the
// stricter (or a, when equal) decides and the masks of both apply.
func Stricter(a, b Decision) Decision {
	if a.Verdict >= verdictCount || b.Verdict >= verdictCount {
		return Decision{Verdict: VerdictBlock, RuleID: RuleUnclassified}
	}
	if severity[b.Verdict] > severity[a.Verdict] {
		a, b = b, a
	}
	// An approved statement's results are still masked: whichever of
	// mask and approve wins, the masks of both apply.
	masked := func(v Verdict) bool { return v == VerdictMask || v == VerdictApprove }
	if masked(a.Verdict) && masked(b.Verdict) {
		for i := range a.masks {
			a.masks[i] |= b.masks[i]
		}
	}
	return a
}

// Decide evaluates op against the policy. It never allocates and never
// mutates op.
//
// The roles are op.Roles; when op.Roles is nil they are looked up from
// op.Agent. Callers should fill Roles from the same *Policy they call Decide
// on, so a reload cannot mix two policies.
func (p *Policy) Decide(op *Operation) Decision {
	if op == nil {
		return Decision{Verdict: VerdictBlock, RuleID: RuleUnclassified}
	}
	if op.Unclassified {
		return Decision{Verdict: VerdictBlock, RuleID: RuleUnclassified, Message: op.Reason}
	}
	tr := p.byTarget[op.Target]
	if tr == nil {
		return Decision{Verdict: VerdictBlock, RuleID: RuleUnknownTarget}
	}
	// The common case: the caller passed the agent's own role list (or
	// nil), served by one index merging global and role rules.
	src := source{tr: tr, roles: op.Roles}
	if op.Roles == nil || sameRoles(op.Roles, p.agentRoles[op.Agent]) {
		src.merged = tr.agents[op.Agent]
		if src.merged == nil {
			src.merged = tr.global // unknown agent without roles: global rules only
		}
	}

	var ev evaluation
	for i := range op.Objects {
		ev.object(&src, &op.Objects[i], &op.Attrs, passObject)
	}
	// The statement pass. Statements without objects (BEGIN, SELECT 1)
	// and statements whose objects are all implicitly covered (SELECT
	// now()) are judged on the statement action alone, so an agent still
	// needs a rule for what it does; an allow rule listing the action
	// covers it whatever its object selectors (there is no object to test
	// them on). Otherwise the statement action only meets block and
	// approve rules without object selectors: "block copy_to_program" must
	// hold even when the classifier gives the copied table the action
	// select.
	pass := passStatementRestrictive
	if !ev.explicit && !ev.uncovered {
		pass = passStatement
	}
	st := Object{Action: op.Action}
	ev.object(&src, &st, &op.Attrs, pass)
	return ev.decision(p)
}

// source is where the candidate rules of one Decide call come from: the
// merged index of the agent, or the global index plus one per role.
type source struct {
	merged *ruleIndex
	tr     *targetRules
	roles  []string
}

// evaluation accumulates the matches of one Decide call on the stack.
type evaluation struct {
	// best[v] is the first (lowest idx) rule of verdict v that matched any
	// object.
	best      [verdictCount]*rule
	blockObj  Object // the object best[VerdictBlock] matched
	uncovered bool
	firstGap  Object // first object no allow/mask/approve rule covered
	explicit  bool   // some object was covered by a rule (not implicitly)
	masks     maskBits
}

// pass says what an evaluation of one (pseudo-)object contributes.
type pass uint8

const (
	passObject               pass = iota // an object of the operation
	passStatement                        // the statement action, which must be covered; allow rules ignore selectors
	passStatementRestrictive             // the statement action, block/approve rules only
)

// object evaluates the candidate rules for one object.
func (ev *evaluation) object(src *source, o *Object, attrs *Attributes, pass pass) {
	a := o.Action
	if a >= actionCount {
		a = ActionUnknown // no rule lists it, so the object stays uncovered
	}
	covered := false
	if src.merged != nil {
		covered = ev.groups(&src.merged.byAction[a], o, attrs, pass, false)
	} else {
		covered = ev.groups(&src.tr.global.byAction[a], o, attrs, pass, false)
		for _, name := range src.roles {
			if ix := src.tr.roles[name]; ix != nil {
				covered = ev.groups(&ix.byAction[a], o, attrs, pass, covered)
			}
		}
	}
	if pass == passStatementRestrictive {
		return
	}
	ev.explicit = ev.explicit || covered
	if !covered && !implicitlyCovered(o) && !ev.uncovered {
		ev.uncovered = true
		ev.firstGap = *o
	}
}

// groups matches one object against the candidate rules of one action and
// reports whether it is covered (covered says whether an earlier list
// already covered it). Lists are in policy order, so each can stop at its
// first match, except masks, which all apply.
func (ev *evaluation) groups(g *ruleGroups, o *Object, attrs *Attributes, pass pass, covered bool) bool {
	best := ev.best[VerdictBlock]
	for _, r := range g.block {
		if best != nil && r.idx >= best.idx {
			break // an earlier block already decides
		}
		if r.matches(o, attrs) {
			ev.best[VerdictBlock], ev.blockObj = r, *o
			break
		}
	}
	if ev.best[VerdictBlock] != nil {
		// Nothing but a block rule earlier in the file can change the
		// outcome now; coverage no longer matters.
		return true
	}
	covered = ev.first(g.approve, VerdictApprove, o, attrs) || covered
	if pass == passStatementRestrictive {
		return covered
	}
	for _, r := range g.mask {
		if r.matches(o, attrs) {
			ev.masks.set(r.maskBit)
			if b := ev.best[VerdictMask]; b == nil || r.idx < b.idx {
				ev.best[VerdictMask] = r
			}
			covered = true
		}
	}
	// Covered by an approve or mask rule: which allow rule also matches
	// cannot change the decision any more.
	if covered {
		return true
	}
	if pass == passStatement {
		for _, r := range g.allow {
			if r.matchesAction(o, attrs) {
				if b := ev.best[VerdictAllow]; b == nil || r.idx < b.idx {
					ev.best[VerdictAllow] = r
				}
				return true
			}
		}
		return false
	}
	return ev.first(g.allow, VerdictAllow, o, attrs)
}

// first finds the first matching rule of a list in policy order and records
// it as best of its verdict if it precedes the current best.
func (ev *evaluation) first(list []*rule, v Verdict, o *Object, attrs *Attributes) bool {
	for _, r := range list {
		if r.matches(o, attrs) {
			if b := ev.best[v]; b == nil || r.idx < b.idx {
				ev.best[v] = r
			}
			return true
		}
	}
	return false
}

func (ev *evaluation) decision(p *Policy) Decision {
	if r := ev.best[VerdictBlock]; r != nil {
		return Decision{Verdict: VerdictBlock, RuleID: r.id, Message: r.message, Object: ev.blockObj}
	}
	if ev.uncovered {
		return Decision{Verdict: VerdictBlock, RuleID: RuleDefaultDeny, Object: ev.firstGap}
	}
	if r := ev.best[VerdictApprove]; r != nil {
		return Decision{Verdict: VerdictApprove, RuleID: r.id, Approval: r.approval, masks: ev.masks, policy: p}
	}
	if r := ev.best[VerdictMask]; r != nil {
		return Decision{Verdict: VerdictMask, RuleID: r.id, masks: ev.masks, policy: p}
	}
	if r := ev.best[VerdictAllow]; r != nil {
		return Decision{Verdict: VerdictAllow, RuleID: r.id}
	}
	// Unreachable in practice: the statement-action pass either matched a
	// rule or marked the operation uncovered. Fail closed regardless.
	return Decision{Verdict: VerdictBlock, RuleID: RuleDefaultDeny}
}

// implicitlyCovered reports whether o needs no rule: calling an ordinary
// built-in function (pg_catalog, no dangerous category) such as lower().
func implicitlyCovered(o *Object) bool {
	return o.Kind == KindFunction && o.Category == CategoryNone &&
		o.Action == ActionExecute && strings.HasPrefix(o.Name, "pg_catalog.")
}

// matches reports whether r matches one object of an operation.
func (r *rule) matches(o *Object, attrs *Attributes) bool {
	if !r.matchesAction(o, attrs) {
		return false
	}
	if !r.hasSelector {
		return true
	}
	switch o.Kind {
	case KindTable:
		return r.tables.match(o.Name) || (len(r.schemas) > 0 && r.schemas.match(schemaOf(o.Name)))
	case KindSchema:
		return r.schemas.match(o.Name)
	case KindFunction:
		if r.functions.match(o.Name) {
			return true
		}
		if o.Category == CategoryUnresolved {
			return r.categories != 0 && r.restrictive()
		}
		return o.Category != CategoryNone && r.categories.has(o.Category)
	case KindPath:
		return r.paths.match(o.Name)
	case KindSetting:
		return r.settings.match(o.Name)
	case KindDatabase:
		return r.databases.match(o.Name)
	}
	return false
}

// matchesAction tests the action and the conditions, not the selectors.
func (r *rule) matchesAction(o *Object, attrs *Attributes) bool {
	return (r.actions.Has(o.Action) || r.matchesCall(o)) && r.when.ok(attrs, r.decision)
}

// matchesCall: a call of a categorised function matches a rule naming its
// category, whatever the rule's action list says.
//
// A call of an unresolved function (CategoryUnresolved) may be in any
// category: it matches block and approve rules naming any category, never
// allow or mask rules by category.
func (r *rule) matchesCall(o *Object) bool {
	if o.Kind != KindFunction || (o.Action != ActionExecute && o.Action != ActionCall) {
		return false
	}
	if o.Category == CategoryUnresolved {
		return r.callCats != 0 && r.restrictive()
	}
	return o.Category != CategoryNone && r.callCats.has(o.Category)
}

// restrictive reports whether r is a block or approve rule.
func (r *rule) restrictive() bool {
	return r.decision == VerdictBlock || r.decision == VerdictApprove
}

// ok evaluates the when conditions. An unknown row estimate (negative)
// satisfies row_estimate_over only for block and approve rules: when in
// doubt, the restrictive rule applies and the permissive one does not.
func (c *conditions) ok(a *Attributes, decision Verdict) bool {
	if !c.hasWhere.ok(a.HasWhere) || !c.inTransaction.ok(a.InTransaction) {
		return false
	}
	if c.rowsOver >= 0 {
		if a.RowEstimate < 0 {
			return decision == VerdictBlock || decision == VerdictApprove
		}
		return a.RowEstimate > c.rowsOver
	}
	return true
}

// schemaOf returns the schema part of a qualified name ("" if unqualified).
func schemaOf(name string) string {
	if i := strings.IndexByte(name, '.'); i >= 0 {
		return name[:i]
	}
	return ""
}
