package postgres

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/interlockhq/interlock/engine/policy"
)

// casesFile is the data-driven table shared with the end-to-end tests.
var casesFile = filepath.Join("..", "..", "test", "classification-cases.yaml")

// classCase is one entry of test/classification-cases.yaml.
type classCase struct {
	Name string     `yaml:"name"`
	SQL  string     `yaml:"sql"`
	Want []wantStmt `yaml:"want"` // one per statement, in order
	Note string     `yaml:"note"` // free text for readers
}

// wantStmt is what one statement must classify as. Objects are written
// "kind name action [category]" or as a mapping when the name has spaces.
type wantStmt struct {
	Action       string     `yaml:"action"`
	Tag          string     `yaml:"tag"`
	Objects      *[]wantObj `yaml:"objects"`  // exactly these (any order); absent: not checked
	Contains     []wantObj  `yaml:"contains"` // at least these
	Excludes     []wantObj  `yaml:"excludes"` // none of these
	Unclassified bool       `yaml:"unclassified"`
	Reason       string     `yaml:"reason"` // substring of the reason
	HasWhere     *bool      `yaml:"has_where"`
	Prepare      string     `yaml:"prepare"`
	Execute      string     `yaml:"execute"`
	Deallocate   string     `yaml:"deallocate"`
	Tx           string     `yaml:"tx"` // "kind" or "kind name"
	RowLocks     bool       `yaml:"row_locks"`
	Note         string     `yaml:"note"` // free text for readers
}

type wantObj struct {
	Kind, Name, Action, Category string
}

func (o *wantObj) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		f := strings.Fields(n.Value)
		if len(f) < 3 || len(f) > 4 {
			return fmt.Errorf("line %d: object %q: want \"kind name action [category]\"", n.Line, n.Value)
		}
		o.Kind, o.Name, o.Action = f[0], f[1], f[2]
		if len(f) == 4 {
			o.Category = f[3]
		}
		return nil
	}
	var m struct{ Kind, Name, Action, Category string }
	if err := n.Decode(&m); err != nil {
		return err
	}
	*o = wantObj(m)
	return nil
}

func (o wantObj) String() string {
	s := o.Kind + " " + o.Name + " " + o.Action
	if o.Category != "" && o.Category != "none" {
		s += " " + o.Category
	}
	return s
}

func objString(o policy.Object) string {
	return wantObj{Kind: o.Kind.String(), Name: o.Name, Action: o.Action.String(), Category: o.Category.String()}.String()
}

func loadCases(t testing.TB) []classCase {
	t.Helper()
	data, err := os.ReadFile(casesFile)
	if err != nil {
		t.Fatalf("read cases: %v", err)
	}
	var cases []classCase
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&cases); err != nil {
		t.Fatalf("decode %s: %v", casesFile, err)
	}
	return cases
}

func TestClassificationCases(t *testing.T) {
	cases := loadCases(t)
	if len(cases) < 120 {
		t.Errorf("%s has %d cases, want at least 120", casesFile, len(cases))
	}
	c := NewClassifier(0)
	names := map[string]bool{}
	for _, tc := range cases {
		if names[tc.Name] {
			t.Errorf("duplicate case name %q", tc.Name)
		}
		names[tc.Name] = true
		t.Run(tc.Name, func(t *testing.T) {
			cl, err := c.Classify(tc.SQL)
			if err != nil {
				t.Fatalf("Classify: %v", err)
			}
			if len(cl.Statements) != len(tc.Want) {
				t.Fatalf("%d statements, want %d:\n%s", len(cl.Statements), len(tc.Want), dumpClassification(cl))
			}
			for i, want := range tc.Want {
				if msg := checkStatement(cl.Statements[i], want); msg != "" {
					t.Errorf("statement %d: %s\n%s", i, msg, dumpClassification(cl))
				}
			}
		})
	}
}

func checkStatement(st Statement, want wantStmt) string {
	var errs []string
	errf := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if st.Op.Unclassified != want.Unclassified {
		errf("unclassified = %v (%q), want %v", st.Op.Unclassified, st.Op.Reason, want.Unclassified)
	}
	if want.Reason != "" && !strings.Contains(st.Op.Reason, want.Reason) {
		errf("reason %q does not contain %q", st.Op.Reason, want.Reason)
	}
	if want.Action != "" && st.Op.Action.String() != want.Action {
		errf("action = %s, want %s", st.Op.Action, want.Action)
	}
	if want.Tag != "" && st.Tag != want.Tag {
		errf("tag = %q, want %q", st.Tag, want.Tag)
	}
	if want.HasWhere != nil && st.Op.Attrs.HasWhere != *want.HasWhere {
		errf("has_where = %v, want %v", st.Op.Attrs.HasWhere, *want.HasWhere)
	}
	if st.Prepare != want.Prepare {
		errf("prepare = %q, want %q", st.Prepare, want.Prepare)
	}
	if st.Execute != want.Execute {
		errf("execute = %q, want %q", st.Execute, want.Execute)
	}
	if st.Deallocate != want.Deallocate {
		errf("deallocate = %q, want %q", st.Deallocate, want.Deallocate)
	}
	if st.RowLocks != want.RowLocks {
		errf("row_locks = %v, want %v", st.RowLocks, want.RowLocks)
	}
	gotTx := ""
	if st.TxControl.Kind != TxNone {
		gotTx = strings.TrimSpace(st.TxControl.Kind.String() + " " + st.TxControl.Name)
		if st.TxControl.Chain {
			gotTx += " chain"
		}
	}
	if gotTx != want.Tx {
		errf("tx = %q, want %q", gotTx, want.Tx)
	}
	var got []string
	for _, o := range st.Op.Objects {
		got = append(got, objString(o))
	}
	if want.Objects != nil {
		var exp []string
		for _, o := range *want.Objects {
			exp = append(exp, o.String())
		}
		slices.Sort(exp)
		g := slices.Clone(got)
		slices.Sort(g)
		if !slices.Equal(g, exp) {
			errf("objects:\n  got  %q\n  want %q", g, exp)
		}
	}
	for _, o := range want.Contains {
		if !slices.Contains(got, o.String()) {
			errf("missing object %q in %q", o.String(), got)
		}
	}
	for _, o := range want.Excludes {
		if slices.Contains(got, o.String()) {
			errf("unexpected object %q", o.String())
		}
	}
	return strings.Join(errs, "; ")
}

func dumpClassification(cl *Classification) string {
	var b strings.Builder
	for i, s := range cl.Statements {
		fmt.Fprintf(&b, "  #%d %q tag=%q action=%s unclassified=%v reason=%q where=%v prepare=%q execute=%q deallocate=%q tx=%+v locks=%v\n",
			i, s.Text, s.Tag, s.Op.Action, s.Op.Unclassified, s.Op.Reason, s.Op.Attrs.HasWhere, s.Prepare, s.Execute, s.Deallocate, s.TxControl, s.RowLocks)
		for _, o := range s.Op.Objects {
			fmt.Fprintf(&b, "      - %s\n", objString(o))
		}
	}
	return b.String()
}
