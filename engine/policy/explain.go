package policy

// Explanation shows how a decision came about, for `interlock policy
// explain` and for tests. Producing it allocates; Decide does not.
type Explanation struct {
	Decision Decision
	// Roles are the roles the operation was evaluated with.
	Roles []string
	// Objects traces every object of the operation, then the statement
	// action as an entry with a zero Kind (see Statement).
	Objects []ObjectTrace
}

// ObjectTrace lists the rules that matched one object.
type ObjectTrace struct {
	Object Object
	// Implicit is set for ordinary built-in functions that need no rule.
	Implicit bool
	// Covered is set when an allow, mask or approve rule matched, or
	// Implicit is set.
	Covered bool
	// Statement marks the statement-action entry. When the operation has
	// explicitly covered objects, it only lists block and approve rules
	// without object selectors and its coverage does not matter; otherwise
	// allow rules listing the action match whatever their selectors.
	Statement bool
	Matches   []RuleInfo
}

// Explain evaluates op like Decide and also reports every matching rule.
func (p *Policy) Explain(op *Operation) Explanation {
	if op == nil {
		return Explanation{Decision: p.Decide(op)}
	}
	ex := Explanation{Decision: p.Decide(op), Roles: op.Roles}
	if ex.Roles == nil {
		ex.Roles = p.agentRoles[op.Agent]
	}
	tr := p.byTarget[op.Target]
	if op.Unclassified || tr == nil {
		return ex
	}
	explicit, allCovered := false, true
	for i := range op.Objects {
		t := p.trace(tr, ex.Roles, &op.Objects[i], &op.Attrs, passObject)
		explicit = explicit || hasCovering(t.Matches)
		allCovered = allCovered && t.Covered
		ex.Objects = append(ex.Objects, t)
	}
	o := Object{Action: op.Action}
	pass := passStatement
	if explicit || !allCovered {
		pass = passStatementRestrictive
	}
	t := p.trace(tr, ex.Roles, &o, &op.Attrs, pass)
	t.Statement = true
	ex.Objects = append(ex.Objects, t)
	return ex
}

func hasCovering(m []RuleInfo) bool {
	for _, r := range m {
		if r.Decision != VerdictBlock {
			return true
		}
	}
	return false
}

func (p *Policy) trace(tr *targetRules, roles []string, o *Object, attrs *Attributes, pass pass) ObjectTrace {
	t := ObjectTrace{Object: *o, Implicit: implicitlyCovered(o)}
	var seen []*rule
	collect := func(list []*rule) {
		for _, r := range list {
			if pass == passStatementRestrictive && r.decision != VerdictBlock && r.decision != VerdictApprove {
				continue
			}
			if r.matches(o, attrs) || (pass == passStatement && r.decision == VerdictAllow && r.matchesAction(o, attrs)) {
				seen = append(seen, r)
			}
		}
	}
	if o.Action < actionCount {
		collect(tr.global.byAction[o.Action].all())
		for _, name := range roles {
			if ix := tr.roles[name]; ix != nil {
				collect(ix.byAction[o.Action].all())
			}
		}
	}
	// Policy order, without duplicates (a role listed twice in Roles).
	for i := 0; i < len(p.rules); i++ {
		for _, r := range seen {
			if r.idx == i {
				info, _ := p.Rule(r.id)
				t.Matches = append(t.Matches, info)
				if r.decision != VerdictBlock {
					t.Covered = true
				}
				break
			}
		}
	}
	t.Covered = t.Covered || t.Implicit
	return t
}
