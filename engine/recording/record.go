package recording

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Version is the record format version written in every record's "v".
const Version = 1

// Type is an event type.
type Type string

// Event types.
const (
	TypeSessionStart      Type = "session_start"
	TypeStatement         Type = "statement"
	TypeBind              Type = "bind"      // parameter values of an extended-protocol execution (redaction none)
	TypeConnected         Type = "connected" // the protocol handshake: database, user, TLS on both sides
	TypeResult            Type = "result"
	TypeSessionEnd        Type = "session_end"
	TypeApprovalRequested Type = "approval_requested" // reserved for the approval stage
	TypeApprovalDecided   Type = "approval_decided"   // reserved for the approval stage
	TypeCheckpoint        Type = "checkpoint"
)

// Record is one link of the chain. On disk (and in the PostgreSQL store's
// record column) it is exactly Raw:
//
//	{"v":1,"seq":N,"time":"…","host":"…","type":"…","session":"…","prev":"<hex>","data":{…},"hash":"<hex>"}
//
// The record's canonical bytes are Raw without its `,"hash":"<64 hex>"`
// suffix (the closing brace kept): hash is the SHA-256 of those bytes, and
// prev is the previous record's hash ("" for seq 1). The canonical bytes
// are hashed as stored, never re-encoded, so verification does not depend
// on how a JSON library orders or escapes fields.
type Record struct {
	V       int             `json:"v"`
	Seq     uint64          `json:"seq"`
	Time    time.Time       `json:"time"`
	Host    string          `json:"host"`
	Type    Type            `json:"type"`
	Session string          `json:"session,omitempty"`
	Prev    string          `json:"prev"`
	Data    json.RawMessage `json:"data"`
	Hash    string          `json:"hash"`

	// Raw is the stored line, without a newline.
	Raw []byte `json:"-"`
}

// hashSuffixLen is len(`,"hash":"` + 64 hex + `"}`).
const hashSuffixLen = 9 + 64 + 2

// encode builds rec.Raw and rec.Hash from the other fields. data must be
// a JSON object (compact, as json.Marshal writes it).
func (rec *Record) encode() {
	b := make([]byte, 0, 160+len(rec.Host)+len(rec.Session)+len(rec.Data)+hashSuffixLen)
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(rec.V), 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, rec.Seq, 10)
	b = append(b, `,"time":"`...)
	b = rec.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","host":`...)
	b = appendString(b, rec.Host)
	b = append(b, `,"type":`...)
	b = appendString(b, string(rec.Type))
	if rec.Session != "" {
		b = append(b, `,"session":`...)
		b = appendString(b, rec.Session)
	}
	b = append(b, `,"prev":"`...)
	b = append(b, rec.Prev...)
	b = append(b, `","data":`...)
	b = append(b, rec.Data...)
	b = append(b, '}')
	sum := sha256.Sum256(b)
	rec.Hash = hex.EncodeToString(sum[:])
	b = append(b[:len(b)-1], `,"hash":"`...)
	b = append(b, rec.Hash...)
	b = append(b, `"}`...)
	rec.Raw = b
}

// appendString appends s as a JSON string. Hosts, types and session ids
// are plain ASCII in practice; anything else goes through encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// ParseRecord decodes a stored line and checks that its hash matches its
// canonical bytes. The chain links (seq, prev) are checked by Verify.
func ParseRecord(line []byte) (*Record, error) {
	rec := &Record{}
	if err := json.Unmarshal(line, rec); err != nil {
		return nil, fmt.Errorf("not a record: %w", err)
	}
	rec.Raw = line
	if err := rec.checkHash(); err != nil {
		return rec, err
	}
	return rec, nil
}

// decodeRecord decodes a line without checking its hash (readers that only
// display records).
func decodeRecord(line []byte) (*Record, error) {
	rec := &Record{}
	if err := json.Unmarshal(line, rec); err != nil {
		return nil, fmt.Errorf("not a record: %w", err)
	}
	rec.Raw = line
	return rec, nil
}

var errHashMismatch = errors.New("hash does not match the record's contents (edited)")

func (rec *Record) checkHash() error {
	line := rec.Raw
	n := len(line)
	if n < hashSuffixLen+2 || !bytes.HasPrefix(line[n-hashSuffixLen:], []byte(`,"hash":"`)) || !bytes.HasSuffix(line, []byte(`"}`)) {
		return errors.New(`record does not end with its "hash" field`)
	}
	want := line[n-hashSuffixLen+9 : n-2]
	canonical := make([]byte, 0, n-hashSuffixLen+1)
	canonical = append(append(canonical, line[:n-hashSuffixLen]...), '}')
	sum := sha256.Sum256(canonical)
	var got [64]byte
	hex.Encode(got[:], sum[:])
	if !bytes.Equal(got[:], want) || rec.Hash != string(want) {
		return errHashMismatch
	}
	return nil
}

// Decode unmarshals the record's data into v.
func (rec *Record) Decode(v any) error {
	if err := json.Unmarshal(rec.Data, v); err != nil {
		return fmt.Errorf("record seq %d: decode %s data: %w", rec.Seq, rec.Type, err)
	}
	return nil
}
