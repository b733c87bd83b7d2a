package postgres

import (
	"strconv"
	"strings"

	"github.com/interlockhq/interlock/engine/policy"
)

// This file maps DDL object references (an ObjectType plus the name node of
// DROP, COMMENT, ALTER … OWNER, GRANT …) onto policy objects. Relations,
// schemas, databases, functions and roles have kinds of their own; every
// other object is KindOther named "<kind>:<name>", e.g. "extension:dblink",
// "type:public.mood", "trigger:audit".

// objectKind returns the policy kind of a PostgreSQL ObjectType, and for
// KindOther the prefix of the name.
func objectKind(objtype string) (policy.ObjectKind, string) {
	switch objtype {
	case "OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_SEQUENCE", "OBJECT_FOREIGN_TABLE":
		return policy.KindTable, ""
	case "OBJECT_SCHEMA":
		return policy.KindSchema, ""
	case "OBJECT_DATABASE":
		return policy.KindDatabase, ""
	case "OBJECT_FUNCTION", "OBJECT_PROCEDURE", "OBJECT_ROUTINE", "OBJECT_AGGREGATE":
		return policy.KindFunction, ""
	case "OBJECT_ROLE":
		return policy.KindRole, ""
	}
	return policy.KindOther, strings.ToLower(strings.TrimPrefix(objtype, "OBJECT_"))
}

// globalObjects are object kinds that live outside schemas: their names are
// reported as written.
var globalObjects = map[string]bool{
	"access_method":  true,
	"event_trigger":  true,
	"extension":      true,
	"fdw":            true,
	"foreign_server": true,
	"language":       true,
	"largeobject":    true,
	"parameter_acl":  true,
	"publication":    true,
	"subscription":   true,
	"tablespace":     true,
	"cast":           true,
	"transform":      true,
	"user_mapping":   true,
}

// tableChildren are object kinds named by their table plus their own name
// (DROP TRIGGER t ON public.orders is the list [public, orders, t]).
var tableChildren = map[string]bool{
	"trigger":       true,
	"policy":        true,
	"rule":          true,
	"tabconstraint": true,
	"column":        true,
}

// ddlObject records the object named by node v (a Node wrapper or a bare
// message of a typed field) of type objtype with action act, and returns its
// name.
func (w *walker) ddlObject(objtype string, v jval, act policy.Action) string {
	kind, prefix := objectKind(objtype)
	parts := w.parts(v)
	if (prefix == "opclass" || prefix == "opfamily") && len(parts) > 1 {
		parts = parts[1:] // [access method, name…]
	}
	return w.ddlParts(kind, prefix, parts, act)
}

// ddlParts records an object from its name parts.
func (w *walker) ddlParts(kind policy.ObjectKind, prefix string, parts []string, act policy.Action) string {
	var name string
	switch kind {
	case policy.KindTable:
		name = objectName(parts)
	case policy.KindFunction:
		name = functionName(parts)
	case policy.KindSchema, policy.KindDatabase, policy.KindRole:
		name = strings.Join(parts, ".")
	default:
		switch {
		case globalObjects[prefix]:
			name = prefix + ":" + strings.Join(parts, ",")
		case tableChildren[prefix] && len(parts) > 1:
			table := objectName(parts[:len(parts)-1])
			w.add(policy.Object{Kind: policy.KindTable, Name: table, Action: act})
			name = prefix + ":" + parts[len(parts)-1]
		case prefix == "index":
			name = prefix + ":" + objectName(parts)
		default:
			name = prefix + ":" + otherName(parts)
		}
	}
	o := policy.Object{Kind: kind, Name: name, Action: act}
	if kind == policy.KindFunction {
		o.Category = w.cats.of(name)
	}
	w.add(o)
	return name
}

// createdObject records an object a CREATE statement makes: unqualified
// names land in public, not pg_catalog.
func (w *walker) createdObject(kind policy.ObjectKind, prefix string, parts []string, act policy.Action) {
	if len(parts) == 1 && (kind == policy.KindTable || kind == policy.KindFunction) {
		parts = []string{schemaPublic, parts[0]}
	}
	w.ddlParts(kind, prefix, parts, act)
}

// parts flattens a name node: a String, a List of Strings (qualified names),
// ObjectWithArgs, TypeName, RoleSpec, RangeVar, or a List of those (CAST
// (a AS b) is a list of two type names). Unknown shapes give "?".
func (w *walker) parts(v jval) []string {
	typ, body := w.nodeType(v)
	if typ == "" || nodeSchema[typ] == nil {
		// A bare message: guess its type from its members.
		switch {
		case w.has(v, "relname"):
			typ, body = "RangeVar", v
		case w.has(v, "objname"), w.has(v, "args_unspecified"):
			typ, body = "ObjectWithArgs", v
		case w.has(v, "roletype"):
			typ, body = "RoleSpec", v
		case w.has(v, "names"):
			typ, body = "TypeName", v
		case w.has(v, "sval"):
			typ = "sval" // a bare String message
		default:
			return []string{"?"}
		}
	}
	switch typ {
	case "String":
		return []string{w.t.getStr(body, "sval")}
	case "sval":
		return []string{w.t.getStr(v, "sval")}
	case "Integer":
		w.literalValues = true // LARGE OBJECT 1234
		return []string{strconv.Itoa(w.t.getInt(body, "ival"))}
	case "Float":
		w.literalValues = true
		return []string{w.t.getStr(body, "fval")}
	case "List":
		var out []string
		items := w.t.children(w.field(body, "items"))
		allStrings := true
		for _, it := range items {
			if t, _ := w.nodeType(it); t != "String" {
				allStrings = false
			}
		}
		for _, it := range items {
			p := w.parts(it)
			if allStrings {
				out = append(out, p...)
			} else {
				out = append(out, strings.Join(p, "."))
			}
		}
		return out
	case "ObjectWithArgs":
		return w.names(w.field(body, "objname"))
	case "TypeName":
		return w.names(w.field(body, "names"))
	case "RoleSpec":
		return []string{w.roleName(body)}
	case "RangeVar":
		var out []string
		if s := w.t.getStr(body, "schemaname"); s != "" {
			out = append(out, s)
		}
		return append(out, w.t.getStr(body, "relname"))
	}
	return []string{"?"}
}

func (w *walker) has(v jval, key string) bool {
	_, ok := w.t.get(v, key)
	return ok
}

// roleName names a RoleSpec (bare or wrapped).
func (w *walker) roleName(v jval) string {
	if typ, body := w.nodeType(v); typ == "RoleSpec" {
		v = body
	}
	switch w.t.getStr(v, "roletype") {
	case "ROLESPEC_CSTRING":
		return w.t.getStr(v, "rolename")
	case "ROLESPEC_CURRENT_ROLE":
		return "current_role"
	case "ROLESPEC_CURRENT_USER":
		return "current_user"
	case "ROLESPEC_SESSION_USER":
		return "session_user"
	case "ROLESPEC_PUBLIC":
		return "public"
	}
	return "?"
}

// roles records every RoleSpec of a list with action act.
func (w *walker) roles(list jval, act policy.Action) {
	for _, r := range w.t.children(list) {
		w.add(policy.Object{Kind: policy.KindRole, Name: w.roleName(r), Action: act})
	}
}

// objTag turns an ObjectType into the words of a command tag.
func objTag(objtype string) string {
	switch objtype {
	case "OBJECT_MATVIEW":
		return "MATERIALIZED VIEW"
	case "OBJECT_FDW":
		return "FOREIGN DATA WRAPPER"
	case "OBJECT_FOREIGN_SERVER":
		return "SERVER"
	case "OBJECT_STATISTIC_EXT":
		return "STATISTICS"
	case "OBJECT_TSCONFIGURATION":
		return "TEXT SEARCH CONFIGURATION"
	case "OBJECT_TSDICTIONARY":
		return "TEXT SEARCH DICTIONARY"
	case "OBJECT_TSPARSER":
		return "TEXT SEARCH PARSER"
	case "OBJECT_TSTEMPLATE":
		return "TEXT SEARCH TEMPLATE"
	case "OBJECT_OPCLASS":
		return "OPERATOR CLASS"
	case "OBJECT_OPFAMILY":
		return "OPERATOR FAMILY"
	case "OBJECT_TABCONSTRAINT", "OBJECT_DOMCONSTRAINT":
		return "CONSTRAINT"
	case "OBJECT_LARGEOBJECT":
		return "LARGE OBJECT"
	}
	return strings.ReplaceAll(strings.TrimPrefix(objtype, "OBJECT_"), "_", " ")
}

// namedDDL describes a DDL statement that only names one object: the kind
// comes from objtype, the name from member key (a string, a name list or a
// name message). Everything else in the statement is walked.
type namedDDL struct {
	act     policy.Action
	objtype string
	key     string
}

var namedDDLs = map[string]namedDDL{
	"CreateExtensionStmt":        {policy.ActionCreate, "OBJECT_EXTENSION", "extname"},
	"AlterExtensionStmt":         {policy.ActionAlter, "OBJECT_EXTENSION", "extname"},
	"CreateFdwStmt":              {policy.ActionCreate, "OBJECT_FDW", "fdwname"},
	"AlterFdwStmt":               {policy.ActionAlter, "OBJECT_FDW", "fdwname"},
	"CreateForeignServerStmt":    {policy.ActionCreate, "OBJECT_FOREIGN_SERVER", "servername"},
	"AlterForeignServerStmt":     {policy.ActionAlter, "OBJECT_FOREIGN_SERVER", "servername"},
	"DropTableSpaceStmt":         {policy.ActionDrop, "OBJECT_TABLESPACE", "tablespacename"},
	"AlterTableSpaceOptionsStmt": {policy.ActionAlter, "OBJECT_TABLESPACE", "tablespacename"},
	"AlterEventTrigStmt":         {policy.ActionAlter, "OBJECT_EVENT_TRIGGER", "trigname"},
	"CreateAmStmt":               {policy.ActionCreate, "OBJECT_ACCESS_METHOD", "amname"},
	"AlterCollationStmt":         {policy.ActionAlter, "OBJECT_COLLATION", "collname"},
	"AlterDomainStmt":            {policy.ActionAlter, "OBJECT_DOMAIN", "typeName"},
	"AlterEnumStmt":              {policy.ActionAlter, "OBJECT_TYPE", "typeName"},
	"AlterTypeStmt":              {policy.ActionAlter, "OBJECT_TYPE", "typeName"},
	"CreateEnumStmt":             {policy.ActionCreate, "OBJECT_TYPE", "typeName"},
	"CreateRangeStmt":            {policy.ActionCreate, "OBJECT_TYPE", "typeName"},
	"CreateDomainStmt":           {policy.ActionCreate, "OBJECT_DOMAIN", "domainname"},
	"CreateConversionStmt":       {policy.ActionCreate, "OBJECT_CONVERSION", "conversion_name"},
	"CreateOpClassStmt":          {policy.ActionCreate, "OBJECT_OPCLASS", "opclassname"},
	"CreateOpFamilyStmt":         {policy.ActionCreate, "OBJECT_OPFAMILY", "opfamilyname"},
	"AlterOpFamilyStmt":          {policy.ActionAlter, "OBJECT_OPFAMILY", "opfamilyname"},
	"CreateStatsStmt":            {policy.ActionCreate, "OBJECT_STATISTIC_EXT", "defnames"},
	"AlterStatsStmt":             {policy.ActionAlter, "OBJECT_STATISTIC_EXT", "defnames"},
	"AlterTSDictionaryStmt":      {policy.ActionAlter, "OBJECT_TSDICTIONARY", "dictname"},
	"AlterTSConfigurationStmt":   {policy.ActionAlter, "OBJECT_TSCONFIGURATION", "cfgname"},
	"CreatePublicationStmt":      {policy.ActionCreate, "OBJECT_PUBLICATION", "pubname"},
	"AlterPublicationStmt":       {policy.ActionAlter, "OBJECT_PUBLICATION", "pubname"},
	"CreateSubscriptionStmt":     {policy.ActionCreate, "OBJECT_SUBSCRIPTION", "subname"},
	"AlterSubscriptionStmt":      {policy.ActionAlter, "OBJECT_SUBSCRIPTION", "subname"},
	"DropSubscriptionStmt":       {policy.ActionDrop, "OBJECT_SUBSCRIPTION", "subname"},
	"CreatePLangStmt":            {policy.ActionCreate, "OBJECT_LANGUAGE", "plname"},
	"AlterOperatorStmt":          {policy.ActionAlter, "OBJECT_OPERATOR", "opername"},
}

var verbs = map[policy.Action]string{
	policy.ActionCreate:  "CREATE",
	policy.ActionAlter:   "ALTER",
	policy.ActionDrop:    "DROP",
	policy.ActionComment: "COMMENT",
}

// nameParts returns the name in member key of v: a plain string, a list of
// String nodes, or a name message.
func (w *walker) nameParts(v jval, key string) []string {
	c, ok := w.t.get(v, key)
	if !ok {
		return []string{"?"}
	}
	switch c.kind {
	case jString:
		return []string{w.t.strOf(c)}
	case jArray:
		return w.names(c)
	case jObject:
		return w.parts(c)
	}
	return []string{"?"}
}

// ddl classifies the DDL statements; it returns false for a type it does
// not know.
func (w *walker) ddl(typ string, v jval, st *Statement) bool {
	op := &st.Op
	if d, ok := namedDDLs[typ]; ok {
		op.Action, st.Tag = d.act, verbs[d.act]+" "+objTag(d.objtype)
		kind, prefix := objectKind(d.objtype)
		w.ddlParts(kind, prefix, w.nameParts(v, d.key), d.act)
		w.utility(typ, v, d.act, d.key)
		return true
	}
	create, alter := policy.ActionCreate, policy.ActionAlter
	switch typ {
	case "CreateStmt":
		op.Action, st.Tag = create, "CREATE TABLE"
		w.createdRelation(w.field(v, "relation"), create)
		w.utility(typ, v, create, "relation")
	case "CreateForeignTableStmt":
		op.Action, st.Tag = create, "CREATE FOREIGN TABLE"
		base := w.field(v, "base")
		w.createdRelation(w.field(base, "relation"), create)
		w.ddlParts(policy.KindOther, "foreign_server", []string{w.t.getStr(v, "servername")}, create)
		w.utility("CreateStmt", base, create, "relation")
		w.utility(typ, v, create, "base")
	case "CreateTableAsStmt":
		op.Action, st.Tag = create, "CREATE TABLE AS"
		if w.t.getStr(v, "objtype") == "OBJECT_MATVIEW" {
			st.Tag = "CREATE MATERIALIZED VIEW"
		} else if w.t.getBool(v, "is_select_into") {
			st.Tag = "SELECT INTO"
		}
		if qt, _ := w.nodeType(w.field(v, "query")); qt == "ExecuteStmt" {
			w.unclassified("CREATE TABLE AS EXECUTE is not supported")
			return true
		}
		w.intoClause(w.field(v, "into"))
		w.query(v, func() { w.walkField(typ, v, "query") })
	case "ViewStmt":
		op.Action, st.Tag = create, "CREATE VIEW"
		view := w.field(v, "view")
		w.createdRelation(view, create)
		if w.t.getBool(v, "replace") {
			// CREATE OR REPLACE changes what an existing view shows.
			w.relation(view, alter, false)
		}
		w.query(v, func() { w.walkField(typ, v, "query") })
		w.utility(typ, v, create, "view", "query")
	case "IndexStmt":
		op.Action, st.Tag = create, "CREATE INDEX"
		table := w.relation(w.field(v, "relation"), create, false)
		// An unnamed index gets a name the server makes up: "?" here, which
		// only a rule for every index of the schema covers.
		idx := w.t.getStr(v, "idxname")
		if idx == "" {
			idx = "?"
		}
		schema := schemaPublic
		if i := strings.LastIndexByte(table, '.'); i > 0 && !strings.Contains(table, `"`) {
			schema = table[:i]
		}
		w.add(policy.Object{Kind: policy.KindOther, Name: "index:" + qualify(schema, idx), Action: create})
		w.utility(typ, v, create, "relation")
	case "CreateSeqStmt":
		op.Action, st.Tag = create, "CREATE SEQUENCE"
		w.createdRelation(w.field(v, "sequence"), create)
		w.utility(typ, v, create, "sequence")
	case "AlterSeqStmt":
		op.Action, st.Tag = alter, "ALTER SEQUENCE"
		w.relation(w.field(v, "sequence"), alter, false)
		w.utility(typ, v, alter, "sequence")
	case "CreateSchemaStmt":
		op.Action, st.Tag = create, "CREATE SCHEMA"
		if w.hasList(v, "schemaElts") {
			w.unclassified("CREATE SCHEMA with schema elements is not supported: create the schema, then its objects")
			return true
		}
		name := w.t.getStr(v, "schemaname")
		if name == "" {
			name = w.roleName(w.field(v, "authrole")) // CREATE SCHEMA AUTHORIZATION r names it r
		}
		w.add(policy.Object{Kind: policy.KindSchema, Name: name, Action: create})
	case "CreatedbStmt":
		op.Action, st.Tag = create, "CREATE DATABASE"
		w.add(policy.Object{Kind: policy.KindDatabase, Name: w.t.getStr(v, "dbname"), Action: create})
		// CREATE DATABASE … TEMPLATE t copies every table of t.
		for _, o := range w.t.children(w.field(v, "options")) {
			_, d := w.nodeType(o)
			if w.t.getStr(d, "defname") == "template" {
				if t, ok := w.defArg(w.field(d, "arg")); ok {
					w.add(policy.Object{Kind: policy.KindDatabase, Name: t, Action: policy.ActionSelect})
				}
			}
		}
	case "DropdbStmt":
		op.Action, st.Tag = policy.ActionDrop, "DROP DATABASE"
		w.add(policy.Object{Kind: policy.KindDatabase, Name: w.t.getStr(v, "dbname"), Action: op.Action})
	case "AlterDatabaseStmt", "AlterDatabaseRefreshCollStmt":
		op.Action, st.Tag = alter, "ALTER DATABASE"
		w.add(policy.Object{Kind: policy.KindDatabase, Name: w.t.getStr(v, "dbname"), Action: alter})
		w.utility(typ, v, alter)
	case "AlterDatabaseSetStmt":
		op.Action, st.Tag = alter, "ALTER DATABASE"
		w.add(policy.Object{Kind: policy.KindDatabase, Name: w.t.getStr(v, "dbname"), Action: alter})
		w.settingDefault(w.field(v, "setstmt"))
	case "CreateFunctionStmt":
		op.Action, st.Tag = create, "CREATE FUNCTION"
		if w.t.getBool(v, "is_procedure") {
			st.Tag = "CREATE PROCEDURE"
		}
		parts := w.names(w.field(v, "funcname"))
		w.createdObject(policy.KindFunction, "", parts, create)
		if w.t.getBool(v, "replace") {
			w.createdObject(policy.KindFunction, "", parts, alter)
		}
		w.functionLanguage(v, create)
		// A BEGIN ATOMIC body is parsed: its statements are walked like
		// any other. A string body (AS $$ … $$) is not examined.
		w.utility(typ, v, create, "funcname")
	case "AlterFunctionStmt":
		op.Action, st.Tag = alter, "ALTER FUNCTION"
		w.ddlObject(w.t.getStr(v, "objtype"), w.field(v, "func"), alter)
		w.utility(typ, v, alter, "func")
	case "DropStmt":
		op.Action = policy.ActionDrop
		objtype := w.t.getStr(v, "removeType")
		st.Tag = "DROP " + objTag(objtype)
		for _, o := range w.t.children(w.field(v, "objects")) {
			w.ddlObject(objtype, o, op.Action)
		}
	case "CommentStmt", "SecLabelStmt":
		op.Action, st.Tag = policy.ActionComment, "COMMENT"
		if typ == "SecLabelStmt" {
			st.Tag = "SECURITY LABEL"
		}
		w.ddlObject(w.t.getStr(v, "objtype"), w.field(v, "object"), op.Action)
	case "AlterTableStmt":
		w.alterTable(v, st)
	case "AlterTableMoveAllStmt":
		op.Action, st.Tag = alter, "ALTER TABLE"
		w.ddlParts(policy.KindOther, "tablespace", []string{w.t.getStr(v, "orig_tablespacename")}, alter)
		w.ddlParts(policy.KindOther, "tablespace", []string{w.t.getStr(v, "new_tablespacename")}, alter)
		w.roles(w.field(v, "roles"), alter)
	case "RenameStmt":
		w.renameStmt(v, st)
	case "AlterObjectSchemaStmt":
		op.Action = alter
		objtype := w.t.getStr(v, "objectType")
		st.Tag = "ALTER " + objTag(objtype)
		parts := w.alteredObject(v, objtype, alter)
		// The object reappears under the new schema.
		kind, prefix := objectKind(objtype)
		w.ddlParts(kind, prefix, []string{w.t.getStr(v, "newschema"), parts[len(parts)-1]}, create)
		w.add(policy.Object{Kind: policy.KindSchema, Name: w.t.getStr(v, "newschema"), Action: alter})
	case "AlterOwnerStmt":
		op.Action = alter
		objtype := w.t.getStr(v, "objectType")
		st.Tag = "ALTER " + objTag(objtype)
		w.alteredObject(v, objtype, alter)
		// The new owner holds every privilege on the object.
		w.add(policy.Object{Kind: policy.KindRole, Name: w.roleName(w.field(v, "newowner")), Action: policy.ActionGrant})
	case "AlterObjectDependsStmt":
		op.Action = alter
		objtype := w.t.getStr(v, "objectType")
		st.Tag = "ALTER " + objTag(objtype)
		w.alteredObject(v, objtype, alter)
		w.ddlParts(policy.KindOther, "extension", w.nameParts(v, "extname"), alter)
	case "AlterExtensionContentsStmt":
		op.Action, st.Tag = alter, "ALTER EXTENSION"
		w.ddlParts(policy.KindOther, "extension", []string{w.t.getStr(v, "extname")}, alter)
		w.ddlObject(w.t.getStr(v, "objtype"), w.field(v, "object"), alter)
	case "DefineStmt":
		w.defineStmt(v, st)
	case "CompositeTypeStmt":
		op.Action, st.Tag = create, "CREATE TYPE"
		w.createdObject(policy.KindOther, "type", w.parts(w.field(v, "typevar")), create)
		w.utility(typ, v, create, "typevar")
	case "CreatePolicyStmt", "AlterPolicyStmt":
		op.Action = pick(typ == "CreatePolicyStmt", create, alter)
		st.Tag = verbs[op.Action] + " POLICY"
		w.add(policy.Object{Kind: policy.KindOther, Name: "policy:" + w.t.getStr(v, "policy_name"), Action: op.Action})
		w.roles(w.field(v, "roles"), op.Action)
		w.utility(typ, v, op.Action, "roles")
	case "CreateTrigStmt":
		op.Action, st.Tag = create, "CREATE TRIGGER"
		w.add(policy.Object{Kind: policy.KindOther, Name: "trigger:" + w.t.getStr(v, "trigname"), Action: create})
		if w.t.getBool(v, "replace") {
			w.add(policy.Object{Kind: policy.KindOther, Name: "trigger:" + w.t.getStr(v, "trigname"), Action: alter})
		}
		// The trigger function runs on every matching row from now on.
		w.function(w.names(w.field(v, "funcname")), policy.ActionExecute)
		if w.hasList(v, "args") {
			// Integer arguments arrive as String nodes (the grammar prints
			// them), out of sight of the checks on Integer nodes: should
			// anything ever read them, the result must not be reused for
			// other integers.
			w.literalValues = true
		}
		w.utility(typ, v, create, "funcname")
	case "CreateEventTrigStmt":
		op.Action, st.Tag = create, "CREATE EVENT TRIGGER"
		w.ddlParts(policy.KindOther, "event_trigger", []string{w.t.getStr(v, "trigname")}, create)
		w.function(w.names(w.field(v, "funcname")), policy.ActionExecute)
		w.utility(typ, v, create, "funcname")
	case "RuleStmt":
		op.Action, st.Tag = create, "CREATE RULE"
		w.add(policy.Object{Kind: policy.KindOther, Name: "rule:" + w.t.getStr(v, "rulename"), Action: create})
		if w.t.getBool(v, "replace") {
			w.add(policy.Object{Kind: policy.KindOther, Name: "rule:" + w.t.getStr(v, "rulename"), Action: alter})
		}
		w.utility(typ, v, create)
	case "CreateCastStmt":
		op.Action, st.Tag = create, "CREATE CAST"
		name := strings.Join(w.parts(w.field(v, "sourcetype")), ".") + "," + strings.Join(w.parts(w.field(v, "targettype")), ".")
		w.ddlParts(policy.KindOther, "cast", []string{name}, create)
		if f, ok := w.t.get(v, "func"); ok {
			w.function(w.parts(f), policy.ActionExecute)
		}
	case "CreateTransformStmt":
		op.Action, st.Tag = create, "CREATE TRANSFORM"
		name := strings.Join(w.parts(w.field(v, "type_name")), ".") + "," + w.t.getStr(v, "lang")
		w.ddlParts(policy.KindOther, "transform", []string{name}, create)
		for _, k := range []string{"fromsql", "tosql"} {
			if f, ok := w.t.get(v, k); ok {
				w.function(w.parts(f), policy.ActionExecute)
			}
		}
	case "CreateUserMappingStmt", "AlterUserMappingStmt", "DropUserMappingStmt":
		op.Action = map[string]policy.Action{"CreateUserMappingStmt": create, "AlterUserMappingStmt": alter, "DropUserMappingStmt": policy.ActionDrop}[typ]
		st.Tag = verbs[op.Action] + " USER MAPPING"
		name := w.roleName(w.field(v, "user")) + "@" + w.t.getStr(v, "servername")
		w.ddlParts(policy.KindOther, "user_mapping", []string{name}, op.Action)
	case "CreateTableSpaceStmt":
		op.Action, st.Tag = create, "CREATE TABLESPACE"
		w.ddlParts(policy.KindOther, "tablespace", []string{w.t.getStr(v, "tablespacename")}, create)
		// The server writes into this directory.
		w.add(policy.Object{Kind: policy.KindPath, Name: w.t.getStr(v, "location"), Action: create})
	default:
		return false
	}
	return true
}

// createdRelation records the relation a CREATE makes.
func (w *walker) createdRelation(rv jval, act policy.Action) {
	name := createdName(w.t.getStr(rv, "schemaname"), w.t.getStr(rv, "relname"), w.t.getStr(rv, "relpersistence"))
	w.add(policy.Object{Kind: policy.KindTable, Name: name, Action: act})
}

// alteredObject records the object of ALTER … SET SCHEMA / OWNER TO /
// DEPENDS ON, named by relation (relations) or object (everything else), and
// returns its name parts.
func (w *walker) alteredObject(v jval, objtype string, act policy.Action) []string {
	var target jval
	if rel, ok := w.t.get(v, "relation"); ok {
		target = rel
	} else {
		target = w.field(v, "object")
	}
	parts := w.parts(target)
	w.ddlObject(objtype, target, act)
	if len(parts) == 0 {
		parts = []string{"?"}
	}
	return parts
}

func (w *walker) alterTable(v jval, st *Statement) {
	op := &st.Op
	op.Action = policy.ActionAlter
	objtype := w.t.getStr(v, "objtype")
	st.Tag = "ALTER " + objTag(objtype)
	rel := w.field(v, "relation")
	switch objtype {
	case "OBJECT_INDEX":
		w.ddlParts(policy.KindOther, "index", w.parts(rel), op.Action)
	case "OBJECT_TYPE":
		w.ddlParts(policy.KindOther, "type", w.parts(rel), op.Action)
	default:
		w.relation(rel, op.Action, false)
	}
	for _, c := range w.t.children(w.field(v, "cmds")) {
		_, cmd := w.nodeType(c)
		if w.t.getStr(cmd, "subtype") == "AT_ChangeOwner" {
			w.add(policy.Object{Kind: policy.KindRole, Name: w.roleName(w.field(cmd, "newowner")), Action: policy.ActionGrant})
		}
	}
	w.utility("AlterTableStmt", v, op.Action, "relation")
}

// renameStmt classifies ALTER … RENAME: the old name is altered and the new
// name appears (created), so that renaming a forbidden table to an allowed
// name is visible as both.
func (w *walker) renameStmt(v jval, st *Statement) {
	op := &st.Op
	op.Action = policy.ActionAlter
	rt := w.t.getStr(v, "renameType")
	st.Tag = "ALTER " + objTag(rt)
	newname := w.t.getStr(v, "newname")
	switch rt {
	case "OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_SEQUENCE", "OBJECT_FOREIGN_TABLE", "OBJECT_INDEX":
		parts := w.parts(w.field(v, "relation"))
		w.ddlObject(rt, w.field(v, "relation"), op.Action)
		kind, prefix := objectKind(rt)
		parts[len(parts)-1] = newname
		if len(parts) == 1 {
			parts = []string{schemaPublic, newname}
		}
		w.ddlParts(kind, prefix, parts, policy.ActionCreate)
	case "OBJECT_COLUMN", "OBJECT_TABCONSTRAINT", "OBJECT_TRIGGER", "OBJECT_POLICY", "OBJECT_RULE":
		w.relation(w.field(v, "relation"), op.Action, false)
	case "OBJECT_ATTRIBUTE":
		w.ddlParts(policy.KindOther, "type", w.parts(w.field(v, "relation")), op.Action)
	case "OBJECT_ROLE":
		op.Action, st.Tag = policy.ActionAlterRole, "ALTER ROLE"
		w.add(policy.Object{Kind: policy.KindRole, Name: w.t.getStr(v, "subname"), Action: op.Action})
		w.add(policy.Object{Kind: policy.KindRole, Name: newname, Action: policy.ActionCreateRole})
	case "OBJECT_DATABASE", "OBJECT_SCHEMA":
		kind, _ := objectKind(rt)
		w.add(policy.Object{Kind: kind, Name: w.t.getStr(v, "subname"), Action: op.Action})
		w.add(policy.Object{Kind: kind, Name: newname, Action: policy.ActionCreate})
	default:
		obj, ok := w.t.get(v, "object")
		if !ok {
			// Global objects (tablespaces, languages, …) are named by subname.
			kind, prefix := objectKind(rt)
			w.ddlParts(kind, prefix, []string{w.t.getStr(v, "subname")}, op.Action)
			w.ddlParts(kind, prefix, []string{newname}, policy.ActionCreate)
			return
		}
		parts := w.parts(obj)
		w.ddlObject(rt, obj, op.Action)
		kind, prefix := objectKind(rt)
		if len(parts) > 0 {
			parts[len(parts)-1] = newname
		}
		w.ddlParts(kind, prefix, parts, policy.ActionCreate)
	}
}

// aggregateFunctions are DefineStmt options naming functions that the new
// aggregate or operator will call.
var aggregateFunctions = map[string]bool{
	"sfunc": true, "finalfunc": true, "combinefunc": true, "serialfunc": true,
	"deserialfunc": true, "msfunc": true, "minvfunc": true, "mfinalfunc": true,
	"function": true, "procedure": true, "restrict": true, "join": true,
	"input": true, "output": true, "receive": true, "send": true,
	"typmod_in": true, "typmod_out": true, "analyze": true, "subscript": true,
}

// defineStmt classifies CREATE AGGREGATE/OPERATOR/TYPE/TEXT SEARCH …/
// COLLATION.
func (w *walker) defineStmt(v jval, st *Statement) {
	op := &st.Op
	kindName := w.t.getStr(v, "kind")
	op.Action, st.Tag = policy.ActionCreate, "CREATE "+objTag(kindName)
	kind, prefix := objectKind(kindName)
	parts := w.names(w.field(v, "defnames"))
	w.createdObject(kind, prefix, parts, policy.ActionCreate)
	if w.t.getBool(v, "replace") {
		w.createdObject(kind, prefix, parts, policy.ActionAlter)
	}
	for _, o := range w.t.children(w.field(v, "definition")) {
		_, d := w.nodeType(o)
		if aggregateFunctions[strings.ToLower(w.t.getStr(d, "defname"))] {
			if arg, ok := w.t.get(d, "arg"); ok {
				w.function(w.parts(arg), policy.ActionExecute)
			}
		}
	}
	w.utility("DefineStmt", v, policy.ActionCreate, "defnames", "definition")
}

// functionLanguage records the language of CREATE FUNCTION/PROCEDURE as
// "language:<name>", so that rules can allow sql and plpgsql but not
// untrusted languages, and for LANGUAGE C the shared library the server
// will load as a path.
func (w *walker) functionLanguage(v jval, act policy.Action) {
	lang := ""
	var as []string
	for _, o := range w.t.children(w.field(v, "options")) {
		_, d := w.nodeType(o)
		switch w.t.getStr(d, "defname") {
		case "language":
			lang, _ = w.defArg(w.field(d, "arg"))
		case "as":
			as = w.parts(w.field(d, "arg"))
		}
	}
	if lang == "" {
		if !w.has(v, "sql_body") {
			return // the server rejects a function without a language
		}
		lang = "sql"
	}
	lang = strings.ToLower(lang)
	w.add(policy.Object{Kind: policy.KindOther, Name: "language:" + lang, Action: act})
	if lang == "c" && len(as) > 0 {
		w.add(policy.Object{Kind: policy.KindPath, Name: as[0], Action: act})
	}
}
