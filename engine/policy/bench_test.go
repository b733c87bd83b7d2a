package policy

import (
	"fmt"
	"strings"
	"testing"
)

// benchPolicy generates a policy with 200 rules: 20 global and 10 roles of
// 18 rules each, over 4 targets, with a mix of literal and glob patterns,
// conditions and every decision.
func benchPolicy(tb testing.TB) *Policy {
	var b strings.Builder
	b.WriteString("version: 1\ntargets:\n")
	for i := 0; i < 4; i++ {
		fmt.Fprintf(&b, "  - {name: db%d, protocol: postgres, address: \"10.0.0.%d:5432\", auth: passthrough}\n", i, i+1)
	}
	b.WriteString("agents:\n  - {name: agent, roles: [role4, role9]}\nroles:\n")
	actions := []string{"[read]", "[write]", "[insert, update]", "[delete]", "[ddl]", "[select]", "[copy]", "[session]"}
	decisions := []string{
		"decision: allow",
		"decision: block",
		"decision: approve\n        approval: {approvers: [dba]}",
		"decision: mask\n        mask: {columns: {email: partial}}",
	}
	for r := 0; r < 10; r++ {
		fmt.Fprintf(&b, "  - name: role%d\n", r)
		if r%5 != 0 {
			fmt.Fprintf(&b, "    inherits: [role%d]\n", r-1)
		}
		b.WriteString("    rules:\n")
		for i := 0; i < 18; i++ {
			dec := decisions[0]
			if i%7 == 3 {
				dec = decisions[(i/7)%3+1]
			}
			fmt.Fprintf(&b, "      - targets: [\"db%d\", \"db*\"]\n        actions: %s\n        tables: [\"s%d.t%d_*\", \"app%d.*\", \"public.exact_%d\"]\n        %s\n",
				(r+i)%4, actions[(r+i)%len(actions)], r, i, i%3, i, dec)
			if i%5 == 0 {
				b.WriteString("        when: {has_where: true}\n")
			}
		}
	}
	b.WriteString("rules:\n")
	for i := 0; i < 20; i++ {
		switch i % 4 {
		case 0:
			fmt.Fprintf(&b, "  - {actions: [dangerous], tables: [\"secret%d.*\"], decision: block}\n", i)
		case 1:
			fmt.Fprintf(&b, "  - {function_categories: [server_files], functions: [\"x%d.*\"], decision: block}\n", i)
		case 2:
			fmt.Fprintf(&b, "  - {actions: [read], schemas: [\"pii%d\"], decision: mask, mask: {detectors: [email]}}\n", i)
		case 3:
			fmt.Fprintf(&b, "  - {actions: [transaction], targets: [db%d], decision: allow}\n", i%4)
		}
	}
	p, err := Parse("bench.yaml", []byte(b.String()))
	if err != nil {
		tb.Fatal(err)
	}
	if p.RuleCount() != 200 {
		tb.Fatalf("generated %d rules, want 200", p.RuleCount())
	}
	return p
}

func benchOps(p *Policy) map[string]*Operation {
	roles := p.AgentRoles("agent")
	return map[string]*Operation{
		// A join with a built-in: three objects, two roles' worth of rules.
		"select-join": {Agent: "agent", Roles: roles, Target: "db1", Action: ActionSelect, Attrs: Attributes{HasWhere: true, RowEstimate: -1},
			Objects: []Object{table("app1.orders", ActionSelect), table("s5.t0_x", ActionSelect), fn("pg_catalog.lower")}},
		// An UPDATE reading two more tables, one not covered.
		"update-4-objects": {Agent: "agent", Roles: roles, Target: "db2", Action: ActionUpdate, Attrs: Attributes{HasWhere: true, RowEstimate: 40},
			Objects: []Object{table("app2.orders", ActionUpdate), table("app2.customers", ActionSelect), table("public.exact_4", ActionSelect), table("nowhere.x", ActionSelect)}},
		"begin": {Agent: "agent", Roles: roles, Target: "db3", Action: ActionBegin},
	}
}

func BenchmarkDecide(b *testing.B) {
	p := benchPolicy(b)
	for name, op := range benchOps(p) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = p.Decide(op)
			}
		})
	}
}

func TestBenchPolicyNoAllocs(t *testing.T) {
	p := benchPolicy(t)
	for name, op := range benchOps(p) {
		d := p.Decide(op)
		t.Logf("%s: %s by %s", name, d.Verdict, d.RuleID)
		if n := testing.AllocsPerRun(200, func() { _ = p.Decide(op) }); n != 0 {
			t.Errorf("%s: %.0f allocs per Decide", name, n)
		}
	}
}
