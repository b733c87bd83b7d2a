// Package postgres enforces policy on the PostgreSQL wire protocol: it will
// hold the relay between an agent and its target database, and holds the
// statement classifier that relay uses.
//
// The classifier (Classifier, in the classify*.go files) parses SQL with the
// real PostgreSQL parser, libpg_query through pg_query_go (cgo; grammar of
// PostgreSQL 17, which is a superset of what the 15 and 16 servers accept),
// and maps every statement onto the policy vocabulary of engine/policy:
// the statement's action and every object it touches — tables read and
// written (through CTEs, subqueries, RETURNING, views by name), functions
// called anywhere in any statement kind, settings, roles, server files and
// programs. Anything it does not understand is Unclassified, and an
// unclassified statement is always blocked: the walker visits every field of
// every parse node and treats an unknown node or field as a reason to refuse,
// never as something to skip.
//
// Classification holds only under conditions the session must keep, and the
// classifier refuses statements that would break them:
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
// The classifier keeps no state between calls besides its cache, needs no
// privileges, and is safe for concurrent use.
package postgres
