package postgres

import "strings"

// Names in the classification are schema-qualified so that a rule about
// "public.orders" cannot be dodged by writing "orders", "ORDERS",
// "public.orders" or "Public"."orders". The classifier has no catalog, so it
// resolves unqualified names the way the server does under the search_path
// the engine pins for every session, pg_catalog (implicitly first) then
// public:
//
//   - a relation whose name is a pg_catalog relation (catalogRelations,
//     generated from a PostgreSQL 15 catalog) is pg_catalog.<name>; psql's
//     \d reads pg_class unqualified in places, and an unqualified pg_class
//     always means the catalog because pg_catalog is searched first;
//   - any other relation is public.<name>;
//   - a function whose name is a pg_catalog function (builtinFunctions) is
//     pg_catalog.<name>, any other public.<name>. Without the catalog the
//     classifier cannot resolve overloads: a public function that shares a
//     built-in's name but not its argument types is reported as the built-in;
//   - an object being created (CREATE TABLE, CREATE FUNCTION, SELECT INTO, …)
//     lands in the first schema of search_path, public, whatever its name.
//
// This is only true while search_path cannot move: the engine blocks SET
// search_path and set_config('search_path', …) by default, and must start
// upstream sessions with search_path=public (the default "$user", public
// would resolve to a schema named like the database user first). Temporary
// relations are the other exception: pg_temp is searched before everything
// for relations, so after CREATE TEMP TABLE orders an unqualified orders is
// the temporary table while the classifier still reports public.orders (and
// reports the creation as pg_temp.orders). That errs towards naming a table
// the agent did not touch, never towards hiding one it did.
//
// Identifiers keep the case the parser gives them: unquoted identifiers are
// already folded to lower case, quoted ones keep theirs ("Orders" →
// public.Orders). A part containing '.' or '"' is written quoted, doubled
// quotes inside, so that a table named "a.b" cannot pose as schema a,
// table b.

const (
	schemaPublic  = "public"
	schemaCatalog = "pg_catalog"
	schemaTemp    = "pg_temp"
)

// quoteIdent returns one name part, quoted only when it would otherwise be
// ambiguous in a dotted name.
func quoteIdent(s string) string {
	if !strings.ContainsAny(s, `."`) {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// qualify joins a schema and a name.
func qualify(schema, name string) string {
	return quoteIdent(schema) + "." + quoteIdent(name)
}

// relationName names a relation referenced by an existing statement.
// persistence is the RangeVar's relpersistence ("t" for TEMP).
func relationName(schema, rel, persistence string) string {
	switch {
	case schema != "":
		return qualify(schema, rel)
	case persistence == "t":
		return qualify(schemaTemp, rel)
	case isCatalogRelation(rel):
		return qualify(schemaCatalog, rel)
	default:
		return qualify(schemaPublic, rel)
	}
}

// createdName names an object a statement creates: unqualified objects go to
// the creation schema, never to pg_catalog.
func createdName(schema, name, persistence string) string {
	switch {
	case schema != "":
		return qualify(schema, name)
	case persistence == "t":
		return qualify(schemaTemp, name)
	default:
		return qualify(schemaPublic, name)
	}
}

// functionName names a function from the parts of its (possibly qualified)
// name as the parser gives them: [name], [schema, name] or
// [catalog, schema, name].
func functionName(parts []string) string {
	switch len(parts) {
	case 0:
		return qualify(schemaPublic, "?")
	case 1:
		if isBuiltinFunction(parts[0]) {
			return qualify(schemaCatalog, parts[0])
		}
		return qualify(schemaPublic, parts[0])
	default:
		return qualify(parts[len(parts)-2], parts[len(parts)-1])
	}
}

// objectName names an existing schema-scoped object (a relation given as a
// name list in DROP, COMMENT, GRANT …).
func objectName(parts []string) string {
	switch len(parts) {
	case 0:
		return qualify(schemaPublic, "?")
	case 1:
		return relationName("", parts[0], "")
	default:
		return qualify(parts[len(parts)-2], parts[len(parts)-1])
	}
}

// otherName names a schema-scoped object that is not a relation or function
// (types, collations, operators, …): unqualified names are reported as
// public, without a catalog lookup, because rules about them are rare.
func otherName(parts []string) string {
	switch len(parts) {
	case 0:
		return qualify(schemaPublic, "?")
	case 1:
		return qualify(schemaPublic, parts[0])
	default:
		return qualify(parts[len(parts)-2], parts[len(parts)-1])
	}
}

func isBuiltinFunction(name string) bool {
	_, ok := builtinFunctions[name]
	return ok
}

func isCatalogRelation(name string) bool {
	_, ok := catalogRelations[name]
	return ok
}
