package policy

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the loader: it must never panic, and a
// policy it accepts must be usable (Decide, Explain, Lint do not panic).
func FuzzParse(f *testing.F) {
	f.Add([]byte(testPolicy))
	f.Add([]byte(head))
	f.Add([]byte(storeBroken))
	f.Add([]byte("version: 1\nrules:\n  - &r {id: a, actions: [read], decision: allow}\n  - *r\n"))
	f.Add([]byte("version: 1\nroles: [{name: a, inherits: [a]}]\n"))
	f.Add([]byte("a: &a [*a]"))
	f.Add([]byte("{"))
	if data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "examples", "policy.yaml")); err == nil {
		f.Add(data)
	}
	ops := []Operation{
		{Agent: "analyst", Target: "orders-db", Action: ActionSelect, Objects: []Object{table("public.orders", ActionSelect), fn("pg_catalog.lower")}},
		{Agent: "writer", Target: "db", Action: ActionDelete, Objects: []Object{table("public.t", ActionDelete)}, Attrs: Attributes{RowEstimate: -1}},
		{Agent: "a", Target: "db", Action: ActionBegin},
		{Agent: "a", Roles: []string{"a", "b"}, Target: "db", Action: Action(200), Objects: []Object{{Kind: ObjectKind(99), Action: Action(250)}}},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.yaml", data)
		if err != nil {
			if p != nil {
				t.Fatal("Parse returned a policy and an error")
			}
			return
		}
		for i := range ops {
			d := p.Decide(&ops[i])
			_ = d.Reason()
			_ = d.Mask()
			_ = p.Explain(&ops[i])
		}
		for _, a := range p.Agents() {
			op := Operation{Agent: a.Name, Target: "db", Action: ActionSelect, Objects: []Object{table("public.t", ActionSelect)}}
			for _, t := range p.Targets() {
				op.Target = t.Name
				_ = p.Decide(&op)
			}
		}
		_ = p.Lint()
	})
}
