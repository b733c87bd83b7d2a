// Package approvals holds statements for a human's decision: the policy's
// approve verdict becomes a Request that waits in a Store until an approver
// with one of the rule's approver roles approves or denies it, or until it
// expires.
//
// A Manager is the engine's side: Hold stores the request, notifies the
// approvers (webhooks, the recording) and blocks the caller until the
// outcome is known. Decide is the approvers' side, reached through the
// HTTP API (Handler) with an OIDC ID token or through the daemon's unix
// socket. An approval is single use and bound to one request: its session
// UID and its statement digest (SHA-256 of the session UID, the statement
// text and a sequence number); a decision for any other request, or one
// that does not carry the same binding, releases nothing.
//
// Two stores implement the same contract: Memory for one host, and
// Postgres for a fleet, where decisions propagate with LISTEN/NOTIFY so that
// an approval given through any host's API releases the statement held on
// another. Nothing here needs privileges; the daemon keeps agents away from
// the API (kernel egress rules for the TCP listener, peer credentials for
// the unix socket).
package approvals
