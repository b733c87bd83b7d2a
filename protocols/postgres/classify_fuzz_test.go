package postgres

import (
	"reflect"
	"strings"
	"testing"

	"github.com/interlockhq/interlock/engine/policy"
)

// FuzzClassify checks that no input makes the classifier panic, hang or
// report an internal error, and that every statement it returns is either
// classified or carries a reason.
//
//	go test -fuzz FuzzClassify -fuzztime 60s ./protocols/postgres
func FuzzClassify(f *testing.F) {
	for _, q := range corpus(f) {
		f.Add(q)
	}
	for _, q := range []string{
		"SELECT 'a\\' , $$' , pg_read_file('/etc/passwd') -- $$",
		"SELECT U&'\\0000'",
		"SELECT (((((((((((((((((((((((((((((1)))))))))))))))))))))))))))))",
		"WITH RECURSIVE a AS (SELECT * FROM a), b AS (SELECT * FROM b) SELECT * FROM a, b",
		"CREATE FUNCTION f() RETURNS int BEGIN ATOMIC SELECT 1; END",
		"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE p",
	} {
		f.Add(q)
	}
	cached := NewClassifier(64)
	fresh := NewClassifier(0)
	f.Fuzz(func(t *testing.T, sql string) {
		cl, err := fresh.classify(sql)
		if err != nil {
			t.Fatalf("internal error: %v", err)
		}
		for i, st := range cl.Statements {
			if st.Op.Unclassified {
				if st.Op.Reason == "" {
					t.Errorf("statement %d unclassified without a reason", i)
				}
				if st.Op.Action != policy.ActionUnknown || len(st.Op.Objects) != 0 {
					t.Errorf("statement %d unclassified but carries action %s / %d objects", i, st.Op.Action, len(st.Op.Objects))
				}
				continue
			}
			if st.Op.Action == policy.ActionUnknown && st.Execute == "" {
				t.Errorf("statement %d %q classified without an action", i, st.Text)
			}
			if st.Tag == "" {
				t.Errorf("statement %d %q classified without a tag", i, st.Text)
			}
			if !strings.Contains(sql, st.Text) {
				t.Errorf("statement text %q is not part of the query", st.Text)
			}
		}
		again, err := cached.Classify(sql)
		if err != nil {
			t.Fatalf("internal error: %v", err)
		}
		if !reflect.DeepEqual(cl, again) {
			t.Errorf("classification is not deterministic")
		}
	})
}

// FuzzParseJSON feeds the decoder arbitrary bytes: it must return a tree
// or an error, never panic or index out of range while the tree is read.
func FuzzParseJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,{"b":"c\u0041"},null,true,false]}`, `[]`, `{"x":"\ud800"}`, `[[[[`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tree, err := parseJSON(s)
		if err != nil {
			return
		}
		var walk func(v jval)
		walk = func(v jval) {
			_ = tree.keyOf(v)
			_ = tree.strOf(v)
			for _, c := range tree.children(v) {
				walk(c)
			}
		}
		walk(tree.root)
	})
}
