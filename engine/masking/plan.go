package masking

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
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
	// KindBinary: another type in binary format. A column rule makes it
	// NULL; so do detectors, unless the type is one whose value they can
	// read (below) or cannot hide text in (binaryPasses). Arrays, rows,
	// xml and domains over text carry text the relay does not decode.
	KindBinary
	// KindBinaryInt, KindBinaryNumeric and KindBinaryBytes: int2/4/8,
	// numeric and bytea in binary format, which the detectors read as the
	// value's text (a card number in a bigint) or the raw bytes; a hit
	// makes the value NULL, as for KindOther.
	KindBinaryInt
	KindBinaryNumeric
	KindBinaryBytes
	// KindBinaryFloat: float4/float8 in binary format, read as the
	// shortest decimal that PostgreSQL prints (exact for integers below
	// 2^53, so a card number survives in a float8).
	KindBinaryFloat
)

// Built-in types whose binary values need no detector: they hold no text
// and too few digits for any detector (oid: 10 at most).
const (
	oidBool        = 16
	oidBytea       = 17
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidOID         = 26
	oidFloat4      = 700
	oidFloat8      = 701
	oidDate        = 1082
	oidTime        = 1083
	oidTimestamp   = 1114
	oidTimestampTZ = 1184
	oidInterval    = 1186
	oidTimeTZ      = 1266
	oidNumeric     = 1700
	oidUUID        = 2950
)

// binaryKind is the kind of a binary value of a non-text type under
// detectors, and false when the value passes untouched.
func binaryKind(oid uint32) (Kind, bool) {
	switch oid {
	case oidBool, oidOID, oidDate, oidTime, oidTimestamp, oidTimestampTZ, oidInterval, oidTimeTZ, oidUUID:
		return KindBinary, false
	case oidInt2, oidInt4, oidInt8:
		return KindBinaryInt, true
	case oidFloat4, oidFloat8:
		return KindBinaryFloat, true
	case oidNumeric:
		return KindBinaryNumeric, true
	case oidBytea:
		return KindBinaryBytes, true
	}
	return KindBinary, true
}

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
	// Unresolved marks a column of a table the relay could not name (its
	// catalog lookup failed): under column rules its values become NULL,
	// since a rule naming its table might apply.
	Unresolved bool
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
			if c.Unresolved {
				p.Rule = policy.MaskerNull
			}
		}
		switch {
		case p.Rule != policy.MaskerNone:
			p.label = columnLabel(c.Name)
			p.Nulled = p.Rule != policy.MaskerNull && (p.Kind == KindOther || p.Kind == KindBinary)
		case m.on != 0 && p.Kind != KindBinary:
			p.Detect = true
		case m.on != 0:
			p.Kind, p.Detect = binaryKind(c.TypeOID)
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
	case KindOther, KindBinaryBytes:
		if m.anyHit(src, &counts) {
			return nil, true, counts
		}
	case KindBinaryInt, KindBinaryNumeric, KindBinaryFloat:
		text, ok := binaryNumberText(p.Kind, src)
		if !ok || m.anyHit(text, &counts) {
			counts.Columns += b2i(!ok)
			return nil, true, counts
		}
	case KindBinary:
		// A binary value the detectors cannot read: fail closed.
		counts.Columns = 1
		return nil, true, counts
	}
	if !changed {
		return src, false, counts
	}
	return out, false, counts
}

// anyHit counts the detector hits in src and reports whether there was one.
func (m *Masker) anyHit(src []byte, counts *Counts) bool {
	sc := newScanner(src, 0, m.on)
	for h, ok := sc.next(); ok; h, ok = sc.next() {
		counts.Detectors[h.det]++
	}
	return counts.Total() > 0
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// binaryNumberText is the decimal text of a binary int2/int4/int8 or numeric
// value (false: a malformed value).
func binaryNumberText(k Kind, src []byte) ([]byte, bool) {
	if k == KindBinaryFloat {
		switch len(src) {
		case 4:
			return strconv.AppendFloat(nil, float64(math.Float32frombits(binary.BigEndian.Uint32(src))), 'f', -1, 32), true
		case 8:
			return strconv.AppendFloat(nil, math.Float64frombits(binary.BigEndian.Uint64(src)), 'f', -1, 64), true
		}
		return nil, false
	}
	if k == KindBinaryInt {
		switch len(src) {
		case 2:
			return strconv.AppendInt(nil, int64(int16(binary.BigEndian.Uint16(src))), 10), true
		case 4:
			return strconv.AppendInt(nil, int64(int32(binary.BigEndian.Uint32(src))), 10), true
		case 8:
			return strconv.AppendInt(nil, int64(binary.BigEndian.Uint64(src)), 10), true
		}
		return nil, false
	}
	// numeric: ndigits, weight, sign, dscale (int16 each), then ndigits
	// base-10000 digits; the first is at 10000^weight.
	if len(src) < 8 {
		return nil, false
	}
	ndigits := int(binary.BigEndian.Uint16(src))
	weight := int(int16(binary.BigEndian.Uint16(src[2:])))
	sign := binary.BigEndian.Uint16(src[4:])
	if len(src) != 8+2*ndigits || ndigits > 1000 || weight > 1000 || weight < -1000 {
		return nil, false
	}
	if sign != 0 && sign != 0x4000 {
		return []byte("NaN"), true // NaN, ±Infinity
	}
	digit := func(i int) int {
		if i < 0 || i >= ndigits {
			return 0
		}
		return int(binary.BigEndian.Uint16(src[8+2*i:]))
	}
	out := make([]byte, 0, 4*(ndigits+2))
	if sign == 0x4000 {
		out = append(out, '-')
	}
	if weight < 0 {
		out = append(out, '0')
	}
	for i := 0; i <= weight; i++ {
		if i == 0 {
			out = strconv.AppendInt(out, int64(digit(i)), 10)
		} else {
			out = append(out, fmt.Sprintf("%04d", digit(i))...)
		}
	}
	if ndigits > weight+1 {
		out = append(out, '.')
		for i := weight + 1; i < ndigits; i++ {
			out = append(out, fmt.Sprintf("%04d", digit(i))...)
		}
	}
	return out, true
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
