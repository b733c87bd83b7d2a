package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/interlockhq/interlock/engine/policy"
	"github.com/interlockhq/interlock/protocols/postgres"
)

var (
	examplePolicy = filepath.Join("..", "..", "deploy", "examples", "policy.yaml")
	exampleCases  = filepath.Join("..", "..", "deploy", "examples", "policy-cases.yaml")
)

// runPolicyCmd runs `policy args…` and returns its output and exit code as
// main would compute it.
func runPolicyCmd(t *testing.T, opts policyOptions, args ...string) (string, int, error) {
	t.Helper()
	cmd := newPolicyCmdWith(opts)
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	err := cmd.Execute()
	code := 0
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case err != nil:
		code = 1
	}
	return out.String(), code, err
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPolicyExampleCases runs the shipped example through `policy test`,
// with the PostgreSQL classifier for its sql: cases, as main wires it.
func TestPolicyExampleCases(t *testing.T) {
	opts := policyOptions{sqlClassifier: sqlOperations(postgres.NewClassifier(16))}
	out, code, err := runPolicyCmd(t, opts, "test", examplePolicy, exampleCases)
	if code != 0 {
		t.Fatalf("policy test: exit %d, %v\n%s", code, err, out)
	}
	if !strings.Contains(out, "failed") || strings.Contains(out, "FAIL ") || !strings.Contains(out, " 0 failed") {
		t.Errorf("output:\n%s", out)
	}
}

func TestPolicyCheck(t *testing.T) {
	out, code, _ := runPolicyCmd(t, policyOptions{}, "check", examplePolicy)
	if code != 0 || !strings.Contains(out, "ok: 2 targets, 2 agents") || !strings.Contains(out, "0 warnings") {
		t.Errorf("check example: exit %d\n%s", code, out)
	}

	bad := writeTemp(t, "bad.yaml", `version: 1
agents:
  - {name: a, roles: [ghost]}
rules:
  - {id: r1, actions: [selct], decision: allow}
  - {id: r2, actions: [read], decision: allow, colour: red}
`)
	out, code, err := runPolicyCmd(t, policyOptions{}, "check", bad)
	want := bad + `:3: agent "a": unknown role "ghost"
` + bad + `:5: rule r1: unknown action "selct" (did you mean "select"?)
` + bad + `:6: unknown key "colour" in rule r2
`
	if code != 1 || out != want {
		t.Errorf("check broken: exit %d (%v)\n%s\nwant:\n%s", code, err, out, want)
	}

	warn := writeTemp(t, "warn.yaml", `version: 1
targets: [{name: db, protocol: tcp, address: "127.0.0.1:1"}]
agents: [{name: a}]
`)
	out, code, _ = runPolicyCmd(t, policyOptions{}, "check", warn)
	if code != 0 || !strings.Contains(out, warn+`:3: warning: agent "a" has no roles`) {
		t.Errorf("check warnings: exit %d\n%s", code, out)
	}
	if _, code, _ = runPolicyCmd(t, policyOptions{}, "check", "--strict", warn); code != 1 {
		t.Errorf("check --strict with warnings: exit %d", code)
	}
	if _, code, _ = runPolicyCmd(t, policyOptions{}, "check", filepath.Join(t.TempDir(), "missing.yaml")); code != 2 {
		t.Errorf("check missing file: exit %d", code)
	}
}

func TestPolicyTestFailures(t *testing.T) {
	cases := writeTemp(t, "cases.yaml", `
- name: wrong expectation
  agent: analyst
  target: orders-db
  action: select
  objects: [{kind: table, name: public.orders}]
  expect: block
- name: right
  agent: analyst
  target: orders-db
  action: drop
  objects: [{kind: table, name: public.orders}]
  expect: block
  rule: no-destruction
- name: needs sql
  agent: analyst
  target: orders-db
  sql: SELECT 1
  expect: allow
`)
	out, code, _ := runPolicyCmd(t, policyOptions{}, "test", examplePolicy, cases)
	for _, want := range []string{
		"FAIL    wrong expectation  block                   allow  read-public",
		"ok      right              block (no-destruction)  block  no-destruction",
		"FAIL    needs sql          allow                   -      -",
		cases + ":2: wrong expectation: expected block, got allow (allow by rule read-public)",
		cases + ":15: needs sql: SQL classification is not available in this build",
		"3 cases: 1 passed, 2 failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}

	// With a classifier wired in, sql: cases run.
	opts := policyOptions{sqlClassifier: func(sql string) ([]policy.Operation, error) {
		return []policy.Operation{{Action: policy.ActionSelect, Objects: []policy.Object{{Kind: policy.KindTable, Name: "public.orders", Action: policy.ActionSelect}}, Attrs: policy.Attributes{RowEstimate: -1}}}, nil
	}}
	out, _, _ = runPolicyCmd(t, opts, "test", examplePolicy, cases)
	if !strings.Contains(out, "ok      needs sql") {
		t.Errorf("sql case with classifier:\n%s", out)
	}

	badCases := writeTemp(t, "bad-cases.yaml", "- name: x\n  agent: a\n")
	out, code, _ = runPolicyCmd(t, policyOptions{}, "test", examplePolicy, badCases)
	if code != 1 || !strings.Contains(out, badCases+":1: case \"x\": target is required") {
		t.Errorf("bad cases file: exit %d\n%s", code, out)
	}
}

func TestPolicyExplain(t *testing.T) {
	out, code, err := runPolicyCmd(t, policyOptions{}, "explain", examplePolicy,
		"--agent", "writer", "--target", "orders-db", "--action", "delete",
		"--table", "public.orders", "--object", "table:public.customers:select", "--where")
	if code != 0 {
		t.Fatalf("exit %d: %v\n%s", code, err, out)
	}
	for _, want := range []string{
		"agent:    writer (roles: writer, reader)",
		"objects:  table public.orders (delete)",
		"table public.customers (select)",
		"approve  writer-delete-approval",
		"mask   mask-customers",
		"decision:  approve",
		"rule:      writer-delete-approval (" + examplePolicy + ":",
		"approval:  approvers=dba timeout=2m0s in_transaction_timeout=15s on_timeout_in_transaction=abort",
		"column public.customers.email: partial",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	out, _, _ = runPolicyCmd(t, policyOptions{}, "explain", examplePolicy,
		"--agent", "analyst", "--target", "orders-db", "--action", "select", "--function", "pg_catalog.lower", "--function", "pg_catalog.pg_read_file")
	for _, want := range []string{
		"function pg_catalog.lower (execute): built-in function, covered without a rule",
		"function pg_catalog.pg_read_file (execute) [server_files]",
		"decision:  block",
		"reason:    block by rule no-server-files (execute on function pg_catalog.pg_read_file)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// --roles overrides the agent's roles.
	out, _, _ = runPolicyCmd(t, policyOptions{}, "explain", examplePolicy,
		"--agent", "analyst", "--roles", "writer", "--target", "orders-db", "--action", "insert", "--table", "public.orders")
	if !strings.Contains(out, "decision:  allow") || !strings.Contains(out, "given with --roles") {
		t.Errorf("--roles:\n%s", out)
	}

	// --sql without a classifier.
	_, code, err = runPolicyCmd(t, policyOptions{}, "explain", examplePolicy, "--agent", "analyst", "--target", "orders-db", "--sql", "SELECT 1")
	if code != 2 || !errors.Is(err, policy.ErrNoClassifier) {
		t.Errorf("--sql without classifier: exit %d, %v", code, err)
	}
	// --sql with one: each statement is explained.
	opts := policyOptions{sqlClassifier: func(sql string) ([]policy.Operation, error) {
		return []policy.Operation{{Action: policy.ActionBegin}, {Action: policy.ActionTruncate, Objects: []policy.Object{{Kind: policy.KindTable, Name: "public.orders", Action: policy.ActionTruncate}}}}, nil
	}}
	out, code, _ = runPolicyCmd(t, opts, "explain", examplePolicy, "--agent", "analyst", "--target", "orders-db", "--sql", "BEGIN; TRUNCATE orders")
	if code != 0 || strings.Count(out, "decision:") != 2 || !strings.Contains(out, "no-destruction") {
		t.Errorf("--sql with classifier: exit %d\n%s", code, out)
	}

	for _, args := range [][]string{
		{"--agent", "a", "--target", "t"},
		{"--agent", "a", "--target", "t", "--action", "selekt"},
		{"--agent", "a", "--target", "t", "--action", "select", "--sql", "SELECT 1"},
		{"--agent", "a", "--target", "t", "--action", "select", "--object", "tabel:x"},
		{"--agent", "a", "--target", "t", "--action", "select", "--object", "table"},
	} {
		if _, code, err := runPolicyCmd(t, policyOptions{}, append([]string{"explain", examplePolicy}, args...)...); code != 2 {
			t.Errorf("explain %v: exit %d (%v), want 2", args, code, err)
		}
	}
}

func TestParseObjectSpec(t *testing.T) {
	for spec, want := range map[string]policy.Object{
		"table:public.t":                 {Kind: policy.KindTable, Name: "public.t", Action: policy.ActionDelete},
		"table:public.t:select":          {Kind: policy.KindTable, Name: "public.t", Action: policy.ActionSelect},
		"function:pg_catalog.lo_import":  {Kind: policy.KindFunction, Name: "pg_catalog.lo_import", Action: policy.ActionExecute, Category: policy.CategoryLargeObject},
		"function:public.f:drop":         {Kind: policy.KindFunction, Name: "public.f", Action: policy.ActionDrop},
		"other:channel:jobs":             {Kind: policy.KindOther, Name: "channel:jobs", Action: policy.ActionDelete},
		"other:program:cat /etc/passwd:": {Kind: policy.KindOther, Name: "program:cat /etc/passwd:", Action: policy.ActionDelete},
	} {
		got, err := parseObjectSpec(spec, policy.ActionDelete)
		if err != nil || got != want {
			t.Errorf("parseObjectSpec(%q) = %+v, %v; want %+v", spec, got, err, want)
		}
	}
}
