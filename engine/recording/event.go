package recording

import "time"

// The data of each event type. Field names are the on-disk JSON names and
// part of the format: add fields, never rename or reuse them (a change of
// meaning bumps Version).

// SessionStart is recorded once the identity of a session is complete and
// before any of its statements.
type SessionStart struct {
	Agent      string    `json:"agent"`
	Roles      []string  `json:"roles"`
	PID        uint32    `json:"pid"`
	Exe        string    `json:"exe,omitempty"`
	CgroupID   uint64    `json:"cgroup_id"`
	CgroupPath string    `json:"cgroup_path,omitempty"`
	Target     string    `json:"target"`
	Protocol   string    `json:"protocol"`
	OrigDst    string    `json:"orig_dst"`  // where the agent connected to
	Client     string    `json:"client"`    // the agent socket's address
	EngineID   uint64    `json:"engine_id"` // the engine's per-process session number (log lines)
	Started    time.Time `json:"started"`
}

// Object is one thing a statement touches, as the classifier saw it.
type Object struct {
	Kind     string `json:"kind"`
	Name     string `json:"name"`
	Action   string `json:"action"`
	Category string `json:"category,omitempty"`
}

// Redaction settings: how much of a statement's text is recorded.
const (
	RedactNone       = "none"       // the text as the agent sent it
	RedactParameters = "parameters" // literals (and comments) replaced by placeholders
	RedactFull       = "full"       // no text: the fingerprint and classification only
)

// Statement is one decided statement, recorded before it is forwarded.
type Statement struct {
	// N numbers the session's statements from 1; results refer to it.
	N    int    `json:"n"`
	Path string `json:"path,omitempty"` // protocol path: simple, extended, fastpath
	// Text is the statement per Redaction; Fingerprint identifies its
	// shape (the SHA-256 of the literal-free text, truncated to 16 bytes),
	// equal for the same statement with other values.
	Text        string `json:"text,omitempty"`
	Redaction   string `json:"redaction"`
	Fingerprint string `json:"fingerprint,omitempty"`
	TextBytes   int    `json:"text_bytes"`          // length of the original text
	Truncated   bool   `json:"truncated,omitempty"` // Text was cut at MaxText bytes

	Action       string   `json:"action"`
	Objects      []Object `json:"objects,omitempty"`
	InTx         bool     `json:"in_transaction,omitempty"`
	Unclassified bool     `json:"unclassified,omitempty"`

	Verdict string `json:"verdict"` // allow, block, approve, mask
	Rule    string `json:"rule,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Forwarded is whether the statement goes to the target: false when it
	// or a sibling in the same message was refused.
	Forwarded bool `json:"forwarded"`
}

// Connected is recorded once the protocol handshake with the agent and the
// target is done, before the session's first statement.
type Connected struct {
	Database  string `json:"database,omitempty"`
	DBUser    string `json:"db_user,omitempty"`    // who the engine is connected as
	Auth      string `json:"auth,omitempty"`       // inject or passthrough
	AgentTLS  string `json:"agent_tls,omitempty"`  // TLS version toward the agent, "" for none
	TargetTLS string `json:"target_tls,omitempty"` // TLS version toward the target, "" for none
}

// Bind is the parameter values an agent bound to a prepared statement
// (extended protocol), recorded before the Bind is forwarded, and only
// with redaction none: the values are the data the statement runs with.
type Bind struct {
	Statement string `json:"statement,omitempty"` // prepared statement name ("" unnamed)
	Portal    string `json:"portal,omitempty"`
	// Text is the prepared statement's text, when it was prepared through
	// Interlock.
	Text string `json:"text,omitempty"`
	// Params are the values in order; null for SQL NULL. Values sent in
	// binary format are recorded as \x and their bytes in hex (PostgreSQL's
	// bytea notation); text values as sent.
	Params    []*string `json:"params"`
	Truncated bool      `json:"truncated,omitempty"` // values were cut at MaxText bytes in all
}

// MaxText is the most statement text a record keeps; longer text is cut
// (Statement.Truncated, Statement.TextBytes say so).
const MaxText = 1 << 20

// Result is the target's (or Interlock's) answer to a statement.
type Result struct {
	// N is the statement this answers, 0 when it cannot be told (e.g. a
	// prepared statement executed again in a later request).
	N    int    `json:"n,omitempty"`
	Tag  string `json:"tag,omitempty"`  // command tag: "SELECT 3", "INSERT 0 1"
	Rows *int64 `json:"rows,omitempty"` // from the tag, when it has a count
	// Code and Message describe an error: the server's SQLSTATE (the message
	// only with redaction none, as it may quote data), or Interlock's
	// refusal (Refused).
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
	Refused bool   `json:"refused,omitempty"`
	Masked  int64  `json:"masked,omitempty"` // values masked (masking stage)
}

// SessionEnd is recorded when a session is over.
type SessionEnd struct {
	DurationMS    float64 `json:"duration_ms"`
	BytesToTarget int64   `json:"bytes_to_target"`
	BytesToClient int64   `json:"bytes_to_client"`
	Statements    int     `json:"statements"`
	// Reason is "closed" for a clean end, else the error that ended it.
	Reason string `json:"reason"`
}

// ApprovalRequested and ApprovalDecided are reserved for the approval
// stage: a statement held for a human's decision.
type ApprovalRequested struct {
	N         int      `json:"n"`
	Rule      string   `json:"rule"`
	Approvers []string `json:"approvers,omitempty"`
}

// ApprovalDecided records who decided a held statement, and how.
type ApprovalDecided struct {
	N        int       `json:"n"`
	Approved bool      `json:"approved"`
	By       string    `json:"by"`
	At       time.Time `json:"at"`
	Comment  string    `json:"comment,omitempty"`
}

// Checkpoint signs the chain up to the record before it (Seq, Hash);
// FirstSeq is the oldest record retention keeps.
type Checkpoint struct {
	Seq      uint64 `json:"seq"`
	Hash     string `json:"hash"`
	FirstSeq uint64 `json:"first_seq"`
	// Adopted is set on the first checkpoint of a run that found the chain
	// ending with records no checkpoint covered (a crash, or records
	// someone else appended): the last of them. The signature covers
	// them as found, not as written by this run; Verify reports them.
	Adopted uint64 `json:"adopted,omitempty"`
	// TimeNS is the checkpoint record's time (Unix nanoseconds), signed:
	// retention judges a sealed segment's age by it, which whoever can
	// touch the files cannot move. Zero in checkpoints of earlier versions.
	TimeNS int64 `json:"time_ns,omitempty"`
	// Sealed is set on the checkpoint that seals a segment: the length of
	// the segment's data before it, in bytes. Retention counts a sealed
	// segment by it and tells the seal from interior checkpoints.
	Sealed int64  `json:"sealed,omitempty"`
	Key    string `json:"key"` // key id: hex of the first 8 bytes of SHA-256(public key)
	Sig    string `json:"sig"` // base64 ed25519 signature of checkpointMessage
}
