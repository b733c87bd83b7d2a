// Package postgres enforces policy on the PostgreSQL wire protocol: the relay
// between an agent and its target database, and the statement classifier
// the relay asks about every statement.
//
// The classifier (Classifier, in the classify*.go files) parses SQL with the
// real PostgreSQL parser, libpg_query through pg_query_go (cgo; grammar of
// PostgreSQL 17, which accepts what 15 and 16 servers accept; SQL/JSON
// syntax those servers read as plain function calls is reported as such),
// and maps every statement onto the policy vocabulary of engine/policy:
// the statement's action and every object it touches — tables read and
// written (through CTEs, subqueries, RETURNING, views by name), functions
// called anywhere in any statement kind, settings, roles, server files and
// programs. Anything it does not understand is Unclassified, and an
// unclassified statement is always blocked: the walker visits every field of
// every parse node and treats an unknown node or field as a reason to refuse,
// never as something to skip.
//
// Classification holds only under conditions the session must keep. The
// classifier reports every statement that would change them as a setting
// object, and refuses outright those that would make the server lex text
// differently from libpg_query:
//
//   - search_path is pinned (to public) and cannot be changed by the agent:
//     unqualified names are resolved as pg_catalog first, then public (see
//     classify_names.go);
//   - standard_conforming_strings stays on and client_encoding stays UTF8,
//     so that the server splits the query text into tokens exactly as
//     libpg_query does (SET of either to anything else is unclassified; the
//     session must also pin both in the startup packet it sends upstream,
//     since ALTER ROLE … SET defaults and client startup options would
//     otherwise apply);
//   - the server encoding is UTF8, so that identifiers longer than 63 bytes
//     are truncated the same way on both sides.
//
// Queries that could nest deeper than libpg_query's C stack allows are
// refused before parsing (classify_depth.go): its output writer recurses
// without a depth check and would take the whole process down.
//
// The classifier keeps no state between calls besides its caches, needs no
// privileges, and is safe for concurrent use.
package postgres
