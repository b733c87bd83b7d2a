package postgres

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/interlockhq/interlock/engine/policy"
)

// psqlQueries returns the queries psql sends for its describe commands.
func psqlQueries(t testing.TB) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "psql_describe.sql"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, q := range strings.Split(string(data), "\n-- end\n") {
		if strings.Contains(q, "SELECT") {
			out = append(out, q)
		}
	}
	return out
}

// pgbenchStatements returns the statements pgbench sends, one per line.
func pgbenchStatements(t testing.TB) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "pgbench.sql"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" && !strings.HasPrefix(l, "--") {
			out = append(out, l)
		}
	}
	return out
}

// corpus is every query of the tests.
func corpus(t testing.TB) []string {
	var out []string
	for _, c := range loadCases(t) {
		out = append(out, c.SQL)
	}
	out = append(out, psqlQueries(t)...)
	return append(out, pgbenchStatements(t)...)
}

func mustClassify(t testing.TB, c *Classifier, sql string) *Classification {
	t.Helper()
	cl, err := c.Classify(sql)
	if err != nil {
		t.Fatalf("Classify(%q): %v", sql, err)
	}
	return cl
}

// TestSchemaCoversParserOutput decodes every corpus query both ways —
// libpg_query's protobuf through the generated Go types, and its JSON
// through parseJSON typed by nodeSchema — and checks that the generic JSON
// walk reaches exactly the same nodes. This is what makes the walker's
// "every field of every node" true.
func TestSchemaCoversParserOutput(t *testing.T) {
	for _, sql := range corpus(t) {
		tree, err := pg_query.Parse(sql)
		if err != nil {
			continue
		}
		want := map[string]int{}
		countProto(tree.ProtoReflect(), want)

		out, err := pg_query.ParseToJSON(sql)
		if err != nil {
			t.Fatalf("ParseToJSON(%q): %v", sql, err)
		}
		jt, err := parseJSON(out)
		if err != nil {
			t.Fatalf("parseJSON(%q): %v", sql, err)
		}
		got := map[string]int{}
		if err := countJSON(jt, "ParseResult", jt.root, got); err != nil {
			t.Fatalf("%q: %v", sql, err)
		}
		if !mapsEqual(got, want) {
			t.Errorf("%q: node counts differ\n json  %v\n proto %v", sql, got, want)
		}
	}
}

func countProto(m protoreflect.Message, counts map[string]int) {
	name := string(m.Descriptor().Name())
	if name != "Node" {
		counts[name]++
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				countProto(l.Get(i).Message(), counts)
			}
			return true
		}
		countProto(v.Message(), counts)
		return true
	})
}

func countJSON(t *jtree, typ string, v jval, counts map[string]int) error {
	counts[typ]++
	schema, ok := nodeSchema[typ]
	if !ok {
		return errors.New("unknown message " + typ)
	}
	for _, c := range t.children(v) {
		ft, ok := schema[t.keyOf(c)]
		if !ok {
			return errors.New("unknown field " + typ + "." + t.keyOf(c))
		}
		if ft.kind == fieldScalar {
			continue
		}
		elems := []jval{c}
		if ft.list {
			elems = t.children(c)
		}
		for _, e := range elems {
			if ft.kind == fieldMessage {
				if err := countJSON(t, ft.msg, e, counts); err != nil {
					return err
				}
				continue
			}
			if e.n == 0 {
				continue // NULL list element
			}
			inner := t.vals[e.first]
			if err := countJSON(t, t.keyOf(inner), inner, counts); err != nil {
				return err
			}
		}
	}
	return nil
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestEveryCallReported checks, against the protobuf tree, that every
// function call of every classified statement is reported as a function
// object, and every relation name appears in some object.
func TestEveryCallReported(t *testing.T) {
	c := NewClassifier(0)
	for _, sql := range corpus(t) {
		tree, err := pg_query.Parse(sql)
		if err != nil {
			continue
		}
		cl := mustClassify(t, c, sql)
		if len(cl.Statements) != len(tree.Stmts) {
			t.Fatalf("%q: %d statements, parser has %d", sql, len(cl.Statements), len(tree.Stmts))
		}
		for i, raw := range tree.Stmts {
			st := cl.Statements[i]
			if st.Op.Unclassified {
				continue
			}
			if _, ok := raw.Stmt.Node.(*pg_query.Node_DoStmt); ok {
				continue
			}
			var funcs, rels, ctes []string
			collect(raw.ProtoReflect(), &funcs, &rels, &ctes)
			for _, f := range funcs {
				if !slices.ContainsFunc(st.Op.Objects, func(o policy.Object) bool {
					return o.Kind == policy.KindFunction && o.Name == f
				}) {
					t.Errorf("%q: call of %s not reported: %v", st.Text, f, st.Op.Objects)
				}
			}
			for _, r := range rels {
				if slices.Contains(ctes, r) {
					continue
				}
				if !slices.ContainsFunc(st.Op.Objects, func(o policy.Object) bool {
					return strings.HasSuffix(o.Name, quoteIdent(r))
				}) {
					t.Errorf("%q: relation %s not reported: %v", st.Text, r, st.Op.Objects)
				}
			}
		}
	}
}

// collect gathers the qualified names of FuncCalls, the names of RangeVars
// (minus those in FOR UPDATE OF lists, which name FROM items) and CTE names.
func collect(m protoreflect.Message, funcs, rels, ctes *[]string) {
	switch x := m.Interface().(type) {
	case *pg_query.FuncCall:
		var parts []string
		for _, n := range x.Funcname {
			parts = append(parts, n.GetString_().GetSval())
		}
		*funcs = append(*funcs, functionName(parts))
	case *pg_query.RangeVar:
		*rels = append(*rels, x.Relname)
	case *pg_query.CommonTableExpr:
		*ctes = append(*ctes, x.Ctename)
	case *pg_query.LockingClause:
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				collect(l.Get(i).Message(), funcs, rels, ctes)
			}
			return true
		}
		collect(v.Message(), funcs, rels, ctes)
		return true
	})
}

// TestPsqlDescribe: psql's \d queries are plain catalog reads.
func TestPsqlDescribe(t *testing.T) {
	c := NewClassifier(0)
	qs := psqlQueries(t)
	if len(qs) < 10 {
		t.Fatalf("only %d psql queries in testdata", len(qs))
	}
	for _, q := range qs {
		cl := mustClassify(t, c, q)
		if len(cl.Statements) != 1 {
			t.Fatalf("%q: %d statements", q, len(cl.Statements))
		}
		st := cl.Statements[0]
		if st.Op.Unclassified || st.Op.Action != policy.ActionSelect {
			t.Errorf("%q: action %s unclassified %v %s", q, st.Op.Action, st.Op.Unclassified, st.Op.Reason)
		}
		for _, o := range st.Op.Objects {
			switch {
			case o.Kind == policy.KindTable && strings.HasPrefix(o.Name, "pg_catalog."):
			case o.Kind == policy.KindFunction && o.Category == policy.CategoryNone && strings.HasPrefix(o.Name, "pg_catalog."):
			default:
				t.Errorf("%q: unexpected object %s", st.Text, objString(o))
			}
		}
	}
}

// TestPgbench: every statement pgbench sends is classified, on its tables.
func TestPgbench(t *testing.T) {
	c := NewClassifier(0)
	for _, q := range pgbenchStatements(t) {
		for _, st := range mustClassify(t, c, q).Statements {
			if st.Op.Unclassified || st.Op.Action == policy.ActionUnknown {
				t.Errorf("%q: action %s unclassified %v %s", q, st.Op.Action, st.Op.Unclassified, st.Op.Reason)
			}
			for _, o := range st.Op.Objects {
				if o.Kind == policy.KindTable && !strings.HasPrefix(o.Name, "public.pgbench_") && !strings.HasPrefix(o.Name, "pg_catalog.") {
					t.Errorf("%q: unexpected table %s", q, o.Name)
				}
				if o.Category != policy.CategoryNone {
					t.Errorf("%q: unexpected categorised function %s", q, o.Name)
				}
			}
		}
	}
}

func TestStatementText(t *testing.T) {
	c := NewClassifier(0)
	sql := "SELECT 1; /* two */ SELECT 'a;b' ;\n-- three\nDELETE FROM t"
	cl := mustClassify(t, c, sql)
	want := []string{"SELECT 1", "/* two */ SELECT 'a;b'", "-- three\nDELETE FROM t"}
	if len(cl.Statements) != len(want) {
		t.Fatalf("%d statements, want %d", len(cl.Statements), len(want))
	}
	for i, w := range want {
		if got := cl.Statements[i].Text; got != w {
			t.Errorf("statement %d text %q, want %q", i, got, w)
		}
	}
}

func TestRefusedInput(t *testing.T) {
	c := NewClassifier(0)
	for _, sql := range []string{"SELECT 1\x00; DROP TABLE t", "SELECT '\xff'", "SELECT 'unterminated"} {
		cl := mustClassify(t, c, sql)
		if len(cl.Statements) != 1 || !cl.Statements[0].Op.Unclassified || cl.Statements[0].Op.Reason == "" {
			t.Errorf("%q: want one unclassified statement with a reason, got\n%s", sql, dumpClassification(cl))
		}
	}
	for _, sql := range []string{"", "   ", ";", ";;", "-- c", "/* c */"} {
		if cl := mustClassify(t, c, sql); len(cl.Statements) != 0 {
			t.Errorf("%q: %d statements, want none", sql, len(cl.Statements))
		}
	}
}

func TestRowEstimateUnknown(t *testing.T) {
	c := NewClassifier(0)
	for _, sql := range []string{"SELECT 1", "SELEC", "BEGIN", "ALTER SYSTEM SET a = 1"} {
		for _, st := range mustClassify(t, c, sql).Statements {
			if st.Op.Attrs.RowEstimate != -1 {
				t.Errorf("%q: RowEstimate %d, want -1", sql, st.Op.Attrs.RowEstimate)
			}
		}
	}
}

func TestCache(t *testing.T) {
	c := NewClassifier(2)
	a := mustClassify(t, c, "SELECT * FROM a")
	if b := mustClassify(t, c, "SELECT * FROM a"); a != b {
		t.Error("second classification of the same text is not the cached one")
	}
	if b := mustClassify(t, c, "select * from a"); a == b {
		t.Error("different text shares a cache entry")
	}
	mustClassify(t, c, "SELECT * FROM b") // evicts "SELECT * FROM a"
	if n := c.cache.len(); n != 2 {
		t.Errorf("cache holds %d entries, want 2", n)
	}
	if b := mustClassify(t, c, "SELECT * FROM a"); a == b {
		t.Error("least recently used entry was not evicted")
	}

	long := "SELECT '" + strings.Repeat("x", maxCachedQuery) + "'"
	mustClassify(t, c, long)
	if _, ok := c.cache.get(long); ok {
		t.Error("query longer than maxCachedQuery was cached")
	}

	off := NewClassifier(0)
	if x, y := mustClassify(t, off, "SELECT 1"), mustClassify(t, off, "SELECT 1"); x == y {
		t.Error("disabled cache returned a shared result")
	}
}

// TestSharedResultIsImmutable: appending to a copied Operation's objects
// must not write into the cached classification.
func TestSharedResultIsImmutable(t *testing.T) {
	c := NewClassifier(8)
	sql := "SELECT * FROM a JOIN b ON true"
	op := mustClassify(t, c, sql).Statements[0].Op
	op.Objects = append(op.Objects, policy.Object{Kind: policy.KindTable, Name: "injected"})
	op.Objects[0].Name = "changed"
	again := mustClassify(t, c, sql).Statements[0].Op
	if again.Objects[0].Name != "public.a" || len(again.Objects) != 2 {
		t.Errorf("cached classification modified: %v", again.Objects)
	}
}

func TestResolveExecute(t *testing.T) {
	c := NewClassifier(0)
	cl := mustClassify(t, c, "PREPARE p AS DELETE FROM orders WHERE id = $1; EXECUTE p(pg_sleep(1))")
	prep, exec := cl.Statements[0], cl.Statements[1]
	if prep.Prepare != "p" || exec.Execute != "p" {
		t.Fatalf("prepare %q execute %q", prep.Prepare, exec.Execute)
	}
	if exec.Op.Action != policy.ActionUnknown || exec.Op.Unclassified {
		t.Errorf("EXECUTE: action %s unclassified %v", exec.Op.Action, exec.Op.Unclassified)
	}
	op := exec.ResolveExecute(prep.Op)
	if op.Action != policy.ActionDelete || !op.Attrs.HasWhere {
		t.Errorf("resolved action %s where %v", op.Action, op.Attrs.HasWhere)
	}
	want := []string{"table public.orders delete", "function pg_catalog.pg_sleep execute admin"}
	var got []string
	for _, o := range op.Objects {
		got = append(got, objString(o))
	}
	if !slices.Equal(got, want) {
		t.Errorf("resolved objects %q, want %q", got, want)
	}
	op.Objects[0].Name = "x"
	if prep.Op.Objects[0].Name != "public.orders" {
		t.Error("ResolveExecute shares objects with the prepared operation")
	}
}

func TestConcurrentClassify(t *testing.T) {
	c := NewClassifier(16)
	qs := corpus(t)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 3; i++ {
				for _, q := range qs {
					if _, err := c.Classify(q); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

// TestUnknownNodeIsUnclassified feeds the walker a tree with a node type and
// a field the schema does not know, as a newer libpg_query might produce.
func TestUnknownNodeIsUnclassified(t *testing.T) {
	for _, doc := range []string{
		`{"stmts":[{"stmt":{"FancyNewStmt":{}}}]}`,
		`{"stmts":[{"stmt":{"SelectStmt":{"targetList":[{"FancyExpr":{"x":1}}]}}}]}`,
		`{"stmts":[{"stmt":{"SelectStmt":{"fancyClause":{"FuncCall":{}}}}}]}`,
		`{"stmts":[{"stmt":{"SelectStmt":{"targetList":[{"A":{},"B":{}}]}}}]}`,
	} {
		jt, err := parseJSON(doc)
		if err != nil {
			t.Fatal(err)
		}
		stmts, _ := jt.get(jt.root, "stmts")
		st, _ := classifyRaw(jt, jt.children(stmts)[0], "x", nil)
		if !st.Op.Unclassified || st.Op.Reason == "" {
			t.Errorf("%s: classified as %s", doc, st.Op.Action)
		}
	}
}

func TestParseJSON(t *testing.T) {
	jt, err := parseJSON(`{"a":"x\"\\\/\b\f\n\r\t\u0041\u00e9\ud83d\ude00\ud800z","b":[1,-2.5e3,true,false,null,{}],"c":{"d":"raw` + "\xff" + `"}}`)
	if err != nil {
		t.Fatal(err)
	}
	if got := jt.getStr(jt.root, "a"); got != "x\"\\/\b\f\n\r\tAé😀\uFFFDz" {
		t.Errorf("a = %q", got)
	}
	b, _ := jt.get(jt.root, "b")
	kinds := []jkind{}
	for _, e := range jt.children(b) {
		kinds = append(kinds, e.kind)
	}
	if !slices.Equal(kinds, []jkind{jNumber, jNumber, jTrue, jFalse, jNull, jObject}) {
		t.Errorf("b kinds %v", kinds)
	}
	c, _ := jt.get(jt.root, "c")
	if got := jt.getStr(c, "d"); got != "raw\xff" {
		t.Errorf("d = %q", got)
	}
	for _, bad := range []string{``, `{`, `{"a"}`, `{"a":}`, `[1,]`, `"abc`, `{"a":"\u12"}`, `{"a":"\q"}`, `[1] x`, `tru`, strings.Repeat("[", maxJSONDepth+1)} {
		if _, err := parseJSON(bad); !errors.Is(err, ErrParseTree) {
			t.Errorf("parseJSON(%q) = %v, want ErrParseTree", bad, err)
		}
	}
}

func TestNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{relationName("", "orders", "p"), "public.orders"},
		{relationName("", "pg_class", "p"), "pg_catalog.pg_class"},
		{relationName("", "x", "t"), "pg_temp.x"},
		{relationName("S", "Orders", "p"), "S.Orders"},
		{relationName("", "a.b", "p"), `public."a.b"`},
		{relationName(`we"ird`, "t", "p"), `"we""ird".t`},
		{createdName("", "pg_class", "p"), "public.pg_class"},
		{functionName([]string{"lower"}), "pg_catalog.lower"},
		{functionName([]string{"my_func"}), "public.my_func"},
		{functionName([]string{"db", "s", "f"}), "s.f"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestParserSafe(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		known, want bool
	}{
		{"standard_conforming_strings", "on", true, true},
		{"standard_conforming_strings", "TRUE", true, true},
		{"standard_conforming_strings", "1", true, true},
		{"standard_conforming_strings", "off", true, false},
		{"standard_conforming_strings", "", false, false},
		{"client_encoding", "UTF-8", true, true},
		{"client_encoding", "unicode", true, true},
		{"client_encoding", "SJIS", true, false},
		{"client_encoding", "", false, false},
		{"work_mem", "", false, true},
	} {
		if got := parserSafe(tc.name, tc.value, tc.known); got != tc.want {
			t.Errorf("parserSafe(%q, %q, %v) = %v", tc.name, tc.value, tc.known, got)
		}
	}
}

// TestNesting: queries deep enough to overflow libpg_query's C stack are
// refused before they reach it (the first would crash the process), while
// large but flat queries are classified.
func TestNesting(t *testing.T) {
	c := NewClassifier(0)
	rows := make([]string, 10000)
	ors := make([]string, 5000)
	whens := make([]string, 3000)
	for i := range rows {
		rows[i] = "(1, 'a', now(), -1, $1 + 2)"
	}
	for i := range ors {
		ors[i] = "id = " + strconv.Itoa(i)
	}
	for i := range whens {
		whens[i] = "WHEN x = " + strconv.Itoa(i) + " THEN 'v'"
	}
	for _, tc := range []struct {
		sql  string
		deep bool
	}{
		{"SELECT 1" + strings.Repeat(" + 1", 100000), true},
		{"SELECT * FROM a" + strings.Repeat(" JOIN a ON true", 100000), true},
		{"SELECT 'a'" + strings.Repeat(` COLLATE "C"`, 100000), true},
		{"SELECT " + strings.Repeat("f(", 5000) + "1" + strings.Repeat(")", 5000), true},
		{"SELECT 1" + strings.Repeat(" + 1", 1000), false},
		{"INSERT INTO t VALUES " + strings.Join(rows, ", "), false},
		{"SELECT * FROM t WHERE " + strings.Join(ors, " OR "), false},
		{"SELECT * FROM t WHERE id IN (" + strings.Repeat("1, ", 50000) + "2)", false},
		{"SELECT CASE " + strings.Join(whens, " ") + " END FROM t", false},
	} {
		cl := mustClassify(t, c, tc.sql)
		st := cl.Statements[0]
		deep := st.Op.Unclassified && strings.Contains(st.Op.Reason, "nests")
		if deep != tc.deep || (!tc.deep && st.Op.Unclassified) {
			t.Errorf("%.60q…: unclassified %v (%s), want refused as too deep: %v", tc.sql, st.Op.Unclassified, st.Op.Reason, tc.deep)
		}
	}
}

// TestManyObjects: a statement naming many distinct objects reports each
// once, in order.
func TestManyObjects(t *testing.T) {
	var b strings.Builder
	b.WriteString("SELECT ")
	for i := 0; i < 2000; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("f" + strconv.Itoa(i%1000) + "()")
	}
	st := mustClassify(t, NewClassifier(0), b.String()).Statements[0]
	if len(st.Op.Objects) != 1000 {
		t.Fatalf("%d objects, want 1000", len(st.Op.Objects))
	}
	for i, o := range st.Op.Objects {
		if want := "public.f" + strconv.Itoa(i); o.Name != want {
			t.Fatalf("object %d is %s, want %s", i, o.Name, want)
		}
	}
}
