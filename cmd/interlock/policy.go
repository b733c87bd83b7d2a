package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/interlockhq/interlock/engine/policy"
)

// policyOptions is what the policy subcommands take from the build rather
// than from flags.
type policyOptions struct {
	// sqlClassifier turns SQL text into one operation per statement. It is
	// nil until the PostgreSQL classifier is wired in; --sql and sql: cases
	// then fail with policy.ErrNoClassifier.
	sqlClassifier func(sql string) ([]policy.Operation, error)
}

// Exit codes of the policy subcommands: 1 when the policy is invalid or a
// test case fails, 2 when the command could not do its job (unreadable
// file, bad flags, no classifier).
const (
	policyExitFailed   = 1
	policyExitCannotDo = 2
)

func newPolicyCmdWith(opts policyOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Check, explain and test policy files",
		Long: `The policy commands work on a policy file alone; they need no daemon and no privileges.
See docs/policy.md for the file format.`,
	}
	cmd.AddCommand(newPolicyCheckCmd(), newPolicyExplainCmd(opts), newPolicyTestCmd(opts))
	return cmd
}

func newPolicyCheckCmd() *cobra.Command {
	var strict bool
	cmd := &cobra.Command{
		Use:   "check FILE",
		Short: "Validate a policy file and warn about rules that can never take effect",
		Long: `Check parses FILE and prints every error as file:line: message (exit status 1), then
the warnings of the linter: rules that can never match or are shadowed by a block rule,
roles no agent holds. Warnings alone exit 0 unless --strict is given.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			p, err := loadPolicyFile(out, args[0])
			if err != nil {
				return err
			}
			warnings := p.Lint()
			for _, w := range warnings {
				fmt.Fprintln(out, w)
			}
			fmt.Fprintf(out, "%s: ok: %d targets, %d agents, %d rules, %d warnings\n",
				args[0], len(p.Targets()), len(p.Agents()), p.RuleCount(), len(warnings))
			if strict && len(warnings) > 0 {
				return &exitError{code: policyExitFailed}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&strict, "strict", false, "exit 1 on warnings too")
	return cmd
}

// loadPolicyFile loads a policy, printing its errors one per line. The
// returned error is an exitError whose message, if any, main prints.
func loadPolicyFile(out io.Writer, path string) (*policy.Policy, error) {
	p, err := policy.Load(path)
	if err == nil {
		if err := checkKernelIDs(p); err != nil {
			fmt.Fprintf(out, "%s: %v\n", path, err)
			return nil, &exitError{code: policyExitFailed, err: fmt.Errorf("%s: 1 error", path)}
		}
		return p, nil
	}
	var list policy.Errors
	if errors.As(err, &list) {
		for _, e := range list {
			fmt.Fprintln(out, e)
		}
		return nil, &exitError{code: policyExitFailed, err: fmt.Errorf("%s: %d errors", path, len(list))}
	}
	return nil, &exitError{code: policyExitCannotDo, err: err}
}

// explainFlags describe one operation on the command line.
type explainFlags struct {
	agent, target, action, sql string
	roles                      []string
	tables, schemas, functions []string
	paths, settings, databases []string
	objects                    []string
	where, inTx                bool
	rows                       int64
}

func newPolicyExplainCmd(opts policyOptions) *cobra.Command {
	var f explainFlags
	cmd := &cobra.Command{
		Use:   "explain FILE --agent A --target T (--action ACTION [objects…] | --sql SQL)",
		Short: "Show the decision for one operation and every rule that matched",
		Long: `Explain evaluates one operation against FILE and prints the operation, the rules that
matched each object, the decision and the deciding rule.

Objects take their action from --action, except functions, which default to execute
(a call). --object kind:name[:action] names any object kind with its own action, e.g.
--object table:public.audit:select. Function categories are derived from the name,
as the PostgreSQL classifier does.`,
		Example: `  interlock policy explain policy.yaml --agent writer --target orders-db --action delete --table public.orders --where
  interlock policy explain policy.yaml --agent analyst --target orders-db --action select --function pg_catalog.pg_read_file`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			p, err := loadPolicyFile(out, args[0])
			if err != nil {
				return err
			}
			ops, err := f.operations(p, cmd, opts)
			if err != nil {
				return &exitError{code: policyExitCannotDo, err: err}
			}
			for i := range ops {
				if i > 0 {
					fmt.Fprintln(out)
				}
				printExplanation(out, p, &ops[i], cmd.Flags().Changed("roles"))
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.agent, "agent", "", "agent name (required)")
	fl.StringVar(&f.target, "target", "", "target name (required)")
	fl.StringSliceVar(&f.roles, "roles", nil, "evaluate with these roles instead of the agent's (comma-separated, not expanded)")
	fl.StringVar(&f.action, "action", "", "statement action: select, insert, delete, drop, copy_to_program, GET, …")
	fl.StringVar(&f.sql, "sql", "", "classify this SQL instead of giving --action and objects")
	fl.StringArrayVar(&f.tables, "table", nil, "table object, schema-qualified (repeatable)")
	fl.StringArrayVar(&f.schemas, "schema", nil, "schema object (repeatable)")
	fl.StringArrayVar(&f.functions, "function", nil, "function object, schema-qualified, called (repeatable)")
	fl.StringArrayVar(&f.paths, "path", nil, "path object (repeatable)")
	fl.StringArrayVar(&f.settings, "setting", nil, "setting object (repeatable)")
	fl.StringArrayVar(&f.databases, "database", nil, "database object (repeatable)")
	fl.StringArrayVar(&f.objects, "object", nil, "object as kind:name[:action] (repeatable)")
	fl.BoolVar(&f.where, "where", false, "the statement has a WHERE clause")
	fl.BoolVar(&f.inTx, "in-transaction", false, "the session is inside a transaction block")
	fl.Int64Var(&f.rows, "rows", -1, "planner row estimate (-1: unknown)")
	_ = cmd.MarkFlagRequired("agent")
	_ = cmd.MarkFlagRequired("target")
	return cmd
}

// operations builds the operations to explain from the flags.
func (f *explainFlags) operations(p *policy.Policy, cmd *cobra.Command, opts policyOptions) ([]policy.Operation, error) {
	roles := p.AgentRoles(f.agent)
	if cmd.Flags().Changed("roles") {
		roles = append([]string{}, f.roles...)
	}
	protocol := ""
	if t, ok := p.Target(f.target); ok {
		protocol = t.Protocol
	}
	attrs := policy.Attributes{HasWhere: f.where, InTransaction: f.inTx, RowEstimate: f.rows}
	objectFlags := len(f.tables) + len(f.schemas) + len(f.functions) + len(f.paths) + len(f.settings) + len(f.databases) + len(f.objects)

	if f.sql != "" {
		if f.action != "" || objectFlags > 0 {
			return nil, errors.New("give either --sql or --action with objects, not both")
		}
		if opts.sqlClassifier == nil {
			return nil, policy.ErrNoClassifier
		}
		ops, err := opts.sqlClassifier(f.sql)
		if err != nil {
			return nil, fmt.Errorf("classify SQL: %w", err)
		}
		for i := range ops {
			ops[i].Agent, ops[i].Roles, ops[i].Target, ops[i].Protocol = f.agent, roles, f.target, protocol
			ops[i].Attrs.InTransaction = ops[i].Attrs.InTransaction || f.inTx
			if cmd.Flags().Changed("rows") {
				ops[i].Attrs.RowEstimate = f.rows
			}
		}
		return ops, nil
	}

	if f.action == "" {
		return nil, errors.New("give --action (or --sql)")
	}
	action, ok := policy.ParseAction(f.action)
	if !ok {
		return nil, fmt.Errorf("unknown action %q", f.action)
	}
	op := policy.Operation{Agent: f.agent, Roles: roles, Target: f.target, Protocol: protocol, Action: action, Attrs: attrs}
	add := func(kind policy.ObjectKind, names []string) {
		for _, n := range names {
			op.Objects = append(op.Objects, newObject(kind, n, action, false))
		}
	}
	add(policy.KindTable, f.tables)
	add(policy.KindSchema, f.schemas)
	add(policy.KindFunction, f.functions)
	add(policy.KindPath, f.paths)
	add(policy.KindSetting, f.settings)
	add(policy.KindDatabase, f.databases)
	for _, spec := range f.objects {
		o, err := parseObjectSpec(spec, action)
		if err != nil {
			return nil, err
		}
		op.Objects = append(op.Objects, o)
	}
	return []policy.Operation{op}, nil
}

// newObject builds an object the way the PostgreSQL classifier would: a
// function is called (execute) unless an action is given, and carries the
// category of its name.
func newObject(kind policy.ObjectKind, name string, action policy.Action, explicit bool) policy.Object {
	o := policy.Object{Kind: kind, Name: name, Action: action}
	if kind == policy.KindFunction {
		if !explicit {
			o.Action = policy.ActionExecute
		}
		o.Category = policy.CategoryOf(name)
	}
	return o
}

// parseObjectSpec parses kind:name[:action]. The action is recognised only
// if it is a vocabulary word, so names containing ':' still work.
func parseObjectSpec(spec string, action policy.Action) (policy.Object, error) {
	kindName, rest, ok := strings.Cut(spec, ":")
	if !ok || rest == "" {
		return policy.Object{}, fmt.Errorf("--object %q: want kind:name[:action]", spec)
	}
	kind, ok := policy.ParseKind(kindName)
	if !ok {
		return policy.Object{}, fmt.Errorf("--object %q: unknown kind %q", spec, kindName)
	}
	if i := strings.LastIndexByte(rest, ':'); i > 0 {
		if a, ok := policy.ParseAction(rest[i+1:]); ok {
			return newObject(kind, rest[:i], a, true), nil
		}
	}
	return newObject(kind, rest, action, false), nil
}

func printExplanation(out io.Writer, p *policy.Policy, op *policy.Operation, rolesGiven bool) {
	ex := p.Explain(op)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "operation")
	agentNote := ""
	if _, ok := p.Agent(op.Agent); !ok {
		agentNote = " (not defined in the policy)"
	}
	roleNote := ""
	if rolesGiven {
		roleNote = ", given with --roles"
	}
	fmt.Fprintf(w, "  agent:\t%s%s (roles: %s%s)\n", op.Agent, agentNote, listOrNone(ex.Roles), roleNote)
	if t, ok := p.Target(op.Target); ok {
		fmt.Fprintf(w, "  target:\t%s (%s %s)\n", t.Name, t.Protocol, t.Address)
	} else {
		fmt.Fprintf(w, "  target:\t%s (not defined in the policy)\n", op.Target)
	}
	fmt.Fprintf(w, "  action:\t%s\n", op.Action)
	for i, o := range op.Objects {
		label := ""
		if i == 0 {
			label = "objects:"
		}
		fmt.Fprintf(w, "  %s\t%s\n", label, describeObject(o))
	}
	rows := "unknown"
	if op.Attrs.RowEstimate >= 0 {
		rows = strconv.FormatInt(op.Attrs.RowEstimate, 10)
	}
	fmt.Fprintf(w, "  attrs:\thas_where=%t in_transaction=%t row_estimate=%s\n", op.Attrs.HasWhere, op.Attrs.InTransaction, rows)
	if op.Unclassified {
		fmt.Fprintf(w, "  unclassified:\t%s\n", op.Reason)
	}
	w.Flush()

	if len(ex.Objects) > 0 {
		fmt.Fprintln(out, "matches")
		for _, t := range ex.Objects {
			switch {
			case t.Statement:
				fmt.Fprintf(out, "  statement (%s)", t.Object.Action)
				if len(op.Objects) > 0 && (len(t.Matches) > 0 || !t.Covered) {
					fmt.Fprint(out, ", checked against block and approve rules without object selectors")
				}
			default:
				fmt.Fprintf(out, "  %s", describeObject(t.Object))
			}
			switch {
			case t.Implicit:
				fmt.Fprintln(out, ": built-in function, covered without a rule")
			case len(t.Matches) == 0:
				fmt.Fprintln(out, ": no rule")
			default:
				fmt.Fprintln(out)
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			for _, m := range t.Matches {
				fmt.Fprintf(tw, "    %s\t%s\t%s:%d\n", m.Decision, m.ID, m.File, m.Line)
			}
			tw.Flush()
		}
	}

	d := ex.Decision
	w = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "decision:\t%s\n", d.Verdict)
	if info, ok := p.Rule(d.RuleID); ok {
		fmt.Fprintf(w, "rule:\t%s (%s:%d)\n", d.RuleID, info.File, info.Line)
	} else {
		fmt.Fprintf(w, "rule:\t%s (built in)\n", d.RuleID)
	}
	fmt.Fprintf(w, "reason:\t%s\n", d.Reason())
	if a := d.Approval; a != nil {
		fmt.Fprintf(w, "approval:\tapprovers=%s timeout=%s in_transaction_timeout=%s on_timeout_in_transaction=%s\n",
			strings.Join(a.Approvers, ","), a.Timeout, a.InTransactionTimeout, a.OnTimeoutInTransaction)
	}
	if m := d.Mask(); m != nil {
		fmt.Fprintf(w, "mask:\trules %s\n", strings.Join(m.RuleIDs, ", "))
		for _, c := range m.Columns {
			fmt.Fprintf(w, "\tcolumn %s: %s\n", c.Pattern, c.Masker)
		}
		var dets []string
		for i, k := range m.Detectors {
			if k != policy.MaskerNone {
				dets = append(dets, fmt.Sprintf("%s=%s", policy.Detector(i), k))
			}
		}
		if len(dets) > 0 {
			fmt.Fprintf(w, "\tdetectors: %s\n", strings.Join(dets, " "))
		}
	}
	w.Flush()
}

func describeObject(o policy.Object) string {
	s := fmt.Sprintf("%s %s (%s)", o.Kind, o.Name, o.Action)
	if o.Category != policy.CategoryNone {
		s += " [" + o.Category.String() + "]"
	}
	return s
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

func newPolicyTestCmd(opts policyOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "test FILE CASES.yaml",
		Short: "Check a policy against a table of operations and expected decisions",
		Long: `Test evaluates every case of CASES.yaml against FILE and prints one line per case.
It exits 1 if any case fails, so operators can run it in CI next to their policy.

A case names an agent, a target, an action with objects (or sql:) and the expected
decision (allow, block, approve, mask), optionally the deciding rule id. See
deploy/examples/policy-cases.yaml and docs/policy.md.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			p, err := loadPolicyFile(out, args[0])
			if err != nil {
				return err
			}
			cases, err := policy.LoadCases(args[1])
			if err != nil {
				var list policy.Errors
				if errors.As(err, &list) {
					for _, e := range list {
						fmt.Fprintln(out, e)
					}
					return &exitError{code: policyExitFailed, err: fmt.Errorf("%s: %d errors", args[1], len(list))}
				}
				return &exitError{code: policyExitCannotDo, err: err}
			}
			failed := runPolicyCases(out, p, args[1], cases, opts.sqlClassifier)
			if failed > 0 {
				return &exitError{code: policyExitFailed}
			}
			return nil
		},
	}
	return cmd
}

// runPolicyCases prints the result table and returns the number of failed
// cases.
func runPolicyCases(out io.Writer, p *policy.Policy, file string, cases []policy.Case, classify policy.Classifier) int {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "RESULT\tCASE\tEXPECT\tGOT\tRULE")
	var problems []string
	failed := 0
	for i := range cases {
		c := &cases[i]
		res := p.RunCase(c, classify)
		status, got, rule := "ok", res.Decision.Verdict.String(), res.Decision.RuleID
		if !res.Pass {
			status = "FAIL"
			failed++
			problems = append(problems, fmt.Sprintf("%s:%d: %s: %s", file, c.Line, c.Name, res.Problem))
		}
		if rule == "" {
			got, rule = "-", "-"
		}
		expect := c.Expect.String()
		if c.Rule != "" {
			expect += " (" + c.Rule + ")"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", status, c.Name, expect, got, rule)
	}
	w.Flush()
	for _, pr := range problems {
		fmt.Fprintln(out, pr)
	}
	fmt.Fprintf(out, "%d cases: %d passed, %d failed\n", len(cases), len(cases)-failed, failed)
	return failed
}
