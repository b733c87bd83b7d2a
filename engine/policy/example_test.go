package policy

import (
	"path/filepath"
	"testing"
)

// TestExamplePolicy keeps deploy/examples/policy.yaml valid, lint-clean and
// in agreement with its cases file.
func TestExamplePolicy(t *testing.T) {
	dir := filepath.Join("..", "..", "deploy", "examples")
	p, err := Load(filepath.Join(dir, "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range p.Lint() {
		t.Errorf("lint: %s", w)
	}
	cases, err := LoadCases(filepath.Join(dir, "policy-cases.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// SQL cases need the PostgreSQL classifier (cgo); cmd/interlock's
	// TestPolicyExampleCases runs them.
	n := 0
	for i := range cases {
		if cases[i].SQL != "" {
			continue
		}
		n++
		res := p.RunCase(&cases[i], nil)
		if !res.Pass {
			t.Errorf("%s:%d: %s: %s", "policy-cases.yaml", cases[i].Line, cases[i].Name, res.Problem)
		}
	}
	if n < 20 {
		t.Errorf("example has %d cases without sql, want at least 20", n)
	}
}
