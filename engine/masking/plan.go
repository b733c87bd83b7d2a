package masking

import (
	"strings"
	"unicode"

	"github.com/interlockhq/interlock/engine/policy"
)

// PostgreSQL type OIDs the masking treats specially.
const (
	OIDName    = 19
	OIDText    = 25
	OIDJSON    = 114
	OIDUnknown = 705
	OIDBPChar  = 1042
	OIDVarchar = 1043
	OIDJSONB   = 3802
)

// TextLike reports whether values of the built-in type oid are text that a
// masked text can replace and remain valid: text, varchar, bpchar, name,
// unknown, json and jsonb (the JSON ones through MaskJSON only). Every other
// OID, including those of extension types such as citext, whose OIDs differ
// per database, is not text-like; a relay that resolved citext's OID from the
// catalog says so with Column.TextType.
func TextLike(oid uint32) bool {
	switch oid {
	case OIDText, OIDVarchar, OIDBPChar, OIDName, OIDUnknown, OIDJSON, OIDJSONB:
		return true
	}
	return false
}

// Kind says how a column's values are encoded, which decides how they can be
// masked.
type Kind uint8

const (
	// KindText: a text-like type, in text or binary format (the binary
	// format of text types is the text itself).
	KindText Kind = iota
	// KindJSON: json in either format, jsonb in text format. Masking
	// rewrites only string and number tokens and keeps the document valid.
	KindJSON
	// KindJSONB: jsonb in binary format: a version byte (1), then JSON text.
	KindJSONB
	// KindOther: another type in text format ("4111111111111111" in a
	// bigint, "10.0.0.1" in an inet). A masked text would not be a valid
	// value of the type, so a detector hit or a column rule makes it NULL.
	KindOther
	// KindBinary: another type in binary format. Detectors cannot read it;
	// a column rule makes it NULL.
	KindBinary
)

// KindOf returns the kind of values of type oid in the given format.
func KindOf(oid uint32, binary bool) Kind {
	switch {
	case oid == OIDJSONB && binary:
		return KindJSONB
	case oid == OIDJSON || oid == OIDJSONB:
		return KindJSON
	case TextLike(oid):
		return KindText
	case binary:
		return KindBinary
	}
	return KindOther
}

// Column describes one result column as the relay knows it from a
// RowDescription (and, for COPY, the catalog).
type Column struct {
	// Name is "schema.table.column" when the column traces back to a table
	// (RowDescription's table OID and attribute number, resolved in the
	// catalog), otherwise the output column name.
	Name    string
	TypeOID uint32
	Binary  bool // format code 1
	// TextType marks a text type TextLike does not know (citext, resolved by
	// OID from the catalog).
	TextType bool
}

// Plan is what to do with the values of one column, resolved once per
// RowDescription by Masker.Plan.
type Plan struct {
	// Rule is the column rule's masker, policy.MaskerNone when no rule
	// applies.
	Rule policy.Masker
	// Detect says the detectors run on the values (no rule applies and some
	// detector is on; never for KindBinary).
	Detect bool
	Kind   Kind
	// Nulled says the rule's masker cannot produce a valid value of the
	// column's type (KindOther, KindBinary), so values become NULL. A
	// stricter relay may refuse the column instead.
	Nulled bool
	label  string
}

// Pass reports whether values are forwarded untouched.
func (p *Plan) Pass() bool { return p.Rule == policy.MaskerNone && !p.Detect }

// Plan resolves the column rules and detectors for each column. The relay
// calls it once per RowDescription (or COPY column list) and keeps the
// result for the rows that follow.
func (m *Masker) Plan(cols []Column) []Plan {
	plans := make([]Plan, len(cols))
	for i, c := range cols {
		p := &plans[i]
		p.Kind = KindOf(c.TypeOID, c.Binary)
		if c.TextType && (p.Kind == KindOther || p.Kind == KindBinary) {
			p.Kind = KindText
		}
		if m.columns {
			p.Rule = m.spec.Column(c.Name)
		}
		switch {
		case p.Rule != policy.MaskerNone:
			p.label = columnLabel(c.Name)
			p.Nulled = p.Rule != policy.MaskerNull && (p.Kind == KindOther || p.Kind == KindBinary)
		case m.on != 0 && p.Kind != KindBinary:
			p.Detect = true
		}
	}
	return plans
}

// columnLabel is the bare column name, for the redaction marker, when it is
// a plain identifier.
func columnLabel(name string) string {
	name = name[strings.LastIndexByte(name, '.')+1:]
	if name == "" || len(name) > 63 {
		return "column"
	}
	for _, r := range name {
		if r != '_' && !isLetterOrDigit(r) {
			return "column"
		}
	}
	return name
}

func isLetterOrDigit(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }

// MaskValue masks one value of a column planned as p. src nil is SQL NULL
// and stays NULL. null reports that the value becomes NULL; otherwise out is
// the value to send: src itself when nothing changed (no allocation), or dst
// with the masked value appended.
func (m *Masker) MaskValue(dst []byte, p *Plan, src []byte) (out []byte, null bool, counts Counts) {
	if src == nil {
		return nil, true, counts
	}
	if p.Rule != policy.MaskerNone {
		counts.Columns = 1
		if p.Rule == policy.MaskerNull || p.Nulled {
			return nil, true, counts
		}
		switch p.Kind {
		case KindJSON:
			return m.appendJSONWhole(dst, p.Rule, p.label, src), false, counts
		case KindJSONB:
			if len(src) > 0 && src[0] == 1 {
				src = src[1:] // hash the JSON text, as in text format
			}
			return m.appendJSONWhole(append(dst, 1), p.Rule, p.label, src), false, counts
		}
		out, _ = m.MaskWhole(dst, p.Rule, p.label, src)
		return out, false, counts
	}
	if !p.Detect {
		return src, false, counts
	}
	var changed bool
	switch p.Kind {
	case KindText:
		out, changed = m.mask(dst, src, 0, &counts)
	case KindJSON:
		out, changed = m.maskJSON(dst, src, &counts, false)
	case KindJSONB:
		if len(src) == 0 || src[0] != 1 {
			// An unknown jsonb version cannot be read: fail closed.
			counts.Columns = 1
			return nil, true, counts
		}
		var body []byte
		if body, changed = m.maskJSON(nil, src[1:], &counts, false); changed {
			out = append(append(dst, 1), body...)
		}
	case KindOther:
		sc := newScanner(src, 0, m.on)
		for h, ok := sc.next(); ok; h, ok = sc.next() {
			counts.Detectors[h.det]++
		}
		if counts.Total() > 0 {
			return nil, true, counts
		}
	}
	if !changed {
		return src, false, counts
	}
	return out, false, counts
}

// appendJSONWhole appends a whole JSON value masked by a column rule: a JSON
// string holding the redaction marker or the hash token (partial, which has
// no meaning for a JSON document, redacts).
func (m *Masker) appendJSONWhole(dst []byte, k policy.Masker, label string, src []byte) []byte {
	var tok []byte
	if k == policy.MaskerHash && len(m.key) > 0 {
		tok = m.appendHash(nil, src)
	} else {
		tok = []byte(m.marker(label))
	}
	return appendJSONString(dst, tok)
}
