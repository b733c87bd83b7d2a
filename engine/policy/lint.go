package policy

import (
	"fmt"
	"sort"
)

// Warning is a problem in a valid policy: something that will not do what
// its author most likely meant.
type Warning struct {
	File    string
	Line    int
	RuleID  string // empty when the warning is not about one rule
	Message string
}

func (w Warning) String() string {
	return fmt.Sprintf("%s:%d: warning: %s", w.File, w.Line, w.Message)
}

// Lint reports rules that can never match or never take effect, and
// definitions nothing uses. It does not change how the policy decides.
func (p *Policy) Lint() []Warning {
	var ws []Warning
	warn := func(line int, id, format string, args ...any) {
		ws = append(ws, Warning{File: p.file, Line: line, RuleID: id, Message: fmt.Sprintf(format, args...)})
	}

	held := map[string]bool{}
	for _, roles := range p.agentRoles {
		for _, r := range roles {
			held[r] = true
		}
	}
	for _, r := range p.roles {
		if !held[r.name] {
			warn(r.line, "", "role %q is not held by any agent (directly or by inheritance): its rules never apply", r.name)
		}
	}
	agentRole := map[string]bool{}
	for i, a := range p.agents {
		if len(a.Roles) == 0 {
			warn(p.agentLines[i], "", "agent %q has no roles: only global rules apply to it", a.Name)
		}
		for _, r := range a.Roles {
			agentRole[r] = true
		}
	}

	for _, r := range p.rules {
		// Targets that do not exist.
		if len(r.targets) > 0 {
			found := false
			for i, g := range r.targets {
				n := 0
				for _, t := range p.targets {
					if g.match(t.Name) {
						n++
					}
				}
				if n == 0 {
					warn(r.line, r.id, "rule %s: target %q matches no defined target", r.id, r.targetSpec[i])
				}
				found = found || n > 0
			}
			if !found {
				warn(r.line, r.id, "rule %s can never match: none of its targets is defined", r.id)
			}
		}
		if r.approval != nil {
			for _, a := range r.approval.Approvers {
				if agentRole[a] {
					warn(r.line, r.id, "rule %s: approver role %q is also held by an agent; agents can never approve, so only humans with that role can", r.id, a)
				}
			}
		}
		if r.decision == VerdictBlock {
			continue
		}
		for _, b := range p.rules {
			if b.decision == VerdictBlock && p.shadows(b, r) {
				warn(r.line, r.id, "rule %s never takes effect: block rule %s (line %d) matches everything it matches, and block always wins", r.id, b.id, b.line)
				break
			}
		}
	}
	sort.SliceStable(ws, func(i, j int) bool { return ws[i].Line < ws[j].Line })
	return ws
}

// shadows reports whether block rule b matches every object r matches, for
// every agent r applies to. It is conservative: false when unsure.
func (p *Policy) shadows(b, r *rule) bool {
	// Scope: b applies to every agent r applies to.
	if b.role != "" {
		if r.role == "" {
			return false
		}
		if !contains(p.roles[p.roleIdx[r.role]].expanded, b.role) {
			return false
		}
	}
	// Conditions: b must not depend on attributes (unless r tests the same).
	if b.when != (conditions{rowsOver: -1}) && b.when != r.when {
		return false
	}
	// Targets.
	if len(b.targets) > 0 {
		if len(r.targets) == 0 {
			return false
		}
		for i := range r.targets {
			if !b.targets.covers(&r.targets[i]) {
				return false
			}
		}
	}
	// Actions and categories.
	if r.actions[0]&^b.actions[0] != 0 || r.actions[1]&^b.actions[1] != 0 || r.callCats&^b.callCats != 0 {
		return false
	}
	// Objects.
	if !b.hasSelector {
		return true
	}
	if !r.hasSelector {
		return false
	}
	return coversAll(b.tables, r.tables) && coversAll(b.schemas, r.schemas) &&
		coversAll(b.functions, r.functions) && coversAll(b.paths, r.paths) &&
		coversAll(b.settings, r.settings) && coversAll(b.databases, r.databases) &&
		r.categories&^b.categories == 0
}

func coversAll(b, r globList) bool {
	for i := range r {
		if !b.covers(&r[i]) {
			return false
		}
	}
	return true
}
