package policy

import (
	"errors"
	"fmt"
	"os"

	"go.yaml.in/yaml/v3"
)

// Case is one entry of a policy test file (`interlock policy test`): an
// operation and the decision the operator expects for it.
type Case struct {
	Name   string
	Line   int
	Agent  string
	Target string
	Action Action
	// Objects default their Action to the case's action (execute for
	// functions) and their Category to CategoryOf(name) for functions,
	// as the PostgreSQL classifier would.
	Objects []Object
	Attrs   Attributes
	// SQL replaces Action and Objects when a classifier is available;
	// Attrs.HasWhere then comes from the classifier.
	SQL    string
	Expect Verdict
	Rule   string // expected deciding rule id, optional
}

// CaseResult is the outcome of one case.
type CaseResult struct {
	Case     *Case
	Decision Decision // for SQL cases, the most restrictive over the statements
	Pass     bool
	// Problem says why the case failed, or could not run.
	Problem string
}

// ErrNoClassifier is returned for SQL cases when no classifier is wired in.
var ErrNoClassifier = errors.New("SQL classification is not available in this build")

// Classifier turns SQL text into operations (one per statement); the
// PostgreSQL protocol package provides it.
type Classifier func(sql string) ([]Operation, error)

// LoadCases reads and parses a test file.
func LoadCases(filename string) ([]Case, error) {
	data, err := os.ReadFile(filename)
	if err != nil {
		return nil, fmt.Errorf("load policy cases: %w", err)
	}
	return ParseCases(filename, data)
}

var caseKeys = []string{"name", "agent", "target", "action", "objects", "attrs", "sql", "expect", "rule"}
var objectKeys = []string{"kind", "name", "action", "category"}
var attrKeys = []string{"has_where", "in_transaction", "row_estimate"}

// ParseCases parses a test file: a YAML list of cases. Errors are Errors
// with lines, like Parse's.
func ParseCases(filename string, data []byte) (cases []Case, err error) {
	d := &decoder{file: filename}
	defer func() {
		if r := recover(); r != nil {
			if r != errTooLarge {
				panic(r)
			}
			d.errorf(nil, "cases file too large")
			cases, err = nil, d.errs
		}
	}()
	root, err := d.parseDocument(data)
	if err != nil {
		return nil, err
	}
	names := map[string]int{}
	d.sequence(root, "cases", func(i int, v *yaml.Node) {
		v = d.resolve(v)
		c := Case{Line: v.Line, Attrs: Attributes{RowEstimate: -1}}
		what := fmt.Sprintf("case #%d", i+1)
		if nn := nameField(v); nn != nil && nn.Kind == yaml.ScalarNode && nn.Value != "" {
			what = fmt.Sprintf("case %q", nn.Value)
		}
		var objects, expect *yaml.Node
		hasAction := false
		ok := d.mapping(v, what, caseKeys, func(key string, f *yaml.Node) {
			switch key {
			case "name":
				c.Name, _ = d.str(f, what+": name")
			case "agent":
				c.Agent, _ = d.str(f, what+": agent")
			case "target":
				c.Target, _ = d.str(f, what+": target")
			case "action":
				hasAction = true
				if s, ok := d.str(f, what+": action"); ok {
					if a, ok := ParseAction(s); ok {
						c.Action = a
					} else {
						d.errorf(f, "%s: unknown action %q", what, s)
					}
				}
			case "objects":
				objects = f
			case "attrs":
				d.caseAttrs(f, what, &c.Attrs)
			case "sql":
				c.SQL, _ = d.str(f, what+": sql")
			case "expect":
				expect = f
				if s, ok := d.oneOf(f, what+": expect", "allow", "block", "approve", "mask"); ok {
					c.Expect, _ = ParseVerdict(s)
				}
			case "rule":
				c.Rule, _ = d.str(f, what+": rule")
			}
		})
		if !ok {
			return
		}
		d.sequence(objects, what+": objects", func(_ int, o *yaml.Node) {
			if obj, ok := d.caseObject(o, what, c.Action); ok {
				c.Objects = append(c.Objects, obj)
			}
		})
		for _, req := range []struct {
			ok   bool
			name string
		}{{c.Name != "" || hasKey(v, "name"), "name"}, {c.Agent != "" || hasKey(v, "agent"), "agent"}, {c.Target != "" || hasKey(v, "target"), "target"}, {expect != nil, "expect"}} {
			if !req.ok {
				d.errorf(v, "%s: %s is required", what, req.name)
			}
		}
		switch {
		case c.SQL != "" && (hasAction || objects != nil):
			d.errorf(v, "%s: give either sql or action/objects, not both", what)
		case c.SQL == "" && !hasAction:
			d.errorf(v, "%s: action (or sql) is required", what)
		}
		if c.Name != "" {
			if line, dup := names[c.Name]; dup {
				d.errorf(v, "%s: name already used at line %d", what, line)
			}
			names[c.Name] = c.Line
		}
		cases = append(cases, c)
	})
	if len(d.errs) > 0 {
		d.errs.sort()
		return nil, d.errs
	}
	return cases, nil
}

func (d *decoder) caseObject(n *yaml.Node, what string, action Action) (Object, bool) {
	what += ": object"
	o := Object{Action: action}
	setAction, setCategory := false, false
	errs := len(d.errs)
	d.mapping(n, what, objectKeys, func(key string, v *yaml.Node) {
		switch key {
		case "kind":
			if s, ok := d.str(v, what+": kind"); ok {
				if k, ok := ParseKind(s); ok {
					o.Kind = k
				} else {
					d.errorf(v, "%s: unknown kind %q (table, schema, function, database, role, path, setting, other)", what, s)
				}
			}
		case "name":
			o.Name, _ = d.str(v, what+": name")
		case "action":
			setAction = true
			if s, ok := d.str(v, what+": action"); ok {
				if a, ok := ParseAction(s); ok {
					o.Action = a
				} else {
					d.errorf(v, "%s: unknown action %q", what, s)
				}
			}
		case "category":
			setCategory = true
			if s, ok := d.str(v, what+": category"); ok {
				if c, ok := ParseCategory(s); ok || s == "none" {
					o.Category = c
				} else {
					d.errorf(v, "%s: unknown category %q", what, s)
				}
			}
		}
	})
	if o.Kind == 0 && len(d.errs) == errs {
		d.errorf(n, "%s: kind is required", what)
	}
	if o.Kind == KindFunction {
		if !setAction {
			o.Action = ActionExecute
		}
		if !setCategory {
			o.Category = CategoryOf(o.Name)
		}
	}
	return o, len(d.errs) == errs
}

func (d *decoder) caseAttrs(n *yaml.Node, what string, a *Attributes) {
	what += ": attrs"
	d.mapping(n, what, attrKeys, func(key string, v *yaml.Node) {
		switch key {
		case "has_where":
			a.HasWhere, _ = d.boolean(v, what+": has_where")
		case "in_transaction":
			a.InTransaction, _ = d.boolean(v, what+": in_transaction")
		case "row_estimate":
			a.RowEstimate, _ = d.integer(v, what+": row_estimate")
		}
	})
}

// Operation builds the operation a protocol layer would send for a non-SQL
// case.
func (c *Case) Operation(p *Policy) Operation {
	op := Operation{
		Agent:   c.Agent,
		Roles:   p.AgentRoles(c.Agent),
		Target:  c.Target,
		Action:  c.Action,
		Objects: c.Objects,
		Attrs:   c.Attrs,
	}
	if t, ok := p.Target(c.Target); ok {
		op.Protocol = t.Protocol
	}
	return op
}

// RunCase evaluates one case. classify may be nil; SQL cases then fail with
// ErrNoClassifier's message.
func (p *Policy) RunCase(c *Case, classify Classifier) CaseResult {
	res := CaseResult{Case: c}
	if _, ok := p.Agent(c.Agent); !ok {
		res.Problem = fmt.Sprintf("agent %q is not defined in the policy", c.Agent)
		return res
	}
	if c.SQL != "" {
		if classify == nil {
			res.Problem = ErrNoClassifier.Error()
			return res
		}
		ops, err := classify(c.SQL)
		if err != nil {
			res.Problem = fmt.Sprintf("classify: %v", err)
			return res
		}
		if len(ops) == 0 {
			res.Problem = "classifier returned no statements"
			return res
		}
		// A multi-statement query is judged by its most restrictive
		// statement, the one an operator has to think about.
		for i := range ops {
			op := ops[i]
			op.Agent, op.Target = c.Agent, c.Target
			op.Roles = p.AgentRoles(c.Agent)
			// The classifier knows has_where; the session state and the
			// planner estimate come from the case.
			op.Attrs.InTransaction = op.Attrs.InTransaction || c.Attrs.InTransaction
			if c.Attrs.RowEstimate >= 0 {
				op.Attrs.RowEstimate = c.Attrs.RowEstimate
			}
			if t, ok := p.Target(c.Target); ok {
				op.Protocol = t.Protocol
			}
			dec := p.Decide(&op)
			if i == 0 || dec.Verdict.rank() > res.Decision.Verdict.rank() {
				res.Decision = dec
			}
		}
	} else {
		op := c.Operation(p)
		res.Decision = p.Decide(&op)
	}
	switch {
	case res.Decision.Verdict != c.Expect:
		res.Problem = fmt.Sprintf("expected %s, got %s (%s)", c.Expect, res.Decision.Verdict, res.Decision.Reason())
	case c.Rule != "" && res.Decision.RuleID != c.Rule:
		res.Problem = fmt.Sprintf("expected rule %s, got %s", c.Rule, res.Decision.RuleID)
	default:
		res.Pass = true
	}
	return res
}
