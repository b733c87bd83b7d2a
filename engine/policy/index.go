package policy

// The index is what makes Decide cheap: for each target, rules are
// pre-filtered by target, by agent (or role) and by the action they can
// match, and split by decision, each list in policy order. Decide then only
// looks at rules that could match, and can stop a list at its first match.

// targetRules is the rule index for one target.
type targetRules struct {
	// agents holds, per agent, the global rules plus the rules of every
	// role the agent holds (inheritance expanded). Agents with the same
	// role list share one index.
	agents map[string]*ruleIndex
	// global and roles serve operations whose Roles are not the agent's
	// own list (callers may pass any roles): global rules plus each role's
	// rules, looked up one by one.
	global *ruleIndex
	roles  map[string]*ruleIndex
}

// ruleIndex lists rules by the object action they can match.
type ruleIndex struct {
	byAction [actionCount]ruleGroups
}

// ruleGroups splits candidate rules by decision, each in policy order.
type ruleGroups struct {
	block, approve, mask, allow []*rule
}

func (ix *ruleIndex) add(r *rule) {
	for a := Action(1); a < actionCount; a++ {
		if !r.actions.Has(a) && (r.callCats == 0 || (a != ActionExecute && a != ActionCall)) {
			continue
		}
		g := &ix.byAction[a]
		switch r.decision {
		case VerdictBlock:
			g.block = append(g.block, r)
		case VerdictApprove:
			g.approve = append(g.approve, r)
		case VerdictMask:
			g.mask = append(g.mask, r)
		default:
			g.allow = append(g.allow, r)
		}
	}
}

// buildIndex builds the per-target indexes. p.rules is in policy order, so
// every list is too.
func (p *Policy) buildIndex() {
	p.byTarget = make(map[string]*targetRules, len(p.targets))
	for _, t := range p.targets {
		tr := &targetRules{
			agents: make(map[string]*ruleIndex, len(p.agents)),
			global: &ruleIndex{},
			roles:  make(map[string]*ruleIndex, len(p.roles)),
		}
		for _, r := range p.rules {
			if !r.appliesTo(t.Name) {
				continue
			}
			if r.role == "" {
				tr.global.add(r)
				continue
			}
			ix := tr.roles[r.role]
			if ix == nil {
				ix = &ruleIndex{}
				tr.roles[r.role] = ix
			}
			ix.add(r)
		}
		shared := map[string]*ruleIndex{}
		for _, a := range p.agents {
			roles := p.agentRoles[a.Name]
			key := ""
			for _, r := range roles {
				key += r + "\x00"
			}
			ix := shared[key]
			if ix == nil {
				ix = &ruleIndex{}
				for _, r := range p.rules {
					if r.appliesTo(t.Name) && (r.role == "" || contains(roles, r.role)) {
						ix.add(r)
					}
				}
				shared[key] = ix
			}
			tr.agents[a.Name] = ix
		}
		p.byTarget[t.Name] = tr
	}
}

// sameRoles reports whether roles is the agent's own expanded list, as
// returned by AgentRoles (usually the very same slice).
func sameRoles(roles, own []string) bool {
	if len(roles) != len(own) {
		return false
	}
	if len(roles) == 0 || &roles[0] == &own[0] {
		return true
	}
	for i := range roles {
		if roles[i] != own[i] {
			return false
		}
	}
	return true
}

// all returns every rule of the groups (allocating; for Explain).
func (g *ruleGroups) all() []*rule {
	out := append([]*rule(nil), g.block...)
	out = append(out, g.approve...)
	out = append(out, g.mask...)
	return append(out, g.allow...)
}
