// Package recording is Interlock's tamper-evident session recording: every
// session start, every statement (with its classification, decision and
// deciding rule), every result and every session end becomes a record in
// one hash chain per host, written durably before the statement it
// describes reaches the target.
//
// A record is one line of JSON (see record.go for the exact bytes): a
// version, a sequence number, the time, the host, the event type, the
// session, the SHA-256 of the previous record and the event's data, then
// its own SHA-256. Every so often (Config.CheckpointEvery records,
// Config.CheckpointInterval, at each segment rotation and at a clean close)
// the Recorder appends a checkpoint record signed with the host's ed25519
// key and rewrites the signed head (the latest checkpoint, kept outside the
// chain), which is what makes truncation of the tail detectable. Verify
// checks all of it and names the first bad record.
//
// The Recorder owns one writer goroutine: callers hand it events, it
// batches whatever has queued while the previous batch was being made
// durable, writes the batch and syncs it once (group commit), then releases
// the waiters. With Config.SyncInterval (recording.sync: interval, for slow
// disks) it releases them once the batch is written, and syncs the store
// every interval and before every signed head instead: a power loss of the
// host can then lose the last interval of records, never a head's. Two
// stores implement the same chain: Files (segment files under the state
// directory, the default) and Postgres (an append-only table shared by a
// fleet).
//
// The key file and the segment directory are created 0600/0700 by the
// daemon (root). What the guarantees are, and what a root attacker on the
// host can still do, is written down in docs/recording.md.
package recording
