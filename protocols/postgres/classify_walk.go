package postgres

import (
	"fmt"
	"strings"

	"github.com/interlockhq/interlock/engine/policy"
)

// walker visits one statement's parse tree and collects the objects it
// touches. Statement kinds are decided in classify_stmt.go; this file walks
// everything below them generically: every field of every node is visited
// (with the types from nodeSchema), and only the nodes that name something
// (relations, function calls, CTEs, nested data-modifying statements) are
// looked at closely. A node or field the schema does not know makes the
// statement unclassified: the walker never skips what it cannot read.
type walker struct {
	t    *jtree
	cats *categoryMemo
	objs []policy.Object
	seen map[policy.Object]struct{} // index of objs once it grows past a few entries

	// scopes holds the CTE names visible at the current query level,
	// outermost first. An unqualified relation in a FROM clause that matches
	// one is the CTE, not a table.
	scopes [][]string

	// relAct is the action recorded for a relation met in the tree outside
	// an explicit target: select inside queries, the statement's own action
	// in utility statements (the table of CREATE INDEX, the tables of
	// VACUUM, the referenced table of a foreign key …).
	relAct policy.Action

	// mods is the strongest data-modifying action of any statement nested in
	// this one (a DELETE in a CTE, a DML statement under COPY or EXPLAIN
	// ANALYZE). A SELECT that deletes through a CTE is reported as a delete.
	mods policy.Action

	rowLocks bool
	// Changes of (default_)transaction_read_only: to on, and to anything
	// else (or an unknown value).
	readOnlyOn, readOnlyOff bool

	// literalValues is set when the classification depends on the value of
	// a numeric constant (a setting's value, an EXPLAIN option, a large
	// object's number): the result then says nothing about the same text
	// with other integers, and is not cached under a normalized key.
	literalValues bool

	// fail is why the statement cannot be classified; the first reason wins.
	fail string
}

func (w *walker) unclassified(format string, args ...any) {
	if w.fail == "" {
		w.fail = fmt.Sprintf(format, args...)
	}
}

// add records an object once. A linear scan is fastest for the few objects
// of a typical statement; a map takes over so that a query naming thousands
// of distinct objects costs linear, not quadratic, time.
func (w *walker) add(o policy.Object) {
	if w.seen != nil {
		if _, ok := w.seen[o]; ok {
			return
		}
		w.seen[o] = struct{}{}
		w.objs = append(w.objs, o)
		return
	}
	if hasObject(w.objs, o) {
		return
	}
	w.objs = append(w.objs, o)
	if len(w.objs) == 32 {
		w.seen = make(map[policy.Object]struct{}, 64)
		for _, x := range w.objs {
			w.seen[x] = struct{}{}
		}
	}
}

// node walks a Node wrapper: an object with exactly one member, named by the
// wrapped message's type.
func (w *walker) node(v jval) {
	if v.kind == jObject && v.n == 0 {
		return // a NULL element of a list, e.g. the absent column list of ROWS FROM (f())
	}
	if v.kind != jObject || v.n != 1 {
		w.unclassified("unexpected parse node shape")
		return
	}
	inner := w.t.vals[v.first]
	w.msg(w.t.keyOf(inner), inner)
}

// nodeType returns the type and body of a Node wrapper.
func (w *walker) nodeType(v jval) (string, jval) {
	if v.kind != jObject || v.n != 1 {
		return "", jval{}
	}
	inner := w.t.vals[v.first]
	return w.t.keyOf(inner), inner
}

// msg walks a message of type typ.
func (w *walker) msg(typ string, v jval) {
	if v.kind != jObject {
		w.unclassified("parse node %s is not an object", typ)
		return
	}
	switch typ {
	case "String", "A_Const", "Integer", "Float", "Boolean", "BitString", "A_Star", "ParamRef":
		// Leaves: nothing nested, nothing named.
	case "FuncCall":
		w.funcCall(v, policy.ActionExecute)
	case "RangeVar":
		w.relation(v, w.relAct, true)
	case "ColumnRef":
		w.columnRef(v)
	case "A_Indirection":
		w.indirection(v)
	case "RangeTableSample":
		w.function(w.names(w.field(v, "method")), policy.ActionExecute)
		w.fields(typ, v, "method")
	case "LockingClause":
		// FOR UPDATE OF a, b names FROM items by alias, not tables.
		w.rowLocks = true
	case "SelectStmt":
		w.selectStmt(v)
	case "InsertStmt":
		w.insertStmt(v)
	case "UpdateStmt":
		w.updateStmt(v)
	case "DeleteStmt":
		w.deleteStmt(v)
	case "MergeStmt":
		w.mergeStmt(v)
	case "WithClause":
		// Only reached outside the statements above; walk it without
		// scoping, which can only report CTE names as tables.
		w.fields(typ, v)
	default:
		if name, ok := sqlJSONFunctions[typ]; ok {
			w.sqlJSON(typ, name, v)
		}
		w.fields(typ, v)
	}
}

// fields walks every member of a message of type typ except those in skip.
func (w *walker) fields(typ string, v jval, skip ...string) {
	schema, ok := nodeSchema[typ]
	if !ok {
		w.unclassified("unsupported parse node %s", typ)
		return
	}
members:
	for _, c := range w.t.children(v) {
		if c.kind != jObject && c.kind != jArray {
			continue // scalars: numbers, names, enums
		}
		key := w.t.keyOf(c)
		for _, s := range skip {
			if key == s {
				continue members
			}
		}
		ft, ok := schema[key]
		switch {
		case !ok:
			w.unclassified("unsupported field %s.%s", typ, key)
		case ft.kind == fieldScalar:
			if c.kind == jObject {
				w.unclassified("unexpected object in %s.%s", typ, key)
			}
		case ft.list:
			if c.kind != jArray {
				w.unclassified("expected a list in %s.%s", typ, key)
				continue
			}
			for _, e := range w.t.children(c) {
				w.typed(ft, e)
			}
		default:
			w.typed(ft, c)
		}
	}
}

func (w *walker) typed(ft fieldType, v jval) {
	if ft.kind == fieldNode {
		w.node(v)
	} else {
		w.msg(ft.msg, v)
	}
}

// field returns member key of v (a zero jval when absent).
func (w *walker) field(v jval, key string) jval {
	c, _ := w.t.get(v, key)
	return c
}

// walkField walks member key of a message of type typ, if present.
func (w *walker) walkField(typ string, v jval, key string) {
	c, ok := w.t.get(v, key)
	if !ok {
		return
	}
	ft, ok := nodeSchema[typ][key]
	if !ok || ft.kind == fieldScalar {
		w.unclassified("unsupported field %s.%s", typ, key)
		return
	}
	if ft.list {
		for _, e := range w.t.children(c) {
			w.typed(ft, e)
		}
		return
	}
	w.typed(ft, c)
}

// names returns the strings of a list of String nodes (a qualified name).
// Anything else in the list is returned as "?" so that it cannot match a
// rule by accident.
func (w *walker) names(list jval) []string {
	children := w.t.children(list)
	out := make([]string, 0, len(children))
	for _, c := range children {
		typ, body := w.nodeType(c)
		if typ == "String" {
			out = append(out, w.t.getStr(body, "sval"))
		} else {
			out = append(out, "?")
		}
	}
	return out
}

// relation records a RangeVar. fromItem is set where a CTE of the same name
// would shadow the table (FROM items); targets of INSERT/UPDATE/DELETE/MERGE
// are always tables.
func (w *walker) relation(v jval, act policy.Action, fromItem bool) string {
	schema, rel := w.t.getStr(v, "schemaname"), w.t.getStr(v, "relname")
	if fromItem && schema == "" && w.isCTE(rel) {
		return ""
	}
	name := relationName(schema, rel, w.t.getStr(v, "relpersistence"))
	w.add(policy.Object{Kind: policy.KindTable, Name: name, Action: act})
	return name
}

func (w *walker) isCTE(name string) bool {
	for _, s := range w.scopes {
		for _, n := range s {
			if n == name {
				return true
			}
		}
	}
	return false
}

// rowLockObjects adds, for a statement with a locking clause, the action
// lock on every table it reads: SELECT … FOR UPDATE/SHARE needs what LOCK
// TABLE needs. FOR UPDATE OF names FROM items by alias, and the locking
// clause may sit in any subquery, so every table read counts (stricter than
// the server, never looser).
func (w *walker) rowLockObjects() {
	for _, o := range w.objs {
		if o.Kind == policy.KindTable && o.Action == policy.ActionSelect {
			w.add(policy.Object{Kind: policy.KindTable, Name: o.Name, Action: policy.ActionLock})
		}
	}
}

// function records a function object.
func (w *walker) function(parts []string, act policy.Action) string {
	name := functionName(parts)
	w.add(policy.Object{Kind: policy.KindFunction, Name: name, Action: act, Category: w.cats.of(name)})
	return name
}

// funcCall records a call and walks its arguments, ORDER BY, FILTER and
// window.
func (w *walker) funcCall(v jval, act policy.Action) {
	parts := w.names(w.field(v, "funcname"))
	w.function(parts, act)
	if len(parts) > 0 && strings.EqualFold(parts[len(parts)-1], "set_config") {
		w.setConfig(v)
	}
	w.fields("FuncCall", v, "funcname")
}

// setConfig makes set_config(name, value, is_local) visible as the setting
// change it is; set_config('role', …) changes the current role.
func (w *walker) setConfig(v jval) {
	var nameArg, valueArg jval
	for i, a := range w.t.children(w.field(v, "args")) {
		typ, body := w.nodeType(a)
		if typ == "NamedArgExpr" {
			switch strings.ToLower(w.t.getStr(body, "name")) {
			case "setting_name":
				nameArg = w.field(body, "arg")
			case "new_value":
				valueArg = w.field(body, "arg")
			}
			continue
		}
		switch i {
		case 0:
			nameArg = a
		case 1:
			valueArg = a
		}
	}
	name, ok := w.literal(nameArg)
	if !ok {
		w.add(policy.Object{Kind: policy.KindSetting, Name: "*", Action: policy.ActionSet})
		return
	}
	value, valueOK := w.literal(valueArg)
	w.setting(strings.ToLower(name), value, valueOK)
}

// literal returns the value of a string constant, seen through casts.
func (w *walker) literal(v jval) (string, bool) {
	for range 8 {
		typ, body := w.nodeType(v)
		switch typ {
		case "A_Const":
			if s, ok := w.t.get(body, "sval"); ok {
				return w.t.getStr(s, "sval"), true
			}
			if w.t.getBool(body, "isnull") {
				return "", false
			}
			w.literalValues = true
			for _, c := range w.t.children(body) {
				if c.kind == jObject && c.n == 1 {
					// ival, fval, boolval: the one member holds the text.
					inner := w.t.vals[c.first]
					switch inner.kind {
					case jNumber, jString:
						return w.t.strOf(inner), true
					case jTrue:
						return "true", true
					}
				}
				if c.kind == jObject && c.n == 0 {
					return "0", true // ival 0 and boolval false are written as {}
				}
			}
			return "", false
		case "TypeCast":
			v = w.field(body, "arg")
		default:
			return "", false
		}
	}
	return "", false
}

// setting records a change of run-time parameter name (lower case) to
// value (when known). Changes that would make the server lex later queries
// differently from libpg_query are refused outright, see parserSafe.
func (w *walker) setting(name, value string, valueKnown bool) {
	switch name {
	case "role":
		w.add(policy.Object{Kind: policy.KindSetting, Name: "role", Action: policy.ActionSetRole})
		if valueKnown {
			w.add(policy.Object{Kind: policy.KindRole, Name: value, Action: policy.ActionSetRole})
		}
	case "session_authorization":
		w.add(policy.Object{Kind: policy.KindSetting, Name: "session_authorization", Action: policy.ActionSetSessionAuthorization})
		if valueKnown {
			w.add(policy.Object{Kind: policy.KindRole, Name: value, Action: policy.ActionSetSessionAuthorization})
		}
	case "default_transaction_read_only", "transaction_read_only":
		w.add(policy.Object{Kind: policy.KindSetting, Name: name, Action: policy.ActionSet})
		if valueKnown && parseBoolTrue(value) {
			w.readOnlyOn = true
		} else {
			w.readOnlyOff = true
		}
	default:
		w.add(policy.Object{Kind: policy.KindSetting, Name: name, Action: policy.ActionSet})
	}
	if !parserSafe(name, value, valueKnown) {
		w.unclassified("changing %s would make the server parse queries differently from the classifier", name)
	}
}

// parserSafe reports whether setting name to value leaves the server's lexer
// agreeing with libpg_query, which assumes standard_conforming_strings=on
// and UTF-8 text. With standard_conforming_strings off, 'a\' , $$' … $$ is
// one string to the server but a string and a dollar-quoted string to the
// classifier, so a function call could hide in between; a client encoding
// such as SJIS or GBK has multibyte characters whose second byte is a
// backslash, with the same effect in E” strings.
func parserSafe(name, value string, valueKnown bool) bool {
	switch name {
	case "standard_conforming_strings":
		return valueKnown && parseBoolTrue(value)
	case "client_encoding":
		if !valueKnown {
			return false
		}
		var b strings.Builder
		for _, r := range strings.ToLower(value) {
			if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
				b.WriteRune(r)
			}
		}
		enc := b.String()
		return enc == "utf8" || enc == "unicode"
	}
	return true
}

// parseBoolTrue reports whether PostgreSQL's parse_bool reads s as true.
func parseBoolTrue(s string) bool {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return false
	}
	switch {
	case strings.HasPrefix("true", s), strings.HasPrefix("yes", s):
		return true
	case s == "on" || s == "1":
		return true
	}
	return false
}

// columnRef looks for function calls written as attribute selection:
// PostgreSQL reads x.f as f(x) when x has no column f, so
// SELECT ('/etc/passwd'::text).pg_read_file reads a file. Without the catalog
// every x.f is ambiguous, so only names of categorised functions (the ones
// rules care about) are reported; calls of ordinary functions in this
// notation are not.
func (w *walker) columnRef(v jval) {
	for i, f := range w.t.children(w.field(v, "fields")) {
		if i == 0 {
			continue
		}
		if typ, body := w.nodeType(f); typ == "String" {
			w.projection(w.t.getStr(body, "sval"))
		}
	}
}

func (w *walker) indirection(v jval) {
	w.walkField("A_Indirection", v, "arg")
	for _, f := range w.t.children(w.field(v, "indirection")) {
		typ, body := w.nodeType(f)
		switch typ {
		case "String":
			w.projection(w.t.getStr(body, "sval"))
		case "A_Star":
		default:
			w.node(f)
		}
	}
}

func (w *walker) projection(name string) {
	if w.cats.of(name) != policy.CategoryNone {
		w.function([]string{name}, policy.ActionExecute)
	}
}

// sqlJSONFunctions maps the SQL/JSON syntax nodes of the PostgreSQL 17
// grammar to the function names an older server (15, 16) sees in the same
// text: there JSON_QUERY(…) is an ordinary call of whatever json_query the
// search path finds.
var sqlJSONFunctions = map[string]string{
	"JsonParseExpr":             "json",
	"JsonScalarExpr":            "json_scalar",
	"JsonSerializeExpr":         "json_serialize",
	"JsonObjectConstructor":     "json_object",
	"JsonArrayConstructor":      "json_array",
	"JsonArrayQueryConstructor": "json_array",
	"JsonObjectAgg":             "json_objectagg",
	"JsonArrayAgg":              "json_arrayagg",
	"JsonTable":                 "json_table",
	"JsonFuncExpr":              "", // by op, see sqlJSON
	// merge_action() outside MERGE … RETURNING: a PostgreSQL 16 or older
	// server calls a function of that name.
	"MergeSupportFunc": "merge_action",
}

func (w *walker) sqlJSON(typ, name string, v jval) {
	if typ == "JsonFuncExpr" {
		switch w.t.getStr(v, "op") {
		case "JSON_EXISTS_OP":
			name = "json_exists"
		case "JSON_QUERY_OP":
			name = "json_query"
		case "JSON_VALUE_OP":
			name = "json_value"
		default:
			name = "json_table"
		}
	}
	w.function([]string{name}, policy.ActionExecute)
}

// enterWith opens the CTE scope of a statement's WITH clause and walks the
// CTE bodies. PostgreSQL's rules: a CTE of a plain WITH sees the CTEs before
// it, not itself (WITH orders AS (SELECT * FROM orders) reads the table
// orders); under WITH RECURSIVE every CTE of the list is visible to all.
// Returns whether a scope was pushed.
func (w *walker) enterWith(stmt jval) bool {
	wc, ok := w.t.get(stmt, "withClause")
	if !ok {
		return false
	}
	recursive := w.t.getBool(wc, "recursive")
	ctes := w.t.children(w.field(wc, "ctes"))
	names := make([]string, 0, len(ctes))
	for _, c := range ctes {
		if typ, body := w.nodeType(c); typ == "CommonTableExpr" {
			names = append(names, w.t.getStr(body, "ctename"))
		}
	}
	w.scopes = append(w.scopes, nil)
	top := len(w.scopes) - 1
	if recursive {
		w.scopes[top] = names
	}
	for i, c := range ctes {
		if !recursive {
			w.scopes[top] = names[:min(i, len(names))]
		}
		w.node(c)
	}
	w.scopes[top] = names
	return true
}

func (w *walker) leaveWith(pushed bool) {
	if pushed {
		w.scopes = w.scopes[:len(w.scopes)-1]
	}
}

// noteMod remembers the strongest data-modifying action seen.
func (w *walker) noteMod(a policy.Action) {
	if modRank(a) > modRank(w.mods) {
		w.mods = a
	}
}

func modRank(a policy.Action) int {
	switch a {
	case policy.ActionInsert:
		return 1
	case policy.ActionUpdate:
		return 2
	case policy.ActionMerge:
		return 3
	case policy.ActionDelete:
		return 4
	}
	return 0
}

// query runs f for a query level: relations default to select inside it.
func (w *walker) query(stmt jval, f func()) {
	saved := w.relAct
	w.relAct = policy.ActionSelect
	pushed := w.enterWith(stmt)
	f()
	w.leaveWith(pushed)
	w.relAct = saved
}

func (w *walker) selectStmt(v jval) {
	w.query(v, func() {
		if into, ok := w.t.get(v, "intoClause"); ok {
			w.intoClause(into)
		}
		w.fields("SelectStmt", v, "withClause", "intoClause")
	})
}

// intoClause records the table SELECT INTO / CREATE TABLE AS creates.
func (w *walker) intoClause(into jval) {
	rel := w.field(into, "rel")
	name := createdName(w.t.getStr(rel, "schemaname"), w.t.getStr(rel, "relname"), w.t.getStr(rel, "relpersistence"))
	w.add(policy.Object{Kind: policy.KindTable, Name: name, Action: policy.ActionCreate})
	w.fields("IntoClause", into, "rel")
}

// target records the target table of a data-modifying statement.
func (w *walker) target(rel jval, act policy.Action) {
	name := w.relation(rel, act, false)
	// UPDATE pg_settings SET setting = … calls set_config through a rule.
	if name == "pg_catalog.pg_settings" && act != policy.ActionSelect {
		w.add(policy.Object{Kind: policy.KindSetting, Name: "*", Action: policy.ActionSet})
		w.add(policy.Object{Kind: policy.KindSetting, Name: "role", Action: policy.ActionSetRole})
	}
}

func (w *walker) hasList(v jval, key string) bool {
	c, ok := w.t.get(v, key)
	return ok && c.n > 0
}

func (w *walker) insertStmt(v jval) {
	w.query(v, func() {
		rel := w.field(v, "relation")
		w.noteMod(policy.ActionInsert)
		w.target(rel, policy.ActionInsert)
		if occ, ok := w.t.get(v, "onConflictClause"); ok && w.t.getStr(occ, "action") == "ONCONFLICT_UPDATE" {
			w.target(rel, policy.ActionUpdate)
		}
		if w.hasList(v, "returningList") {
			w.target(rel, policy.ActionSelect)
		}
		w.fields("InsertStmt", v, "withClause", "relation")
	})
}

func (w *walker) updateStmt(v jval) {
	w.query(v, func() {
		rel := w.field(v, "relation")
		w.noteMod(policy.ActionUpdate)
		w.target(rel, policy.ActionUpdate)
		if w.hasList(v, "returningList") {
			w.target(rel, policy.ActionSelect)
		}
		w.fields("UpdateStmt", v, "withClause", "relation")
	})
}

func (w *walker) deleteStmt(v jval) {
	w.query(v, func() {
		rel := w.field(v, "relation")
		w.noteMod(policy.ActionDelete)
		w.target(rel, policy.ActionDelete)
		if w.hasList(v, "returningList") {
			w.target(rel, policy.ActionSelect)
		}
		w.fields("DeleteStmt", v, "withClause", "relation")
	})
}

// mergeStmt records the target with merge and with the action of each WHEN
// clause, so that a rule against deletes on a table also sees MERGE … THEN
// DELETE.
func (w *walker) mergeStmt(v jval) {
	w.query(v, func() {
		rel := w.field(v, "relation")
		w.noteMod(policy.ActionMerge)
		w.target(rel, policy.ActionMerge)
		for _, c := range w.t.children(w.field(v, "mergeWhenClauses")) {
			_, body := w.nodeType(c)
			switch w.t.getStr(body, "commandType") {
			case "CMD_UPDATE":
				w.target(rel, policy.ActionUpdate)
			case "CMD_DELETE":
				w.target(rel, policy.ActionDelete)
			case "CMD_INSERT":
				w.target(rel, policy.ActionInsert)
			}
		}
		if w.hasList(v, "returningList") {
			w.target(rel, policy.ActionSelect)
		}
		w.fields("MergeStmt", v, "withClause", "relation")
	})
}

// whereClause reports whether a statement has a WHERE clause that is not a
// bare constant (WHERE true limits nothing). It is a hint for rules such as
// "no DELETE without WHERE", not a guarantee: WHERE id = id limits nothing
// either.
func (w *walker) whereClause(v jval) bool {
	c, ok := w.t.get(v, "whereClause")
	if !ok {
		return false
	}
	for range 8 {
		typ, body := w.nodeType(c)
		switch typ {
		case "A_Const":
			return false
		case "TypeCast":
			c = w.field(body, "arg")
		default:
			return true
		}
	}
	return true
}
