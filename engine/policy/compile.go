package policy

import (
	"sort"
	"strings"
)

// compile resolves references between sections and builds the indexes
// Decide uses. It runs only on a file without parse errors, so every name
// it meets is well-formed.
func compile(d *decoder, p *Policy) {
	if !d.inheritance(p) {
		return
	}
	p.agentRoles = make(map[string][]string, len(p.agents))
	for _, a := range p.agents {
		var expanded []string
		for _, name := range a.Roles {
			for _, r := range p.roles[p.roleIdx[name]].expanded {
				if !contains(expanded, r) {
					expanded = append(expanded, r)
				}
			}
		}
		p.agentRoles[a.Name] = expanded
	}

	// Policy order is file order, whether a rule sits in a role or in the
	// global list: the first matching rule of the winning verdict is the
	// one a reader of the file would point at.
	sort.SliceStable(p.rules, func(i, j int) bool { return p.rules[i].line < p.rules[j].line })
	p.ruleID = make(map[string]*rule, len(p.rules))
	for i, r := range p.rules {
		r.idx = i
		switch r.id {
		case RuleDefaultDeny, RuleUnclassified, RuleUnknownTarget:
			d.errorAt(r.line, "rule %s: id %q is reserved for built-in decisions", r.id, r.id)
			continue
		}
		if other, dup := p.ruleID[r.id]; dup {
			d.errorAt(r.line, "rule id %q is already used at line %d; ids must be unique", r.id, other.line)
			continue
		}
		p.ruleID[r.id] = r
		if r.when.inTransaction != unset {
			p.condTx = true
		}
		if r.decision == VerdictMask {
			if len(p.maskRules) == maxMaskRules {
				d.errorAt(r.line, "rule %s: more than %d mask rules", r.id, maxMaskRules)
				continue
			}
			r.maskBit = len(p.maskRules)
			p.maskRules = append(p.maskRules, r)
		}
	}

	p.buildIndex()
}

// appliesTo reports whether the rule's targets list matches the target.
func (r *rule) appliesTo(target string) bool {
	return len(r.targets) == 0 || r.targets.match(target)
}

// inheritance checks inherits references, rejects cycles and computes each
// role's expanded list (itself first, then inherited roles breadth first).
func (d *decoder) inheritance(p *Policy) bool {
	ok := true
	for _, r := range p.roles {
		for i, name := range r.inherits {
			if _, known := p.roleIdx[name]; !known {
				d.errorf(r.inheritNodes[i], "role %q inherits unknown role %q", r.name, name)
				ok = false
			}
		}
	}
	// Depth-first search with colours; a grey role met again closes a cycle.
	const (
		white = iota
		grey
		black
	)
	colour := make([]int, len(p.roles))
	var stack []string
	var visit func(i int) bool
	visit = func(i int) bool {
		colour[i] = grey
		stack = append(stack, p.roles[i].name)
		for k, name := range p.roles[i].inherits {
			j, known := p.roleIdx[name]
			if !known {
				continue // reported above
			}
			switch colour[j] {
			case grey:
				start := 0
				for s, n := range stack {
					if n == name {
						start = s
					}
				}
				cycle := append(append([]string(nil), stack[start:]...), name)
				d.errorf(p.roles[i].inheritNodes[k], "role inheritance cycle: %s", strings.Join(cycle, " → "))
				return false
			case white:
				if !visit(j) {
					return false
				}
			}
		}
		stack = stack[:len(stack)-1]
		colour[i] = black
		return true
	}
	for i := range p.roles {
		if colour[i] == white && !visit(i) {
			return false
		}
	}
	if !ok {
		return false
	}
	for _, r := range p.roles {
		r.expanded = []string{r.name}
		for q := 0; q < len(r.expanded); q++ {
			for _, name := range p.roles[p.roleIdx[r.expanded[q]]].inherits {
				if !contains(r.expanded, name) {
					r.expanded = append(r.expanded, name)
				}
			}
		}
	}
	return true
}
