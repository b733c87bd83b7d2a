package e2e

import (
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/interlockhq/interlock/test/harness"
)

type decisionCase struct {
	SQL    string `yaml:"sql"`
	Expect string `yaml:"expect"`
	Agent  string `yaml:"agent"`
	// ExpectExec overrides Expect on the extended protocol.
	ExpectExec string `yaml:"expect_exec"`
}

// TestPostgresDecisionTable runs testdata/postgres-decisions.yaml through a
// real agent, Interlock and PostgreSQL, on the simple and the extended
// protocol.
func TestPostgresDecisionTable(t *testing.T) {
	raw, err := os.ReadFile("testdata/postgres-decisions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var table struct {
		Cases []decisionCase `yaml:"cases"`
	}
	if err := yaml.Unmarshal(raw, &table); err != nil {
		t.Fatal(err)
	}
	if len(table.Cases) < 100 {
		t.Fatalf("only %d cases", len(table.Cases))
	}
	e := setupPG(t, "")
	byAgent := map[string][]decisionCase{}
	for _, c := range table.Cases {
		if c.Agent == "" {
			c.Agent = "writer"
		}
		if c.Expect != "allow" && c.Expect != "block" {
			t.Fatalf("case %q: expect must be allow or block", c.SQL)
		}
		byAgent[c.Agent] = append(byAgent[c.Agent], c)
	}
	for agent, cases := range byAgent {
		cg := map[string]string{"analyst": e.analyst, "writer": e.writer}[agent]
		for _, mode := range []string{"simple", "exec"} {
			var steps []harness.PgxStep
			for _, c := range cases {
				steps = append(steps,
					harness.PgxStep{SQL: "begin", Mode: mode},
					harness.PgxStep{SQL: c.SQL, Mode: mode},
					harness.PgxStep{SQL: "rollback", Mode: mode})
			}
			connErr, res := harness.RunPgx(t, cg, e.dsn("127.0.0.1"), steps...)
			if connErr != "" {
				t.Fatalf("%s: connect: %s", agent, connErr)
			}
			for i, c := range cases {
				r := res[3*i+1]
				blocked := r.Code == "42501" && strings.Contains(r.Message, "Interlock")
				want := c.Expect
				if mode == "exec" && c.ExpectExec != "" {
					want = c.ExpectExec
				}
				if blocked != (want == "block") {
					t.Errorf("%s/%s: %q: expected %s, got %+v", agent, mode, c.SQL, want, r)
				}
				if rb := res[3*i+2]; rb.Err != "" {
					t.Errorf("%s/%s: rollback after %q failed: %s", agent, mode, c.SQL, rb.Err)
				}
			}
		}
	}
	if got := e.sql(t, "select count(*) from orders"); got != "50" {
		t.Errorf("orders has %s rows after the table", got)
	}
}
