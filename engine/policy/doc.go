// Package policy decides what an AI agent may do on a protected target.
//
// A policy file (YAML, see docs/policy.md) names the protected targets, the
// agents (identified by the cgroup label the kernel side reads), the roles
// they hold and the rules of each role. Parse compiles it once into plain
// matchers; Decide then evaluates one protocol-neutral Operation (built by a
// protocol layer such as protocols/postgres) without allocating and returns
// a Decision carrying the id of the deciding rule, for the audit trail.
//
// Semantics, in short:
//
//   - An operation is judged per object. Every object it touches must be
//     covered by at least one matching allow, mask or approve rule, otherwise
//     the whole operation is blocked (rule id "default-deny").
//   - The statement action is judged too: an operation without objects
//     (BEGIN, SELECT 1), or with only implicitly covered ones, must be
//     covered on its action alone (allow rules listing it cover it whatever
//     their object selectors); otherwise block and approve rules without
//     object selectors still see it, so "block copy_to_program" holds
//     whatever actions the classifier gave the copied table.
//   - Across every matching rule of the agent's roles and the global rules,
//     block beats approve, approve beats mask, mask beats allow; the deciding
//     rule is the first in the file among those of the winning verdict.
//   - Ordinary built-in functions (schema pg_catalog, no FunctionCategory)
//     are covered implicitly; categorised and user functions need a rule.
//   - An unclassified operation, an unknown target or an unknown action is
//     blocked: the zero Decision is a block, so every path fails closed.
//
// docs/policy.md is the reference for the file format and these semantics.
//
// A *Policy is immutable after Parse and safe for concurrent use. Store keeps
// the current one behind an atomic pointer, reloads it when the file changes
// or on request (SIGHUP), and keeps the last good policy when a new file is
// broken. The package needs no privileges and holds no global state.
package policy
