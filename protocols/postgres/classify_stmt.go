package postgres

import (
	"strconv"
	"strings"

	"github.com/interlockhq/interlock/engine/policy"
)

// statement classifies one statement node into st: the statement's action,
// tag and session facts here, its objects through the walker. Every
// statement type is listed explicitly; the default is unclassified, so a
// statement type added by a future parser is blocked until someone maps it.
//
// On purpose left unclassified (always blocked, whatever the policy):
// ALTER SYSTEM (rewrites the server configuration), LOAD (loads a shared
// library into the backend), IMPORT FOREIGN SCHEMA (creates tables named by
// a remote server), CREATE SCHEMA with embedded elements (their unqualified
// names resolve inside the new schema first), CREATE TABLE AS EXECUTE, and
// settings that would make the server lex differently from the classifier
// (see parserSafe).
func (w *walker) statement(typ string, v jval, st *Statement) {
	op := &st.Op
	switch typ {
	// Queries and data modification.
	case "SelectStmt":
		op.Action, st.Tag = policy.ActionSelect, "SELECT"
		if w.has(v, "intoClause") {
			op.Action, st.Tag = policy.ActionCreate, "SELECT INTO"
		}
		op.Attrs.HasWhere = w.whereClause(v)
		w.selectStmt(v)
		w.promote(op)
	case "InsertStmt":
		op.Action, st.Tag = policy.ActionInsert, "INSERT"
		w.insertStmt(v)
		w.promote(op)
	case "UpdateStmt":
		op.Action, st.Tag = policy.ActionUpdate, "UPDATE"
		op.Attrs.HasWhere = w.whereClause(v)
		w.updateStmt(v)
		w.promote(op)
	case "DeleteStmt":
		op.Action, st.Tag = policy.ActionDelete, "DELETE"
		op.Attrs.HasWhere = w.whereClause(v)
		w.deleteStmt(v)
		w.promote(op)
	case "MergeStmt":
		op.Action, st.Tag = policy.ActionMerge, "MERGE"
		w.mergeStmt(v)
		w.promote(op)
	case "TruncateStmt":
		op.Action, st.Tag = policy.ActionTruncate, "TRUNCATE TABLE"
		w.utility(typ, v, op.Action)
	case "LockStmt":
		op.Action, st.Tag = policy.ActionLock, "LOCK TABLE"
		w.utility(typ, v, op.Action)
	case "CopyStmt":
		w.copyStmt(v, st)

	// Statements that wrap another.
	case "ExplainStmt":
		w.explainStmt(v, st)
	case "PrepareStmt":
		st.Prepare = w.t.getStr(v, "name")
		w.inner(v, "query", st)
		st.Tag = "PREPARE"
	case "ExecuteStmt":
		st.Execute, st.Tag = w.t.getStr(v, "name"), "EXECUTE"
		w.walkField(typ, v, "params")
	case "DeallocateStmt":
		op.Action, st.Tag = policy.ActionDeallocate, "DEALLOCATE"
		st.Deallocate = w.t.getStr(v, "name")
		if w.t.getBool(v, "isall") || st.Deallocate == "" {
			st.Deallocate, st.Tag = "*", "DEALLOCATE ALL"
		}
	case "DeclareCursorStmt":
		w.inner(v, "query", st)
		st.Tag = "DECLARE CURSOR"
	case "FetchStmt":
		op.Action, st.Tag = policy.ActionFetch, "FETCH"
		if w.t.getBool(v, "ismove") {
			st.Tag = "MOVE"
		}
	case "ClosePortalStmt":
		op.Action, st.Tag = policy.ActionFetch, "CLOSE CURSOR"

	// Session.
	case "VariableSetStmt":
		w.variableSet(v, st)
	case "VariableShowStmt":
		op.Action, st.Tag = policy.ActionShow, "SHOW"
		name := strings.ToLower(w.t.getStr(v, "name"))
		if name == "all" {
			name = "*"
		}
		w.add(policy.Object{Kind: policy.KindSetting, Name: name, Action: policy.ActionShow})
	case "ConstraintsSetStmt":
		op.Action, st.Tag = policy.ActionSet, "SET CONSTRAINTS"
		w.add(policy.Object{Kind: policy.KindSetting, Name: "constraints", Action: policy.ActionSet})
	case "DiscardStmt":
		w.discardStmt(v, st)
	case "ListenStmt":
		op.Action, st.Tag = policy.ActionListen, "LISTEN"
		w.channel(w.t.getStr(v, "conditionname"), op.Action)
	case "UnlistenStmt":
		op.Action, st.Tag = policy.ActionListen, "UNLISTEN"
		w.channel(w.t.getStr(v, "conditionname"), op.Action)
	case "NotifyStmt":
		op.Action, st.Tag = policy.ActionNotify, "NOTIFY"
		w.channel(w.t.getStr(v, "conditionname"), op.Action)

	// Transactions.
	case "TransactionStmt":
		w.transactionStmt(v, st)

	// Procedural.
	case "DoStmt":
		// The body is not examined: DO is blocked unless a rule allows it.
		// Its language is reported (plpgsql unless given) so that a rule
		// can tell PL/pgSQL from an untrusted language.
		op.Action, st.Tag = policy.ActionDo, "DO"
		lang := "plpgsql"
		for _, o := range w.t.children(w.field(v, "args")) {
			_, d := w.nodeType(o)
			if w.t.getStr(d, "defname") == "language" {
				lang, _ = w.defArg(w.field(d, "arg"))
			}
		}
		w.add(policy.Object{Kind: policy.KindOther, Name: "language:" + strings.ToLower(lang), Action: op.Action})
	case "CallStmt":
		op.Action, st.Tag = policy.ActionCall, "CALL"
		w.funcCall(w.field(v, "funccall"), policy.ActionCall)

	// Maintenance.
	case "VacuumStmt":
		op.Action, st.Tag = policy.ActionAnalyze, "ANALYZE"
		if w.t.getBool(v, "is_vacuumcmd") {
			op.Action, st.Tag = policy.ActionVacuum, "VACUUM"
		}
		w.allTablesUnless(v, "rels", op.Action)
		w.utility(typ, v, op.Action)
	case "ClusterStmt":
		op.Action, st.Tag = policy.ActionCluster, "CLUSTER"
		w.allTablesUnless(v, "relation", op.Action)
		w.utility(typ, v, op.Action)
	case "ReindexStmt":
		w.reindexStmt(v, st)
	case "RefreshMatViewStmt":
		op.Action, st.Tag = policy.ActionRefresh, "REFRESH MATERIALIZED VIEW"
		w.utility(typ, v, op.Action)
	case "CheckPointStmt":
		op.Action, st.Tag = policy.ActionCheckpoint, "CHECKPOINT"

	// Privileges and roles.
	case "GrantStmt":
		w.grantStmt(v, st)
	case "GrantRoleStmt":
		op.Action, st.Tag = policy.ActionGrant, "GRANT ROLE"
		if !w.t.getBool(v, "is_grant") {
			op.Action, st.Tag = policy.ActionRevoke, "REVOKE ROLE"
		}
		for _, r := range w.t.children(w.field(v, "granted_roles")) {
			_, body := w.nodeType(r)
			w.add(policy.Object{Kind: policy.KindRole, Name: w.t.getStr(body, "priv_name"), Action: op.Action})
		}
		w.roles(w.field(v, "grantee_roles"), op.Action)
		if g, ok := w.t.get(v, "grantor"); ok {
			w.add(policy.Object{Kind: policy.KindRole, Name: w.roleName(g), Action: op.Action})
		}
	case "AlterDefaultPrivilegesStmt":
		w.defaultPrivileges(v, st)
	case "CreateRoleStmt":
		op.Action, st.Tag = policy.ActionCreateRole, "CREATE ROLE"
		w.add(policy.Object{Kind: policy.KindRole, Name: w.t.getStr(v, "role"), Action: op.Action})
		w.roleOptions(v, policy.ActionGrant)
	case "AlterRoleStmt":
		op.Action, st.Tag = policy.ActionAlterRole, "ALTER ROLE"
		w.add(policy.Object{Kind: policy.KindRole, Name: w.roleName(w.field(v, "role")), Action: op.Action})
		member := policy.ActionGrant
		if w.t.getInt(v, "action") < 0 {
			member = policy.ActionRevoke // ALTER GROUP … DROP USER
		}
		w.roleOptions(v, member)
	case "AlterRoleSetStmt":
		op.Action, st.Tag = policy.ActionAlterRole, "ALTER ROLE"
		role := "*" // ALTER ROLE ALL SET
		if r, ok := w.t.get(v, "role"); ok {
			role = w.roleName(r)
		}
		w.add(policy.Object{Kind: policy.KindRole, Name: role, Action: op.Action})
		if db := w.t.getStr(v, "database"); db != "" {
			w.add(policy.Object{Kind: policy.KindDatabase, Name: db, Action: policy.ActionAlter})
		}
		w.settingDefault(w.field(v, "setstmt"))
	case "DropRoleStmt":
		op.Action, st.Tag = policy.ActionDropRole, "DROP ROLE"
		w.roles(w.field(v, "roles"), op.Action)
	case "ReassignOwnedStmt":
		op.Action, st.Tag = policy.ActionAlterRole, "REASSIGN OWNED"
		w.roles(w.field(v, "roles"), op.Action)
		w.add(policy.Object{Kind: policy.KindRole, Name: w.roleName(w.field(v, "newrole")), Action: policy.ActionGrant})
	case "DropOwnedStmt":
		op.Action, st.Tag = policy.ActionDrop, "DROP OWNED"
		for _, r := range w.t.children(w.field(v, "roles")) {
			w.add(policy.Object{Kind: policy.KindOther, Name: "owned_by:" + w.roleName(r), Action: op.Action})
		}

	// Deliberately unclassified; see the function comment.
	case "AlterSystemStmt":
		w.unclassified("ALTER SYSTEM is not supported")
	case "LoadStmt":
		w.unclassified("LOAD is not supported")
	case "ImportForeignSchemaStmt":
		w.unclassified("IMPORT FOREIGN SCHEMA is not supported")

	default:
		if !w.ddl(typ, v, st) {
			w.unclassified("statement type %s is not supported", typ)
		}
	}
}

// promote reports a statement that modifies data through a nested statement
// (WITH d AS (DELETE …) SELECT …) with the strongest such action.
func (w *walker) promote(op *policy.Operation) {
	if modRank(w.mods) > modRank(op.Action) {
		op.Action = w.mods
	}
}

// utility walks a utility statement with relations defaulting to act.
func (w *walker) utility(typ string, v jval, act policy.Action, skip ...string) {
	saved := w.relAct
	w.relAct = act
	w.fields(typ, v, skip...)
	w.relAct = saved
}

// inner classifies the statement in member key of v (PREPARE, DECLARE,
// EXPLAIN) into st.
func (w *walker) inner(v jval, key string, st *Statement) {
	typ, body := w.nodeType(w.field(v, key))
	if typ == "" {
		w.unclassified("statement without a parse tree")
		return
	}
	w.statement(typ, body, st)
}

// allTablesUnless records "*" when a maintenance statement names no table
// (a bare VACUUM processes every table of the database).
func (w *walker) allTablesUnless(v jval, key string, act policy.Action) {
	if !w.has(v, key) {
		w.add(policy.Object{Kind: policy.KindTable, Name: "*", Action: act})
	}
}

func (w *walker) channel(name string, act policy.Action) {
	if name == "" {
		name = "*" // UNLISTEN *
	}
	w.add(policy.Object{Kind: policy.KindOther, Name: "channel:" + name, Action: act})
}

// copyStmt classifies COPY. The table is read by COPY TO and written by COPY
// FROM; a server file is a KindPath object, a program a KindOther
// "program:<command line>" (not a path, so that a path rule can never allow
// a shell command).
func (w *walker) copyStmt(v jval, st *Statement) {
	op := &st.Op
	st.Tag = "COPY"
	from, program := w.t.getBool(v, "is_from"), w.t.getBool(v, "is_program")
	file := w.t.getStr(v, "filename")
	switch {
	case file == "" && !program:
		op.Action = pick(from, policy.ActionCopyFromStdin, policy.ActionCopyToStdout)
	case program:
		op.Action = pick(from, policy.ActionCopyFromProgram, policy.ActionCopyToProgram)
		w.add(policy.Object{Kind: policy.KindOther, Name: "program:" + file, Action: op.Action})
	default:
		op.Action = pick(from, policy.ActionCopyFromFile, policy.ActionCopyToFile)
		w.add(policy.Object{Kind: policy.KindPath, Name: file, Action: op.Action})
	}
	if rel, ok := w.t.get(v, "relation"); ok {
		w.target(rel, pick(from, policy.ActionInsert, policy.ActionSelect))
	}
	if q, ok := w.t.get(v, "query"); ok {
		saved := w.relAct
		w.relAct = policy.ActionSelect
		w.node(q)
		w.relAct = saved
	}
	w.fields("CopyStmt", v, "relation", "query")
}

func pick(cond bool, a, b policy.Action) policy.Action {
	if cond {
		return a
	}
	return b
}

// explainStmt classifies EXPLAIN. With ANALYZE the statement runs, so it is
// classified exactly as the inner statement. Without, it is an explain whose
// objects are still the inner statement's, actions included: planning can
// evaluate functions, and a rule allowing "explain" should not thereby allow
// looking at the plan of a DELETE on a table the agent may not touch.
func (w *walker) explainStmt(v jval, st *Statement) {
	analyze := false
	for _, o := range w.t.children(w.field(v, "options")) {
		_, d := w.nodeType(o)
		if strings.EqualFold(w.t.getStr(d, "defname"), "analyze") {
			val, ok := w.defArg(w.field(d, "arg"))
			analyze = !ok || !parseBoolFalse(val)
		}
	}
	w.inner(v, "query", st)
	st.Tag = "EXPLAIN"
	if st.Execute != "" {
		return // resolved against the prepared statement by the session
	}
	if !analyze {
		st.Op.Action = policy.ActionExplain
	}
}

// defArg returns the text of a DefElem argument (a String, Integer, Float,
// Boolean or A_Const); ok is false when there is no argument.
func (w *walker) defArg(v jval) (string, bool) {
	typ, body := w.nodeType(v)
	switch typ {
	case "":
		return "", false
	case "String":
		return w.t.getStr(body, "sval"), true
	case "Integer":
		w.literalValues = true
		return strconv.Itoa(w.t.getInt(body, "ival")), true
	case "Float":
		w.literalValues = true
		return w.t.getStr(body, "fval"), true
	case "Boolean":
		if w.t.getBool(body, "boolval") {
			return "true", true
		}
		return "false", true
	case "TypeName":
		// EXPLAIN (ANALYZE true) gives a String, but keep unusual shapes
		// on the safe side: an argument we cannot read counts as true.
		return "true", true
	}
	if s, ok := w.literal(v); ok {
		return s, true
	}
	return "true", true
}

// parseBoolFalse reports whether PostgreSQL's parse_bool reads s as false.
func parseBoolFalse(s string) bool {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return false
	}
	switch {
	case strings.HasPrefix("false", s), strings.HasPrefix("no", s):
		return true
	case len(s) >= 2 && strings.HasPrefix("off", s):
		return true
	case s == "0":
		return true
	}
	return false
}

// variableSet classifies SET and RESET. Setting names are case-insensitive
// to the server (SET "ROLE" = … is SET ROLE), so they are lower-cased.
func (w *walker) variableSet(v jval, st *Statement) {
	op := &st.Op
	kind := w.t.getStr(v, "kind")
	name := strings.ToLower(w.t.getStr(v, "name"))
	switch kind {
	case "VAR_RESET_ALL":
		op.Action, st.Tag = policy.ActionReset, "RESET"
		w.add(policy.Object{Kind: policy.KindSetting, Name: "*", Action: policy.ActionReset})
		return
	case "VAR_RESET", "VAR_SET_DEFAULT":
		st.Tag = pickTag(kind == "VAR_RESET", "RESET", "SET")
		switch name {
		case "role":
			op.Action = policy.ActionSetRole
		case "session_authorization":
			op.Action = policy.ActionSetSessionAuthorization
		default:
			// SET x TO DEFAULT is RESET x: back to the session default.
			op.Action = policy.ActionReset
		}
		w.add(policy.Object{Kind: policy.KindSetting, Name: name, Action: op.Action})
		return
	case "VAR_SET_VALUE", "VAR_SET_CURRENT", "VAR_SET_MULTI":
	default:
		w.unclassified("unsupported SET kind %s", kind)
		return
	}
	st.Tag = "SET"
	switch name {
	case "role":
		op.Action = policy.ActionSetRole
	case "session_authorization":
		op.Action = policy.ActionSetSessionAuthorization
	case "transaction", "session characteristics":
		// SET TRANSACTION …, SET SESSION CHARACTERISTICS AS TRANSACTION …
		op.Action = policy.ActionSet
		w.add(policy.Object{Kind: policy.KindSetting, Name: strings.ReplaceAll(name, " ", "_"), Action: op.Action})
		if w.readWrite(w.field(v, "args")) {
			// READ WRITE sets (default_)transaction_read_only off.
			w.add(policy.Object{Kind: policy.KindSetting, Name: pickTag(name == "transaction", "transaction_read_only", "default_transaction_read_only"), Action: op.Action})
			w.readOnlyOff = true
		}
		return
	default:
		op.Action = policy.ActionSet
	}
	value, known := w.setValue(v, kind)
	w.setting(name, value, known)
}

// setValue returns the single literal value of a SET, if it has one.
func (w *walker) setValue(v jval, kind string) (string, bool) {
	if kind != "VAR_SET_VALUE" {
		return "", false
	}
	args := w.t.children(w.field(v, "args"))
	if len(args) != 1 {
		return "", false
	}
	return w.literal(args[0])
}

// settingDefault records the SET of ALTER ROLE/DATABASE … SET: a default for
// future sessions, checked like a SET so that a role cannot be made to start
// with standard_conforming_strings off.
func (w *walker) settingDefault(set jval) {
	kind := w.t.getStr(set, "kind")
	name := strings.ToLower(w.t.getStr(set, "name"))
	switch kind {
	case "VAR_RESET_ALL":
		w.add(policy.Object{Kind: policy.KindSetting, Name: "*", Action: policy.ActionReset})
	case "VAR_RESET", "VAR_SET_DEFAULT":
		w.add(policy.Object{Kind: policy.KindSetting, Name: name, Action: policy.ActionReset})
	case "":
	default:
		value, known := w.setValue(set, kind)
		w.setting(name, value, known)
	}
}

func pickTag(cond bool, a, b string) string {
	if cond {
		return a
	}
	return b
}

// discardStmt classifies DISCARD. DISCARD ALL includes SET SESSION
// AUTHORIZATION DEFAULT, RESET ALL and DEALLOCATE ALL, so it is also a
// role change and drops every prepared statement.
func (w *walker) discardStmt(v jval, st *Statement) {
	st.Op.Action = policy.ActionDiscard
	switch w.t.getStr(v, "target") {
	case "DISCARD_ALL":
		st.Tag, st.Deallocate = "DISCARD ALL", "*"
		w.add(policy.Object{Kind: policy.KindSetting, Name: "*", Action: policy.ActionReset})
		w.add(policy.Object{Kind: policy.KindSetting, Name: "role", Action: policy.ActionSetRole})
		w.add(policy.Object{Kind: policy.KindSetting, Name: "session_authorization", Action: policy.ActionSetSessionAuthorization})
	case "DISCARD_PLANS":
		st.Tag = "DISCARD PLANS"
	case "DISCARD_SEQUENCES":
		st.Tag = "DISCARD SEQUENCES"
	case "DISCARD_TEMP":
		st.Tag = "DISCARD TEMP"
	default:
		w.unclassified("unsupported DISCARD target")
	}
}

func (w *walker) transactionStmt(v jval, st *Statement) {
	op := &st.Op
	tx := &st.TxControl
	tx.Chain = w.t.getBool(v, "chain")
	switch w.t.getStr(v, "kind") {
	case "TRANS_STMT_BEGIN":
		op.Action, st.Tag, tx.Kind = policy.ActionBegin, "BEGIN", TxBegin
	case "TRANS_STMT_START":
		op.Action, st.Tag, tx.Kind = policy.ActionBegin, "START TRANSACTION", TxBegin
	case "TRANS_STMT_COMMIT":
		op.Action, st.Tag, tx.Kind = policy.ActionCommit, "COMMIT", TxCommit
	case "TRANS_STMT_ROLLBACK":
		op.Action, st.Tag, tx.Kind = policy.ActionRollback, "ROLLBACK", TxRollback
	case "TRANS_STMT_SAVEPOINT":
		op.Action, st.Tag, tx.Kind = policy.ActionSavepoint, "SAVEPOINT", TxSavepoint
		tx.Name = w.t.getStr(v, "savepoint_name")
	case "TRANS_STMT_RELEASE":
		op.Action, st.Tag, tx.Kind = policy.ActionSavepoint, "RELEASE", TxRelease
		tx.Name = w.t.getStr(v, "savepoint_name")
	case "TRANS_STMT_ROLLBACK_TO":
		op.Action, st.Tag, tx.Kind = policy.ActionSavepoint, "ROLLBACK", TxRollbackTo
		tx.Name = w.t.getStr(v, "savepoint_name")
	case "TRANS_STMT_PREPARE":
		op.Action, st.Tag, tx.Kind = policy.ActionPrepareTransaction, "PREPARE TRANSACTION", TxPrepare
		tx.Name = w.t.getStr(v, "gid")
	case "TRANS_STMT_COMMIT_PREPARED":
		op.Action, st.Tag, tx.Kind = policy.ActionPrepareTransaction, "COMMIT PREPARED", TxCommitPrepared
		tx.Name = w.t.getStr(v, "gid")
	case "TRANS_STMT_ROLLBACK_PREPARED":
		op.Action, st.Tag, tx.Kind = policy.ActionPrepareTransaction, "ROLLBACK PREPARED", TxRollbackPrepared
		tx.Name = w.t.getStr(v, "gid")
	default:
		w.unclassified("unsupported transaction statement %s", w.t.getStr(v, "kind"))
	}
	// BEGIN ISOLATION LEVEL …: options are constants, nothing to walk.
	// BEGIN READ WRITE sets transaction_read_only off.
	if tx.Kind == TxBegin && w.readWrite(w.field(v, "options")) {
		w.add(policy.Object{Kind: policy.KindSetting, Name: "transaction_read_only", Action: policy.ActionSet})
		w.readOnlyOff = true
	}
}

// readWrite reports whether transaction options (BEGIN …, SET TRANSACTION
// …, SET SESSION CHARACTERISTICS AS TRANSACTION …) ask for READ WRITE, which
// overrides a read-only default (a value it cannot read counts as READ
// WRITE).
func (w *walker) readWrite(options jval) bool {
	for _, o := range w.t.children(options) {
		typ, d := w.nodeType(o)
		if typ != "DefElem" || w.t.getStr(d, "defname") != "transaction_read_only" {
			continue
		}
		if v, ok := w.literal(w.field(d, "arg")); !ok || !parseBoolTrue(v) {
			return true
		}
	}
	return false
}

func (w *walker) reindexStmt(v jval, st *Statement) {
	op := &st.Op
	op.Action, st.Tag = policy.ActionReindex, "REINDEX"
	name := w.t.getStr(v, "name")
	if name == "" {
		name = "*" // REINDEX DATABASE / SYSTEM without a name: the current one
	}
	switch w.t.getStr(v, "kind") {
	case "REINDEX_OBJECT_INDEX":
		w.ddlParts(policy.KindOther, "index", w.parts(w.field(v, "relation")), op.Action)
	case "REINDEX_OBJECT_TABLE":
		w.relation(w.field(v, "relation"), op.Action, false)
	case "REINDEX_OBJECT_SCHEMA":
		w.add(policy.Object{Kind: policy.KindSchema, Name: name, Action: op.Action})
	case "REINDEX_OBJECT_SYSTEM", "REINDEX_OBJECT_DATABASE":
		w.add(policy.Object{Kind: policy.KindDatabase, Name: name, Action: op.Action})
	default:
		w.unclassified("unsupported REINDEX kind %s", w.t.getStr(v, "kind"))
	}
}

// grantStmt classifies GRANT/REVOKE on objects: the objects and the grantees
// carry the action.
func (w *walker) grantStmt(v jval, st *Statement) {
	op := &st.Op
	op.Action, st.Tag = policy.ActionGrant, "GRANT"
	if !w.t.getBool(v, "is_grant") {
		op.Action, st.Tag = policy.ActionRevoke, "REVOKE"
	}
	w.grantTargets(v, op.Action)
}

func (w *walker) grantTargets(v jval, act policy.Action) {
	objtype := w.t.getStr(v, "objtype")
	switch w.t.getStr(v, "targtype") {
	case "ACL_TARGET_OBJECT":
		for _, o := range w.t.children(w.field(v, "objects")) {
			w.ddlObject(objtype, o, act)
		}
	case "ACL_TARGET_ALL_IN_SCHEMA":
		// GRANT … ON ALL TABLES IN SCHEMA s: every object of the schema.
		for _, o := range w.t.children(w.field(v, "objects")) {
			w.add(policy.Object{Kind: policy.KindSchema, Name: strings.Join(w.parts(o), "."), Action: act})
		}
	case "ACL_TARGET_DEFAULTS":
		w.add(policy.Object{Kind: policy.KindOther, Name: "default_privileges:" + strings.ToLower(objTag(objtype)), Action: act})
	default:
		w.unclassified("unsupported GRANT target %s", w.t.getStr(v, "targtype"))
	}
	w.roles(w.field(v, "grantees"), act)
	if g, ok := w.t.get(v, "grantor"); ok {
		w.add(policy.Object{Kind: policy.KindRole, Name: w.roleName(g), Action: act})
	}
}

func (w *walker) defaultPrivileges(v jval, st *Statement) {
	op := &st.Op
	a := w.field(v, "action")
	op.Action, st.Tag = policy.ActionGrant, "ALTER DEFAULT PRIVILEGES"
	if !w.t.getBool(a, "is_grant") {
		op.Action = policy.ActionRevoke
	}
	w.grantTargets(a, op.Action)
	for _, o := range w.t.children(w.field(v, "options")) {
		_, d := w.nodeType(o)
		switch w.t.getStr(d, "defname") {
		case "schemas":
			for _, p := range w.t.children(w.field(w.listOf(w.field(d, "arg")), "items")) {
				w.add(policy.Object{Kind: policy.KindSchema, Name: strings.Join(w.parts(p), "."), Action: op.Action})
			}
		case "roles":
			w.roles(w.field(w.listOf(w.field(d, "arg")), "items"), op.Action)
		}
	}
}

// listOf returns the body of a List wrapper.
func (w *walker) listOf(v jval) jval {
	_, body := w.nodeType(v)
	return body
}

// roleOptions records the role memberships CREATE/ALTER ROLE options grant
// (IN ROLE, ROLE, ADMIN, ALTER GROUP … ADD USER).
func (w *walker) roleOptions(v jval, act policy.Action) {
	for _, o := range w.t.children(w.field(v, "options")) {
		_, d := w.nodeType(o)
		switch w.t.getStr(d, "defname") {
		case "addroleto", "rolemembers", "adminmembers":
			w.roles(w.field(w.listOf(w.field(d, "arg")), "items"), act)
		}
	}
}
