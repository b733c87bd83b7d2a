package postgres

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestLiteralKey(t *testing.T) {
	for _, tc := range []struct {
		sql, key, text string // key without literalKeyPrefix; "" when not normalized
	}{
		// Normalized.
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 48213;", "SELECT abalance FROM pgbench_accounts WHERE aid = 0;", "SELECT abalance FROM pgbench_accounts WHERE aid = 48213"},
		{"SELECT 1", "SELECT 0", "SELECT 1"},
		{"SELECT 0", "SELECT 0", "SELECT 0"},
		{"  \n SELECT 7 ;  \n\t", "  \n SELECT 0 ;  \n\t", "SELECT 7"},
		{"SELECT 7 ", "SELECT 0 ", "SELECT 7"},
		{"select 123456789", "select 0", "select 123456789"},
		{"select -5, +5, 5-5, (5)", "select -0, +0, 0-0, (0)", "select -5, +5, 5-5, (5)"},
		{"select * from t1 where a = 5 limit 10 offset 20", "select * from t1 where a = 0 limit 0 offset 0", "select * from t1 where a = 5 limit 10 offset 20"},
		{"select 'a5', 5, '5''6', 7", "select 'a5', 0, '5''6', 0", "select 'a5', 5, '5''6', 7"},
		{`select "c5", 5 from "t""1"`, `select "c5", 0 from "t""1"`, `select "c5", 5 from "t""1"`},
		{"select $1 + 5, $12", "select $1 + 0, $12", "select $1 + 5, $12"},
		{"select 5::int4, int8 '5'", "select 0::int4, int8 '5'", "select 5::int4, int8 '5'"},
		{"select a[1:2] from t", "select a[0:0] from t", "select a[1:2] from t"},
		{"select 'it''s ; -- not /* a comment', 3", "select 'it''s ; -- not /* a comment', 0", "select 'it''s ; -- not /* a comment', 3"},
		{"select 5 /5", "select 0 /0", "select 5 /5"},
		{"select é, 5", "select é, 0", "select é, 5"},
		// An exponent's digits: the constant stays a float (FCONST) whatever
		// they are, and the walker flags every float it reads.
		{"select 1e+5, 2E-7", "select 1e+0, 2E-0", "select 1e+5, 2E-7"},
		{"select 5!=6, 5<>-6, 5 !- 6", "select 0!=0, 0<>-0, 0 !- 0", "select 5!=6, 5<>-6, 5 !- 6"},

		// Kept: not integers on their own, or too long to be sure.
		{"select t1, x_2, _3", "", ""},
		{"select 1.5", "", ""},
		{"select .5", "", ""},
		{"select 5.", "", ""},
		{"select 1e5", "", ""},
		{"select 123abc", "", ""},
		{"select 1_000", "", ""},
		{"select 0x1F, 0o7, 0b1", "", ""},
		{"select 1234567890", "", ""},
		{"select a$1", "", ""},
		{"select é5", "", ""},
		{"select 1..2", "", ""},
		{"select $1_0, $1a", "", ""},
		{"select 1_0e5, 0x_1", "", ""},
		{"select 1.5, 2", "select 1.5, 0", "select 1.5, 2"},
		{"select 1234567890, 2", "select 1234567890, 0", "select 1234567890, 2"},

		// Refused.
		{"select 'a\\', 5", "", ""},
		{"select 5 -- 6", "", ""},
		{"select /* 6 */ 5", "", ""},
		{"select $$5$$, 5", "", ""},
		{"select $a$5$a$, 5", "", ""},
		{"select a$b, 5", "", ""},
		{"select E'x', 5", "", ""},
		{"select e'x', 5", "", ""},
		{"select B'1', 5", "", ""},
		{"select X'1', 5", "", ""},
		{"select N'x', 5", "", ""},
		{"select U&'x', 5", "", ""},
		{`select U&"x", 5`, "", ""},
		{"select 5'x'", "", ""},
		{"select 'unterminated, 5", "", ""},
		{`select "unterminated, 5`, "", ""},
		{"select 5\x00", "", ""},
		{"select '\xff', 5", "", ""},
		{"select 5; select 6", "", ""},
		{"select 5;;", "", ""},
		{"select 5; ;", "", ""},
		{"select 5;x", "", ""},
		{"select 5;\u00a0", "", ""},
		{"select float(5) '1'", "", ""},
		{"select 5::FLOAT", "", ""},
		{"select 5::Float(24)", "", ""},
		{"alter table t alter column 1 set statistics 100", "", ""},
		{"alter table t alter 1 set STATISTICS 5", "", ""},
		{"select * from t", "", ""},
		{"", "", ""},
		{";", "", ""},
	} {
		key, text, ok := literalKey(tc.sql)
		if tc.key == "" {
			if ok {
				t.Errorf("literalKey(%q) = %q, %q; want not normalized", tc.sql, key, text)
			}
			continue
		}
		if !ok || key != literalKeyPrefix+tc.key || text != tc.text {
			t.Errorf("literalKey(%q) = %q, %q, %v; want %q, %q", tc.sql, key, text, ok, literalKeyPrefix+tc.key, tc.text)
		}
	}
}

// TestLiteralKeyText: the text literalKey reports is the parser's statement
// text, whatever the surrounding whitespace and semicolon.
func TestLiteralKeyText(t *testing.T) {
	c := NewClassifier(0)
	for _, body := range []string{"SELECT 1", "select a from t where b = 5", "INSERT INTO t VALUES (1, 'x;y')", "DELETE FROM t WHERE id = 3"} {
		for _, lead := range []string{"", " ", "\n\t ", "\r\n", "\f", "\v", "\u00a0"} {
			for _, tail := range []string{"", " ", ";", " ;", ";\n", " ; \n\t", "\n;\n", "\v;\v", "\u00a0"} {
				sql := lead + body + tail
				cl := mustClassify(t, c, sql)
				_, text, ok := literalKey(sql)
				if !ok || len(cl.Statements) != 1 || cl.Statements[0].Op.Unclassified {
					continue // not normalized, or not one classified statement: never stored
				}
				if text != cl.Statements[0].Text {
					t.Errorf("%q: literalKey text %q, parser %q", sql, text, cl.Statements[0].Text)
				}
			}
		}
	}
}

// literalCorpus is the corpus plus statements whose classification reads a
// literal's value, or whose parse depends on one.
func literalCorpus(t testing.TB) []string {
	t.Helper()
	qs := corpus(t)
	data, err := os.ReadFile(filepath.Join("..", "..", "test", "e2e", "testdata", "postgres-decisions.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Cases []struct {
			SQL string `yaml:"sql"`
		} `yaml:"cases"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	for _, c := range doc.Cases {
		qs = append(qs, c.SQL)
	}
	return append(qs,
		"SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
		"EXPLAIN (ANALYZE 0) DELETE FROM orders",
		"EXPLAIN (ANALYZE 1) DELETE FROM orders",
		"EXPLAIN (ANALYZE 1, VERBOSE 0) DELETE FROM orders WHERE id = 5",
		"EXPLAIN (ANALYZE -1) UPDATE orders SET x = 2",
		"SET statement_timeout = 5",
		"SET statement_timeout = 0",
		"SET LOCAL lock_timeout TO 100",
		"SET standard_conforming_strings = 1",
		"SET standard_conforming_strings = 0",
		"SET standard_conforming_strings TO 1;",
		"SET TIME ZONE 5",
		"SET client_encoding = 6",
		"ALTER ROLE r SET standard_conforming_strings = 1",
		"ALTER DATABASE d SET standard_conforming_strings TO 0",
		"SELECT set_config('standard_conforming_strings', 1::text, false)",
		"SELECT set_config('statement_timeout', 5, false)",
		"SELECT set_config('role', 5, false)",
		"SELECT set_config(5, 'x', false)",
		"SET ROLE 5",
		"SELECT * FROM orders LIMIT 10 OFFSET 20",
		"SELECT * FROM orders ORDER BY 2 FETCH FIRST 3 ROWS ONLY",
		"COMMENT ON LARGE OBJECT 1234 IS 'x'",
		"GRANT SELECT ON LARGE OBJECT 1234, 5 TO r",
		"ALTER LARGE OBJECT 5 OWNER TO r",
		"SECURITY LABEL ON LARGE OBJECT 5 IS 'x'",
		"SELECT lo_unlink(1234), lo_import('/etc/passwd', 5), lo_get(7, 0, 10)",
		"SELECT pg_terminate_backend(1234), pg_cancel_backend(5), pg_sleep(1)",
		"CREATE DATABASE d TEMPLATE = 5",
		"CREATE DATABASE d TEMPLATE template0 CONNECTION LIMIT = 5",
		"CREATE FUNCTION f() RETURNS int LANGUAGE sql COST 5 ROWS 10 AS 'select 1'",
		"CREATE AGGREGATE a (int) (SFUNC = int4pl, STYPE = int, INITCOND = 0, SSPACE = 5)",
		"CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = int4eq, RESTRICT = 5)",
		"CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f(5, 'x')",
		"CREATE SEQUENCE s START 5 INCREMENT 2 CACHE 10",
		"ALTER SEQUENCE s RESTART WITH 5",
		"CREATE TABLE t (a varchar(20), b numeric(10, 2), c int[3], d timestamp(3), e interval second(2))",
		"CREATE TABLE p PARTITION OF q FOR VALUES WITH (MODULUS 4, REMAINDER 1)",
		"ALTER TABLE t ALTER COLUMN 1 SET STATISTICS 100",
		"ALTER TABLE t ALTER COLUMN a SET STATISTICS 100",
		"CREATE INDEX i ON t (a) WITH (fillfactor = 70)",
		"ALTER ROLE r CONNECTION LIMIT 5",
		"CREATE ROLE r SYSID 5",
		"VACUUM (PARALLEL 4) t",
		"COPY t FROM STDIN WITH (FORMAT csv, HEADER 1)",
		"SELECT CAST(5 AS float(5)), 5::float(30), treat(5 AS float(5))",
		"SELECT current_timestamp(3), localtime(2), interval(3) '1 day'",
		"FETCH 5 FROM c",
		"FETCH ABSOLUTE -5 FROM c",
		"MOVE FORWARD 3 IN c",
		"DECLARE c CURSOR FOR SELECT * FROM orders WHERE id > 5",
		"PREPARE p AS SELECT * FROM orders WHERE id = 5 AND x = $1",
		"EXECUTE p(5)",
		"EXECUTE p(lo_unlink(5))",
		"DO 'begin perform 5; end'",
		"VALUES (1, 2), (3, 4)",
		"SELECT 5;",
		"  select 5 ; \n",
		"INSERT INTO orders VALUES (1, 'a5', 2) ON CONFLICT (id) DO UPDATE SET n = 3 RETURNING 4",
		"UPDATE orders SET n = n + 1 WHERE id = 2",
		"DELETE FROM orders WHERE 1 = 1",
		"DELETE FROM orders WHERE 1",
		"SELECT * FROM orders WHERE 0",
		"SELECT * FROM t1 JOIN t2 ON t1.a = t2.b WHERE t1.c IN (1, 2, 3)",
		"WITH d AS (DELETE FROM orders WHERE id = 5 RETURNING *) SELECT * FROM d LIMIT 1",
		"SELECT $1 + 5, $2::int * 10",
		"SELECT 5 FROM generate_series(1, 10) g TABLESAMPLE bernoulli (5) REPEATABLE (7)",
		"SELECT 2147483647, 2147483648, -2147483648, 999999999, 99999999999",
		"SELECT 0, 00, 007",
		"CREATE TABLE t (a int DEFAULT 5 CHECK (a > 0))",
		"ALTER TABLE t ADD COLUMN c varchar(5)",
		"LOCK TABLE t IN ACCESS EXCLUSIVE MODE NOWAIT",
		"REINDEX (CONCURRENTLY 1) TABLE t",
		"CLUSTER (VERBOSE 0) t",
		"SAVEPOINT s1",
		"SELECT xmlserialize(document '<a/>' as text indent)",
		// Lexer edge cases next to normalized digits.
		"EXPLAIN (ANALYZE 1e+0) DELETE FROM orders",
		"SET statement_timeout = 1e+3",
		"SELECT 1e+5, 2E-7, -3e+2 FROM orders",
		"SELECT 5::numeric(10, 2), 'x'::varchar(5), 5::int4, interval '1' second(3) FROM orders",
		"SELECT 5!=6, 5<>-6, 5 !- 6, 2 ^ 3, |/ 16, @ -5 FROM orders",
		"SELECT \"t1\".\"c2\", a[1][2:3] FROM t1 WHERE b = 4 AND c IN (5, 6)",
		"SELECT $1::int + 5, $2 * 6 FROM orders WHERE id = 7",
		"SAVEPOINT s5",
		"ROLLBACK TO SAVEPOINT s5",
		"PREPARE p5 (int) AS DELETE FROM orders WHERE id = $1 AND n = 6",
		"EXECUTE p5(6)",
		"DEALLOCATE p5",
		"PREPARE TRANSACTION 'gid5'",
		"SELECT 5 FROM orders FOR UPDATE OF orders SKIP LOCKED LIMIT 6",
	)
}

// substituteDigits replaces the k-th run of ASCII digits in sql by val.
func substituteDigits(sql string, k int, val string) (string, bool) {
	n := 0
	for i := 0; i < len(sql); {
		if !isDigit(sql[i]) {
			i++
			continue
		}
		j := i
		for j < len(sql) && isDigit(sql[j]) {
			j++
		}
		if n == k {
			return sql[:i] + val + sql[j:], true
		}
		n++
		i = j
	}
	return "", false
}

// literalVariants returns texts with the same normalized key as sql: every
// digit run replaced in turn, and all of them at once, by values chosen
// around the grammar's and the walker's thresholds.
func literalVariants(sql string) []string {
	key, _, ok := literalKey(sql)
	if !ok {
		return nil
	}
	vals := []string{"0", "1", "2", "5", "7", "24", "25", "53", "54", "100", "32767", "32768", "2147483", "999999999", "007"}
	var out []string
	all := sql
	for k := 0; ; k++ {
		if _, ok := substituteDigits(sql, k, "0"); !ok {
			break
		}
		for i, v := range vals {
			b, _ := substituteDigits(sql, k, v)
			if bk, _, ok := literalKey(b); ok && bk == key {
				out = append(out, b)
			}
			if i == k%len(vals) {
				if b, _ := substituteDigits(all, k, v); b != "" {
					if bk, _, ok := literalKey(b); ok && bk == key {
						all = b
					}
				}
			}
		}
	}
	return append(out, all)
}

// TestLiteralCacheSoundness is the normalized cache's contract: classifying
// one text and then another with the same key through the same classifier
// gives exactly what an uncached classification of the second gives.
func TestLiteralCacheSoundness(t *testing.T) {
	fresh := NewClassifier(0)
	checked, hits := 0, 0
	for _, a := range literalCorpus(t) {
		for _, b := range literalVariants(a) {
			c := NewClassifier(16)
			first := mustClassify(t, c, a)
			firstStmts := first.Statements
			got := mustClassify(t, c, b)
			want := mustClassify(t, fresh, b)
			if !reflect.DeepEqual(got.Statements, want.Statements) {
				t.Errorf("after %q, %q classified as\n%swant\n%s", a, b, dumpClassification(got), dumpClassification(want))
			}
			checked++
			if c.cache.len() == 1 {
				hits++
			}
			if again := mustClassify(t, c, a); !reflect.DeepEqual(again.Statements, firstStmts) {
				t.Errorf("%q: cached classification changed after %q", a, b)
			}
		}
	}
	t.Logf("%d pairs, %d shared one entry", checked, hits)
	if checked < 1000 || hits < checked/2 {
		t.Errorf("%d pairs, %d shared one entry: the corpus does not exercise the normalized cache", checked, hits)
	}
}

// TestLiteralCacheEntries: texts differing only in integers share one entry;
// texts whose classification read a value keep one each.
func TestLiteralCacheEntries(t *testing.T) {
	c := NewClassifier(100)
	for i := range 20 {
		cl := mustClassify(t, c, "SELECT abalance FROM pgbench_accounts WHERE aid = "+strconv.Itoa(i*7919)+";")
		if want := "SELECT abalance FROM pgbench_accounts WHERE aid = " + strconv.Itoa(i*7919); cl.Statements[0].Text != want {
			t.Errorf("text %q, want %q", cl.Statements[0].Text, want)
		}
	}
	if n := c.cache.len(); n != 1 {
		t.Errorf("%d entries for one statement shape, want 1", n)
	}
	for _, sql := range []string{"SET statement_timeout = 5", "SET statement_timeout = 0", "EXPLAIN (ANALYZE 0) DELETE FROM t", "EXPLAIN (ANALYZE 1) DELETE FROM t", "COMMENT ON LARGE OBJECT 5 IS 'x'", "COMMENT ON LARGE OBJECT 6 IS 'x'"} {
		mustClassify(t, c, sql)
		if _, ok := c.cache.get(sql); !ok {
			t.Errorf("%q: not cached by its exact text", sql)
		}
	}
	if n := c.cache.len(); n != 7 {
		t.Errorf("%d entries, want 7", n)
	}
	if cl := mustClassify(t, c, "EXPLAIN (ANALYZE 1) DELETE FROM t"); cl.Statements[0].Op.Action.String() != "delete" {
		t.Errorf("EXPLAIN (ANALYZE 1) DELETE: action %s", cl.Statements[0].Op.Action)
	}
	if cl := mustClassify(t, c, "EXPLAIN (ANALYZE 0) DELETE FROM t"); cl.Statements[0].Op.Action.String() != "explain" {
		t.Errorf("EXPLAIN (ANALYZE 0) DELETE: action %s", cl.Statements[0].Op.Action)
	}

	// A text that looks like a normalized key is not cached, and does not
	// find one.
	key, _, _ := literalKey("SELECT abalance FROM pgbench_accounts WHERE aid = 1;")
	if cl := mustClassify(t, c, key); !cl.Statements[0].Op.Unclassified {
		t.Errorf("%q classified as %s", key, cl.Statements[0].Op.Action)
	}
	if n := c.cache.len(); n != 7 {
		t.Errorf("%d entries after a NUL text, want 7", n)
	}
}

// FuzzLiteralKey checks the normalized cache's contract on arbitrary text:
// whenever two texts get the same key, and the first's classification would
// be stored under it, an uncached classification of the second is the same
// but for the text. Pairs are the two inputs, and the first input with its
// digit runs replaced by those of the second (random pairs rarely share a
// key).
//
//	go test -run '^$' -fuzz FuzzLiteralKey -fuzztime 2m -parallel 1 ./protocols/postgres
func FuzzLiteralKey(f *testing.F) {
	for _, q := range literalCorpus(f) {
		for _, v := range literalVariants(q) {
			f.Add(q, v)
		}
		f.Add(q, q)
	}
	f.Add("select 5", "select 5\x00")
	f.Add("select 1 ; ", "2")
	c := NewClassifier(0)
	f.Fuzz(func(t *testing.T, a, b string) {
		ka, ta, oka := literalKey(a)
		if !oka {
			return
		}
		ca, err := c.classify(a)
		if err != nil {
			t.Fatalf("internal error: %v", err)
		}
		if len(ca.Statements) == 1 && !ca.Statements[0].Op.Unclassified && ca.Statements[0].Text != ta {
			t.Errorf("%q: literalKey text %q, parser %q", a, ta, ca.Statements[0].Text)
		}
		if !ca.reusable(ta) {
			return
		}
		for _, other := range []string{b, spliceDigits(a, b)} {
			kb, tb, okb := literalKey(other)
			if !okb || kb != ka {
				continue
			}
			cb, err := c.classify(other)
			if err != nil {
				t.Fatalf("internal error: %v", err)
			}
			if cb.literalValues {
				t.Errorf("%q reads no literal value, %q does", a, other)
			}
			if got, want := ca.withText(tb), cb; !reflect.DeepEqual(got.Statements, want.Statements) {
				t.Errorf("same key, different classification:\n%q\n%s%q\n%s", a, dumpClassification(ca), other, dumpClassification(cb))
			}
		}
	})
}

// spliceDigits replaces the digit runs of a, in order, by those of b.
func spliceDigits(a, b string) string {
	var runs []string
	for i := 0; i < len(b); {
		if !isDigit(b[i]) {
			i++
			continue
		}
		j := i
		for j < len(b) && isDigit(b[j]) {
			j++
		}
		runs = append(runs, b[i:j])
		i = j
	}
	if len(runs) == 0 {
		return a
	}
	var out strings.Builder
	n := 0
	for i := 0; i < len(a); {
		if !isDigit(a[i]) {
			out.WriteByte(a[i])
			i++
			continue
		}
		j := i
		for j < len(a) && isDigit(a[j]) {
			j++
		}
		out.WriteString(runs[n%len(runs)])
		n++
		i = j
	}
	return out.String()
}
