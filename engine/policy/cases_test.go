package policy

import (
	"errors"
	"strings"
	"testing"
)

func TestParseCases(t *testing.T) {
	cases, err := ParseCases("c.yaml", []byte(`
- name: one
  agent: a
  target: db
  action: select
  objects:
    - {kind: table, name: public.t}
    - {kind: function, name: pg_catalog.pg_read_file}
    - {kind: table, name: public.u, action: update}
  attrs: {has_where: true, in_transaction: true, row_estimate: 7}
  expect: block
  rule: r
- name: two
  agent: a
  target: db
  sql: SELECT 1
  expect: allow
`))
	if err != nil {
		t.Fatal(err)
	}
	c := cases[0]
	if c.Line != 2 || c.Action != ActionSelect || len(c.Objects) != 3 || c.Expect != VerdictBlock || c.Rule != "r" ||
		c.Attrs != (Attributes{HasWhere: true, InTransaction: true, RowEstimate: 7}) {
		t.Errorf("case = %+v", c)
	}
	if o := c.Objects[1]; o.Action != ActionExecute || o.Category != CategoryServerFiles {
		t.Errorf("function object = %+v", o)
	}
	if o := c.Objects[2]; o.Action != ActionUpdate {
		t.Errorf("object action = %+v", o)
	}
	if cases[1].SQL != "SELECT 1" || cases[1].Attrs.RowEstimate != -1 {
		t.Errorf("sql case = %+v", cases[1])
	}

	_, err = ParseCases("c.yaml", []byte(`
- name: bad
  agent: a
  action: selekt
  objects: [{kind: tabel, name: x}]
  expect: maybe
  extra: 1
- name: bad
  agent: a
  target: db
  sql: SELECT 1
  action: select
  expect: allow
`))
	var list Errors
	if !errors.As(err, &list) {
		t.Fatalf("error %v", err)
	}
	want := []string{
		`c.yaml:2: case "bad": target is required`,
		`c.yaml:4: case "bad": unknown action "selekt"`,
		`c.yaml:5: case "bad": object: unknown kind "tabel" (table, schema, function, database, role, path, setting, other)`,
		`c.yaml:6: case "bad": expect must be one of allow, block, approve, mask, not "maybe"`,
		`c.yaml:7: unknown key "extra" in case "bad"`,
		`c.yaml:8: case "bad": give either sql or action/objects, not both`,
		`c.yaml:8: case "bad": name already used at line 2`,
	}
	if got := list.Error(); got != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

func TestRunCase(t *testing.T) {
	p := mustParse(t, testPolicy)
	c := &Case{Name: "sql", Agent: "reader", Target: "db", SQL: "SELECT 1", Expect: VerdictAllow}
	if r := p.RunCase(c, nil); r.Pass || r.Problem != "SQL classification is not available in this build" {
		t.Errorf("no classifier: %+v", r)
	}
	classify := func(sql string) ([]Operation, error) {
		return []Operation{
			{Action: ActionBegin},
			{Action: ActionSelect, Objects: []Object{table("public.t", ActionSelect)}},
			{Action: ActionDrop, Objects: []Object{table("public.t", ActionDrop)}},
		}, nil
	}
	c.Expect, c.Rule = VerdictBlock, "no-drop"
	if r := p.RunCase(c, classify); !r.Pass {
		t.Errorf("classified: %+v", r)
	}
	c = &Case{Name: "x", Agent: "ghost", Target: "db", Action: ActionSelect, Expect: VerdictBlock}
	if r := p.RunCase(c, nil); r.Pass || !strings.Contains(r.Problem, `agent "ghost" is not defined`) {
		t.Errorf("unknown agent: %+v", r)
	}
	c = &Case{Name: "y", Agent: "reader", Target: "db", Action: ActionSelect, Objects: []Object{table("public.t", ActionSelect)}, Expect: VerdictAllow, Rule: "other"}
	if r := p.RunCase(c, nil); r.Pass || r.Problem != "expected rule other, got reader-read" {
		t.Errorf("rule mismatch: %+v", r)
	}
}
