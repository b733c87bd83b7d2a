package policy

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

var ruleKeys = []string{
	"id", "targets", "actions",
	"tables", "schemas", "functions", "function_categories", "paths", "settings", "databases",
	"when", "decision", "message", "approval", "mask",
}

// rule parses one rule of a role (scope is the role name) or of the global
// list (scope ""). index is its position in that list, for the default id.
func (d *decoder) rule(n *yaml.Node, scope string, index int) *rule {
	n = d.resolve(n)
	r := &rule{role: scope, line: n.Line, maskBit: -1, when: conditions{rowsOver: -1}}
	if scope == "" {
		r.id = fmt.Sprintf("global#%d", index+1)
	} else {
		r.id = fmt.Sprintf("%s#%d", scope, index+1)
	}
	if idn := findKey(n, "id"); idn != nil && idn.Kind == yaml.ScalarNode && idn.Value != "" {
		r.id = idn.Value
	}
	what := "rule " + r.id
	errs := len(d.errs)
	var decisionNode, messageNode, approvalNode, maskNode, actionsNode *yaml.Node
	hasFunctions := false
	ok := d.mapping(n, what, ruleKeys, func(key string, v *yaml.Node) {
		switch key {
		case "id":
			if s, ok := d.str(v, what+": id"); ok && !ruleIDRE.MatchString(s) {
				d.errorf(v, "%s: id %q: use letters, digits and _ . : # / - (at most 128)", what, s)
			}
		case "targets":
			r.targetSpec, r.targets = d.patterns(v, what, "targets", 0, 0)
		case "actions":
			actionsNode = v
			names, nodes := d.strList(v, what+": actions")
			known := actionNames()
			for i, name := range names {
				set, cats, ok := expandAction(name)
				if !ok {
					msg := fmt.Sprintf("%s: unknown action %q", what, name)
					if s := suggest(name, known); s != "" {
						msg += fmt.Sprintf(" (did you mean %q?)", s)
					}
					d.errorf(nodes[i], "%s", msg)
					continue
				}
				r.actions[0] |= set[0]
				r.actions[1] |= set[1]
				r.callCats |= cats
			}
			if len(names) == 0 && len(d.errs) == errs {
				d.errorf(v, "%s: actions must not be empty", what)
			}
		case "tables":
			_, r.tables = d.patterns(v, what, "tables", '.', 2)
		case "schemas":
			_, r.schemas = d.patterns(v, what, "schemas", '.', 1)
		case "functions":
			hasFunctions = true
			_, r.functions = d.patterns(v, what, "functions", '.', 2)
		case "function_categories":
			hasFunctions = true
			names, nodes := d.strList(v, what+": function_categories")
			for i, name := range names {
				c, ok := ParseCategory(name)
				if !ok {
					d.errorf(nodes[i], "%s: unknown function category %q (one of %s)", what, name, categoryList())
					continue
				}
				r.categories.add(c)
			}
			r.callCats |= r.categories
		case "paths":
			_, r.paths = d.patterns(v, what, "paths", '/', 0)
		case "settings":
			_, r.settings = d.patterns(v, what, "settings", '.', 0)
		case "databases":
			_, r.databases = d.patterns(v, what, "databases", 0, 0)
		case "when":
			d.conditions(v, what, &r.when)
		case "decision":
			decisionNode = v
			if s, ok := d.oneOf(v, what+": decision", "allow", "block", "approve", "mask"); ok {
				r.decision, _ = ParseVerdict(s)
			}
		case "message":
			messageNode = v
			r.message, _ = d.str(v, what+": message")
		case "approval":
			approvalNode = v
		case "mask":
			maskNode = v
		}
	})
	if !ok {
		return nil
	}
	r.hasSelector = len(r.tables)+len(r.schemas)+len(r.functions)+len(r.paths)+len(r.settings)+len(r.databases) > 0 || r.categories != 0
	if actionsNode == nil {
		if hasFunctions {
			// A rule about functions is about calling them unless it says
			// otherwise (create, drop, …).
			r.actions.Add(ActionExecute)
			r.actions.Add(ActionCall)
		} else {
			d.errorf(n, "%s: actions is required (unless functions or function_categories is given)", what)
		}
	}
	if decisionNode == nil {
		d.errorf(n, "%s: decision is required (allow, block, approve or mask)", what)
		return nil
	}
	if messageNode != nil && r.decision != VerdictBlock {
		d.errorf(messageNode, "%s: message is only used with decision: block", what)
	}
	switch {
	case r.decision == VerdictApprove && approvalNode == nil:
		d.errorf(n, "%s: decision approve needs approval: {approvers: [...]}", what)
	case r.decision == VerdictApprove:
		r.approval = d.approval(approvalNode, what)
	case approvalNode != nil:
		d.errorf(approvalNode, "%s: approval is only used with decision: approve", what)
	}
	switch {
	case r.decision == VerdictMask && maskNode == nil:
		d.errorf(n, "%s: decision mask needs mask: {columns: ..., detectors: ...}", what)
	case r.decision == VerdictMask:
		r.mask = d.mask(maskNode, what, r.id)
	case maskNode != nil:
		d.errorf(maskNode, "%s: mask is only used with decision: mask", what)
	}
	if len(d.errs) > errs {
		return nil
	}
	return r
}

func findKey(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func categoryList() string {
	var names []string
	for c := FunctionCategory(1); c < categoryCount; c++ {
		names = append(names, c.String())
	}
	return strings.Join(names, ", ")
}

// patterns compiles a list of globs. segs > 0 requires that many
// '.'-separated segments (schema.table), so that an unqualified "orders",
// which would never match a qualified name, is caught as an error rather
// than silently making a block rule useless. "**" is always accepted.
func (d *decoder) patterns(n *yaml.Node, what, field string, sep byte, segs int) ([]string, globList) {
	list, nodes := d.strList(n, what+": "+field)
	var out globList
	for i, s := range list {
		g, err := compileGlob(s, sep)
		if err != nil {
			d.errorf(nodes[i], "%s: %s: %q: %v", what, field, s, err)
			continue
		}
		switch {
		case s == "**":
		case sep == '/' && !strings.HasPrefix(s, "/") && !strings.HasPrefix(s, "*"):
			d.errorf(nodes[i], "%s: %s: %q must start with '/'", what, field, s)
			continue
		case segs > 0 && len(splitUnescaped(s, '.')) != segs:
			if segs == 1 {
				d.errorf(nodes[i], "%s: %s: %q: a schema name has no '.'", what, field, s)
			} else {
				d.errorf(nodes[i], "%s: %s: %q must be schema-qualified, e.g. public.%s or *.%s", what, field, s, lastSegment(s), lastSegment(s))
			}
			continue
		}
		out = append(out, g)
	}
	return list, out
}

func lastSegment(s string) string {
	if i := strings.LastIndexByte(s, '.'); i >= 0 {
		return s[i+1:]
	}
	return s
}

var whenKeys = []string{"has_where", "in_transaction", "row_estimate_over"}

func (d *decoder) conditions(n *yaml.Node, what string, c *conditions) {
	what += ": when"
	d.mapping(n, what, whenKeys, func(key string, v *yaml.Node) {
		switch key {
		case "has_where":
			if b, ok := d.boolean(v, what+": has_where"); ok {
				c.hasWhere = tri(b)
			}
		case "in_transaction":
			if b, ok := d.boolean(v, what+": in_transaction"); ok {
				c.inTransaction = tri(b)
			}
		case "row_estimate_over":
			if rows, ok := d.integer(v, what+": row_estimate_over"); ok {
				if rows < 0 {
					d.errorf(v, "%s: row_estimate_over must not be negative", what)
					return
				}
				c.rowsOver = rows
			}
		}
	})
}

func tri(b bool) tristate {
	if b {
		return wantTrue
	}
	return wantFalse
}

var approvalKeys = []string{"approvers", "timeout", "in_transaction_timeout", "on_timeout_in_transaction"}

func (d *decoder) approval(n *yaml.Node, what string) *Approval {
	what += ": approval"
	a := &Approval{Timeout: DefaultApprovalTimeout}
	var inTx *yaml.Node
	d.mapping(n, what, approvalKeys, func(key string, v *yaml.Node) {
		switch key {
		case "approvers":
			names, nodes := d.strList(v, what+": approvers")
			for i, s := range names {
				if !nameRE.MatchString(s) {
					d.errorf(nodes[i], "%s: approver role %q: use letters, digits, '_', '.' and '-'", what, s)
					continue
				}
				a.Approvers = append(a.Approvers, s)
			}
		case "timeout":
			a.Timeout, _ = d.duration(v, what+": timeout")
		case "in_transaction_timeout":
			inTx = v
			a.InTransactionTimeout, _ = d.duration(v, what+": in_transaction_timeout")
		case "on_timeout_in_transaction":
			if s, ok := d.oneOf(v, what+": on_timeout_in_transaction", "abort", "terminate"); ok && s == "terminate" {
				a.OnTimeoutInTransaction = TxTerminate
			}
		}
	})
	if len(a.Approvers) == 0 {
		if an := findKey(d.resolve(n), "approvers"); an == nil {
			d.errorf(n, "%s: approvers is required (the human roles that may approve)", what)
		} else if an = d.resolve(an); an != nil && (isNull(an) || an.Kind == yaml.SequenceNode && len(an.Content) == 0) {
			d.errorf(an, "%s: approvers must not be empty", what)
		}
	}
	if a.InTransactionTimeout == 0 {
		a.InTransactionTimeout = min(DefaultInTransactionTimeout, a.Timeout)
	} else if a.Timeout > 0 && a.InTransactionTimeout > a.Timeout {
		d.errorf(inTx, "%s: in_transaction_timeout (%s) must not exceed timeout (%s)", what, a.InTransactionTimeout, a.Timeout)
	}
	return a
}

var maskKeys = []string{"columns", "detectors", "masker"}

func (d *decoder) mask(n *yaml.Node, what, id string) *Mask {
	what += ": mask"
	m := &Mask{RuleID: id, Masker: MaskerRedact}
	d.mapping(n, what, maskKeys, func(key string, v *yaml.Node) {
		switch key {
		case "columns":
			cols := d.resolve(v)
			if isNull(cols) {
				return
			}
			if cols.Kind != yaml.MappingNode {
				d.errorf(cols, "%s: columns must be a mapping of column pattern to masker, not %s", what, describe(cols))
				return
			}
			seen := map[string]bool{}
			for i := 0; i+1 < len(cols.Content); i += 2 {
				k := d.resolve(cols.Content[i])
				if k == nil || k.Kind != yaml.ScalarNode || k.Value == "" {
					d.errorf(cols.Content[i], "%s: column patterns must be non-empty strings", what)
					continue
				}
				if seen[k.Value] {
					d.errorf(k, "%s: column %q listed twice", what, k.Value)
					continue
				}
				seen[k.Value] = true
				if cm, ok := d.columnMask(k, cols.Content[i+1], what); ok {
					m.Columns = append(m.Columns, cm)
				}
			}
		case "detectors":
			names, nodes := d.strList(v, what+": detectors")
			for i, s := range names {
				det, ok := ParseDetector(s)
				if !ok {
					d.errorf(nodes[i], "%s: unknown detector %q (one of %s)", what, s, strings.Join(detectorNames[:], ", "))
					continue
				}
				m.Detectors = append(m.Detectors, det)
			}
		case "masker":
			if s, ok := d.str(v, what+": masker"); ok {
				if k, ok := ParseMasker(s); ok {
					m.Masker = k
				} else {
					d.errorf(v, "%s: unknown masker %q (redact, partial, hash or null)", what, s)
				}
			}
		}
	})
	if len(m.Columns) == 0 && len(m.Detectors) == 0 {
		d.errorf(n, "%s: give columns or detectors (or both)", what)
	}
	return m
}

func (d *decoder) columnMask(k, v *yaml.Node, what string) (ColumnMask, bool) {
	pattern := k.Value
	g, err := compileGlob(pattern, '.')
	if err != nil {
		d.errorf(k, "%s: column %q: %v", what, pattern, err)
		return ColumnMask{}, false
	}
	nseg := len(splitUnescaped(pattern, '.'))
	if nseg > 3 || strings.Contains(pattern, "..") || strings.HasPrefix(pattern, ".") || strings.HasSuffix(pattern, ".") {
		d.errorf(k, "%s: column %q: want column, table.column or schema.table.column", what, pattern)
		return ColumnMask{}, false
	}
	s, ok := d.str(v, what+": column "+pattern)
	if !ok {
		return ColumnMask{}, false
	}
	mk, ok := ParseMasker(s)
	if !ok {
		d.errorf(v, "%s: column %q: unknown masker %q (redact, partial, hash or null)", what, pattern, s)
		return ColumnMask{}, false
	}
	return ColumnMask{Pattern: pattern, Masker: mk, glob: g, nseg: nseg}, true
}
