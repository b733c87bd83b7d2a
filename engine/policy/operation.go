package policy

import "strings"

// Operation is one protocol-neutral unit a protocol layer asks the policy
// about: one SQL statement (a multi-statement query is several operations) or
// one HTTP request. Protocol layers fill it; Decide never mutates it.
type Operation struct {
	Agent    string   // agent name (from the cgroup label)
	Roles    []string // the agent's roles, already resolved (inheritance expanded)
	Target   string   // target name
	Protocol string   // "postgres", "http", "tcp"

	// Action is the statement-level action. Objects carry their own action
	// (an UPDATE reading a table in a subquery touches that table with
	// ActionSelect); statements without objects (SET, BEGIN) are matched on
	// this action alone.
	Action  Action
	Objects []Object
	Attrs   Attributes

	// Unclassified is set when the protocol layer could not understand the
	// operation. Such an operation is always blocked: fail closed.
	Unclassified bool
	Reason       string // why it is unclassified, for the error message
}

// Object is one thing an operation touches.
type Object struct {
	Kind ObjectKind
	// Name is schema-qualified for SQL ("public.orders", "pg_catalog.lower"),
	// the path for HTTP ("/v1/users/42").
	Name string
	// Action is what is done to this object (select, insert, call, drop, …).
	Action Action
	// Category classifies functions (server_files, large_objects, …).
	// CategoryNone for ordinary functions and for every other kind.
	Category FunctionCategory
}

// Attributes are facts about an operation that rules can test.
type Attributes struct {
	HasWhere      bool  // UPDATE/DELETE (or SELECT) has a WHERE clause
	InTransaction bool  // the session is inside an explicit transaction block
	RowEstimate   int64 // planner estimate when known, -1 when unknown
}

// ObjectKind says what an Object names.
type ObjectKind uint8

const (
	KindTable    ObjectKind = iota + 1 // tables, views, materialized views, sequences used as relations
	KindSchema                         // CREATE/DROP SCHEMA, GRANT ON SCHEMA
	KindFunction                       // functions and procedures called or defined
	KindDatabase                       // CREATE/DROP DATABASE
	KindRole                           // role management and SET ROLE targets
	KindPath                           // HTTP URL paths, server-side files (COPY … FILE)
	KindSetting                        // run-time parameters (SET search_path, set_config)
	KindOther                          // any other DDL object (types, extensions, …)
)

var kindNames = [...]string{
	KindTable:    "table",
	KindSchema:   "schema",
	KindFunction: "function",
	KindDatabase: "database",
	KindRole:     "role",
	KindPath:     "path",
	KindSetting:  "setting",
	KindOther:    "other",
}

func (k ObjectKind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "unknown"
}

// Class groups actions the way operators think about them.
type Class uint8

const (
	ClassRead Class = iota + 1
	ClassWrite
	ClassDDL
	ClassPrivilege
	ClassSession
	ClassTransaction
	ClassCopy
	ClassProcedural
	ClassMaintenance
	ClassAdmin
	ClassHTTP
)

var classNames = [...]string{
	ClassRead:        "read",
	ClassWrite:       "write",
	ClassDDL:         "ddl",
	ClassPrivilege:   "privilege",
	ClassSession:     "session",
	ClassTransaction: "transaction",
	ClassCopy:        "copy",
	ClassProcedural:  "procedural",
	ClassMaintenance: "maintenance",
	ClassAdmin:       "admin",
	ClassHTTP:        "http",
}

func (c Class) String() string {
	if int(c) < len(classNames) && classNames[c] != "" {
		return classNames[c]
	}
	return "unknown"
}

// Action is one verb of the vocabulary. The set is small and closed so that
// compiled rules can hold actions as a bitset (see ActionBits).
type Action uint8

// SQL actions. Keep in step with actionInfo below; the numeric values are
// not persisted anywhere (recordings store names).
const (
	ActionUnknown Action = iota

	// read
	ActionSelect  // SELECT, TABLE, VALUES, DECLARE CURSOR over a query
	ActionExplain // EXPLAIN without ANALYZE (plans, does not run)
	ActionFetch   // FETCH/MOVE/CLOSE on a cursor
	ActionShow    // SHOW

	// write
	ActionInsert
	ActionUpdate
	ActionDelete
	ActionMerge
	ActionTruncate
	ActionLock // LOCK TABLE

	// ddl (object kind in Objects)
	ActionCreate
	ActionAlter
	ActionDrop
	ActionComment // COMMENT ON, SECURITY LABEL

	// privilege
	ActionGrant // GRANT privileges or role membership
	ActionRevoke
	ActionCreateRole
	ActionAlterRole
	ActionDropRole

	// session
	ActionSet                     // SET/set_config of an ordinary parameter
	ActionReset                   // RESET x, RESET ALL
	ActionSetRole                 // SET ROLE, RESET ROLE, set_config('role', …)
	ActionSetSessionAuthorization // SET SESSION AUTHORIZATION
	ActionDiscard                 // DISCARD ALL/PLANS/…
	ActionListen                  // LISTEN/UNLISTEN
	ActionNotify                  // NOTIFY, pg_notify()
	ActionDeallocate              // DEALLOCATE

	// transaction
	ActionBegin
	ActionCommit
	ActionRollback
	ActionSavepoint          // SAVEPOINT, RELEASE, ROLLBACK TO
	ActionPrepareTransaction // PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED

	// copy
	ActionCopyToStdout
	ActionCopyFromStdin
	ActionCopyToFile
	ActionCopyFromFile
	ActionCopyToProgram
	ActionCopyFromProgram

	// procedural
	ActionDo
	ActionCall

	// maintenance
	ActionVacuum
	ActionAnalyze
	ActionReindex
	ActionCluster
	ActionRefresh    // REFRESH MATERIALIZED VIEW
	ActionCheckpoint // CHECKPOINT

	// admin: calling a function of a dangerous category (see FunctionCategory)
	ActionExecute // a function call; objects say which

	// http
	ActionHTTPGet
	ActionHTTPHead
	ActionHTTPPost
	ActionHTTPPut
	ActionHTTPPatch
	ActionHTTPDelete
	ActionHTTPOptions

	actionCount // must stay last; ActionBits is a [2]uint64 bitset
)

type actionInfo struct {
	name  string
	class Class
}

var actions = [actionCount]actionInfo{
	ActionUnknown:                 {"unknown", 0},
	ActionSelect:                  {"select", ClassRead},
	ActionExplain:                 {"explain", ClassRead},
	ActionFetch:                   {"fetch", ClassRead},
	ActionShow:                    {"show", ClassRead},
	ActionInsert:                  {"insert", ClassWrite},
	ActionUpdate:                  {"update", ClassWrite},
	ActionDelete:                  {"delete", ClassWrite},
	ActionMerge:                   {"merge", ClassWrite},
	ActionTruncate:                {"truncate", ClassWrite},
	ActionLock:                    {"lock", ClassWrite},
	ActionCreate:                  {"create", ClassDDL},
	ActionAlter:                   {"alter", ClassDDL},
	ActionDrop:                    {"drop", ClassDDL},
	ActionComment:                 {"comment", ClassDDL},
	ActionGrant:                   {"grant", ClassPrivilege},
	ActionRevoke:                  {"revoke", ClassPrivilege},
	ActionCreateRole:              {"create_role", ClassPrivilege},
	ActionAlterRole:               {"alter_role", ClassPrivilege},
	ActionDropRole:                {"drop_role", ClassPrivilege},
	ActionSet:                     {"set", ClassSession},
	ActionReset:                   {"reset", ClassSession},
	ActionSetRole:                 {"set_role", ClassSession},
	ActionSetSessionAuthorization: {"set_session_authorization", ClassSession},
	ActionDiscard:                 {"discard", ClassSession},
	ActionListen:                  {"listen", ClassSession},
	ActionNotify:                  {"notify", ClassSession},
	ActionDeallocate:              {"deallocate", ClassSession},
	ActionBegin:                   {"begin", ClassTransaction},
	ActionCommit:                  {"commit", ClassTransaction},
	ActionRollback:                {"rollback", ClassTransaction},
	ActionSavepoint:               {"savepoint", ClassTransaction},
	ActionPrepareTransaction:      {"prepare_transaction", 0}, // no class: acts beyond the session, needs a rule naming it
	ActionCopyToStdout:            {"copy_to_stdout", ClassCopy},
	ActionCopyFromStdin:           {"copy_from_stdin", ClassCopy},
	ActionCopyToFile:              {"copy_to_file", ClassCopy},
	ActionCopyFromFile:            {"copy_from_file", ClassCopy},
	ActionCopyToProgram:           {"copy_to_program", ClassCopy},
	ActionCopyFromProgram:         {"copy_from_program", ClassCopy},
	ActionDo:                      {"do", ClassProcedural},
	ActionCall:                    {"call", ClassProcedural},
	ActionVacuum:                  {"vacuum", ClassMaintenance},
	ActionAnalyze:                 {"analyze", ClassMaintenance},
	ActionReindex:                 {"reindex", ClassMaintenance},
	ActionCluster:                 {"cluster", ClassMaintenance},
	ActionRefresh:                 {"refresh", ClassMaintenance},
	ActionCheckpoint:              {"checkpoint", ClassMaintenance},
	ActionExecute:                 {"execute", ClassAdmin},
	ActionHTTPGet:                 {"GET", ClassHTTP},
	ActionHTTPHead:                {"HEAD", ClassHTTP},
	ActionHTTPPost:                {"POST", ClassHTTP},
	ActionHTTPPut:                 {"PUT", ClassHTTP},
	ActionHTTPPatch:               {"PATCH", ClassHTTP},
	ActionHTTPDelete:              {"DELETE", ClassHTTP},
	ActionHTTPOptions:             {"OPTIONS", ClassHTTP},
}

func (a Action) String() string {
	if a < actionCount {
		return actions[a].name
	}
	return "unknown"
}

// Class returns the class an action belongs to (0 for ActionUnknown).
func (a Action) Class() Class {
	if a < actionCount {
		return actions[a].class
	}
	return 0
}

// ParseAction returns the action with the given vocabulary name.
// HTTP methods are matched case-sensitively in upper case; SQL actions in
// lower case.
func ParseAction(name string) (Action, bool) {
	for i := Action(1); i < actionCount; i++ {
		if actions[i].name == name {
			return i, true
		}
	}
	return ActionUnknown, false
}

// ActionBits is a set of actions, a bitset so that matching allocates nothing.
type ActionBits [2]uint64

// Add puts a into the set.
func (s *ActionBits) Add(a Action) { s[a/64] |= 1 << (a % 64) }

// Has reports whether a is in the set.
func (s *ActionBits) Has(a Action) bool { return s[a/64]&(1<<(a%64)) != 0 }

// Empty reports whether the set has no actions.
func (s *ActionBits) Empty() bool { return s[0] == 0 && s[1] == 0 }

// FunctionCategory marks functions whose effects go beyond computing a value.
// Calls of categorised functions are blocked unless a rule allows the
// category or the function by name; the PostgreSQL classifier sets the
// category of every function object from CategoryOf.
type FunctionCategory uint8

const (
	CategoryNone          FunctionCategory = iota
	CategoryServerFiles                    // pg_read_file, pg_ls_dir, pg_stat_file, adminpack writes
	CategoryLargeObject                    // lo_import, lo_export, lo_* and loread/lowrite
	CategoryBackendSignal                  // pg_terminate_backend, pg_cancel_backend, pg_reload_conf, pg_rotate_logfile, pg_promote
	CategoryRemote                         // dblink*, postgres_fdw connections
	CategorySetConfig                      // set_config (can change role, search_path)
	CategoryDynamicSQL                     // functions that run SQL given as text: query_to_xml, table_to_xml, ts_stat, …
	CategoryAdmin                          // WAL/replication/backup control, advisory locks, pg_sleep, sequence writes
	categoryCount
)

// CategoryUnresolved marks a call of a function the protocol layer cannot
// name (a PostgreSQL fast-path FunctionCall gives only an OID): it may be
// in any category. Block and approve rules naming any category match it;
// allow and mask rules only by name (or without selectors), so that a
// category block always refuses it and a category allow never lets it
// through. It is not a name rules or cases can use.
const CategoryUnresolved FunctionCategory = 255

var categoryNames = [...]string{
	CategoryNone:          "none",
	CategoryServerFiles:   "server_files",
	CategoryLargeObject:   "large_objects",
	CategoryBackendSignal: "backend_signal",
	CategoryRemote:        "remote",
	CategorySetConfig:     "set_config",
	CategoryDynamicSQL:    "dynamic_sql",
	CategoryAdmin:         "admin",
}

func (c FunctionCategory) String() string {
	if c < categoryCount {
		return categoryNames[c]
	}
	if c == CategoryUnresolved {
		return "unresolved"
	}
	return "unknown"
}

// ParseCategory returns the category with the given name.
func ParseCategory(name string) (FunctionCategory, bool) {
	for i := FunctionCategory(1); i < categoryCount; i++ {
		if categoryNames[i] == name {
			return i, true
		}
	}
	return CategoryNone, false
}

// categoryByName lists PostgreSQL functions (unqualified, lower case) with
// effects beyond their result. Prefix entries end in '*'.
var categoryByName = map[string]FunctionCategory{
	// Prefixes: PostgreSQL keeps older signatures under suffixed names
	// (pg_read_file_old in 15) with the same C code.
	"pg_read_file*":             CategoryServerFiles,
	"pg_read_binary_file*":      CategoryServerFiles,
	"pg_show_all_file_settings": CategoryServerFiles, // postgresql.conf and its includes
	"pg_hba_file_rules":         CategoryServerFiles, // pg_hba.conf
	"pg_ident_file_mappings":    CategoryServerFiles, // pg_ident.conf
	"pg_ls_dir":                 CategoryServerFiles,
	"pg_stat_file":              CategoryServerFiles,
	"pg_ls_logdir":              CategoryServerFiles,
	"pg_ls_waldir":              CategoryServerFiles,
	"pg_ls_tmpdir":              CategoryServerFiles,
	"pg_ls_archive_statusdir":   CategoryServerFiles,
	"pg_ls_logicalmapdir":       CategoryServerFiles,
	"pg_ls_logicalsnapdir":      CategoryServerFiles,
	"pg_ls_replslotdir":         CategoryServerFiles,
	"pg_file_write":             CategoryServerFiles,
	"pg_file_rename":            CategoryServerFiles,
	"pg_file_unlink":            CategoryServerFiles,
	"pg_file_sync":              CategoryServerFiles,
	"pg_logdir_ls":              CategoryServerFiles,
	"pg_current_logfile":        CategoryServerFiles,

	"lo_import":     CategoryLargeObject,
	"lo_export":     CategoryLargeObject,
	"lo_create":     CategoryLargeObject,
	"lo_creat":      CategoryLargeObject,
	"lo_unlink":     CategoryLargeObject,
	"lo_open":       CategoryLargeObject,
	"lo_close":      CategoryLargeObject,
	"lo_get":        CategoryLargeObject,
	"lo_put":        CategoryLargeObject,
	"lo_from_bytea": CategoryLargeObject,
	"lo_truncate":   CategoryLargeObject,
	"lo_truncate64": CategoryLargeObject,
	"lo_lseek":      CategoryLargeObject,
	"lo_lseek64":    CategoryLargeObject,
	"lo_tell":       CategoryLargeObject,
	"lo_tell64":     CategoryLargeObject,
	"loread":        CategoryLargeObject,
	"lowrite":       CategoryLargeObject,

	"pg_terminate_backend":           CategoryBackendSignal,
	"pg_cancel_backend":              CategoryBackendSignal,
	"pg_reload_conf":                 CategoryBackendSignal,
	"pg_rotate_logfile*":             CategoryBackendSignal,
	"pg_promote":                     CategoryBackendSignal,
	"pg_log_backend_memory_contexts": CategoryBackendSignal,

	"dblink*":                  CategoryRemote,
	"postgres_fdw_disconnect*": CategoryRemote,

	"set_config": CategorySetConfig,

	"query_to_xml":                  CategoryDynamicSQL,
	"query_to_xml_and_xmlschema":    CategoryDynamicSQL,
	"query_to_xmlschema":            CategoryDynamicSQL,
	"cursor_to_xml":                 CategoryDynamicSQL,
	"cursor_to_xmlschema":           CategoryDynamicSQL,
	"table_to_xml":                  CategoryDynamicSQL,
	"table_to_xml_and_xmlschema":    CategoryDynamicSQL,
	"table_to_xmlschema":            CategoryDynamicSQL,
	"schema_to_xml":                 CategoryDynamicSQL,
	"schema_to_xml_and_xmlschema":   CategoryDynamicSQL,
	"schema_to_xmlschema":           CategoryDynamicSQL,
	"database_to_xml":               CategoryDynamicSQL,
	"database_to_xml_and_xmlschema": CategoryDynamicSQL,
	"database_to_xmlschema":         CategoryDynamicSQL,
	"ts_stat":                       CategoryDynamicSQL,
	"ts_rewrite":                    CategoryDynamicSQL,

	"brin_summarize*":                     CategoryAdmin, // index maintenance writes
	"brin_desummarize_range":              CategoryAdmin,
	"gin_clean_pending_list":              CategoryAdmin,
	"pg_sleep*":                           CategoryAdmin,
	"pg_advisory*":                        CategoryAdmin,
	"pg_try_advisory*":                    CategoryAdmin,
	"nextval":                             CategoryAdmin,
	"setval":                              CategoryAdmin,
	"pg_switch_wal":                       CategoryAdmin,
	"pg_create_restore_point":             CategoryAdmin,
	"pg_backup_start":                     CategoryAdmin,
	"pg_backup_stop":                      CategoryAdmin,
	"pg_start_backup":                     CategoryAdmin,
	"pg_stop_backup":                      CategoryAdmin,
	"pg_wal_replay_pause":                 CategoryAdmin,
	"pg_wal_replay_resume":                CategoryAdmin,
	"pg_create_physical_replication_slot": CategoryAdmin,
	"pg_create_logical_replication_slot":  CategoryAdmin,
	"pg_drop_replication_slot":            CategoryAdmin,
	"pg_copy_physical_replication_slot":   CategoryAdmin,
	"pg_copy_logical_replication_slot":    CategoryAdmin,
	"pg_replication_slot_advance":         CategoryAdmin,
	"pg_logical_slot_get_changes":         CategoryAdmin,
	"pg_logical_slot_peek_changes":        CategoryAdmin,
	"pg_logical_slot_get_binary_changes":  CategoryAdmin,
	"pg_logical_slot_peek_binary_changes": CategoryAdmin,
	"pg_logical_emit_message":             CategoryAdmin,
	"pg_replication_origin*":              CategoryAdmin,
	"pg_import_system_collations":         CategoryAdmin,
	"pg_stat_reset*":                      CategoryAdmin,
	"pg_notify":                           CategoryAdmin,
}

// categoryPrefixes are the '*' entries of categoryByName, so that a miss
// costs a few prefix checks rather than a scan of the whole map.
var categoryPrefixes = func() []struct {
	prefix string
	cat    FunctionCategory
} {
	var out []struct {
		prefix string
		cat    FunctionCategory
	}
	for k, c := range categoryByName {
		if strings.HasSuffix(k, "*") {
			out = append(out, struct {
				prefix string
				cat    FunctionCategory
			}{k[:len(k)-1], c})
		}
	}
	return out
}()

// CategoryOf returns the category of a function by name. Schema
// qualification is ignored on purpose: a user function named like a
// dangerous built-in in another schema is just as suspicious.
func CategoryOf(name string) FunctionCategory {
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		name = name[i+1:]
	}
	name = strings.ToLower(name)
	if c, ok := categoryByName[name]; ok {
		return c
	}
	for _, p := range categoryPrefixes {
		if strings.HasPrefix(name, p.prefix) {
			return p.cat
		}
	}
	return CategoryNone
}

// ParseKind returns the object kind with the given name ("table", "function", …).
func ParseKind(name string) (ObjectKind, bool) {
	for i := KindTable; int(i) < len(kindNames); i++ {
		if kindNames[i] == name {
			return i, true
		}
	}
	return 0, false
}
