package masking

import (
	"bytes"
	"encoding/json"

	"github.com/interlockhq/interlock/engine/policy"
)

// Errors, notices and notifications carry values too: a unique violation
// repeats the conflicting key ("Key (email)=(alice@example.com) already
// exists."), a NOT NULL or CHECK violation the whole row, a failed cast the
// value it could not read, and NOTIFY payloads whatever a trigger put there.
//
// The detectors run over every free-text field. In addition, when the spec
// has column rules, the values in PostgreSQL's own message shapes are
// attributed to their columns (English messages, lc_messages C or en):
//
//   - "Key (cols)=(vals) …" and "Partition key of the failing row contains
//     (cols) = (vals)": vals is masked whole with the strongest rule among
//     the columns named in cols (expression keys such as lower(email) count
//     their identifiers);
//   - "Failing row contains (…)": the row is redacted, since its values are
//     not attributed to columns;
//   - in the message, every quoted span is redacted (names too), since a
//     cast of a masked column, or passing it to a function, fails with the
//     column's value in one of many shapes.
//
// Other shapes (JSON parse errors' "Token … is invalid", PL/pgSQL contexts)
// get the detectors only; a relay that must be strict can drop the detail
// and context fields of errors in sessions with column rules.

// MaskErrorField masks the value of one ErrorResponse or NoticeResponse
// field of type code ('M' message, 'D' detail, 'H' hint, 'W' context, 'q'
// internal query, …). table is "schema.table" from the 's' and 't' fields
// when the server sent them, else "". Fields that never hold data
// (severity, SQLSTATE, positions, object names, source location) are
// returned as they are; unknown fields are scanned.
func (m *Masker) MaskErrorField(dst []byte, code byte, value []byte, table string) (out []byte, counts Counts) {
	switch code {
	case 'S', 'V', 'C', 'P', 'p', 'F', 'L', 'R', 's', 't', 'c', 'd', 'n':
		return value, counts
	}
	var spans []span
	if m.columns {
		if code == 'D' {
			spans = m.detailSpans(value, table)
		} else if code == 'M' {
			spans = messageSpans(value)
		}
	}
	if len(spans) == 0 {
		return m.MaskText(dst, value)
	}
	last := 0
	for _, sp := range spans {
		if sp.start < last {
			continue
		}
		dst = m.maskGap(dst, value, last, sp.start, &counts)
		k := sp.rule
		if k == policy.MaskerNull {
			k = policy.MaskerRedact
		}
		dst, _ = m.MaskWhole(dst, k, sp.label, value[sp.start:sp.end])
		counts.Columns++
		last = sp.end
	}
	return m.maskGap(dst, value, last, len(value), &counts), counts
}

// maskGap appends the masked text v[from:to].
func (m *Masker) maskGap(dst, v []byte, from, to int, c *Counts) []byte {
	if out, ok := m.mask(dst, v[:to], from, c); ok {
		return out
	}
	return append(dst, v[from:to]...)
}

// span is a value in a message, masked whole.
type span struct {
	start, end int
	rule       policy.Masker
	label      string
}

// keyEnds are what follows the value list of a "Key (…)=(…)" detail.
var keyEnds = [...]string{
	") already exists",
	") is not present in table",
	") is still referenced from table",
	") conflicts with existing key (",
	") conflicts with key (",
}

// detailSpans finds the values of a Detail field that column rules cover.
func (m *Masker) detailSpans(d []byte, table string) []span {
	var spans []span
	if k := bytes.Index(d, []byte("Failing row contains (")); k >= 0 {
		start := k + len("Failing row contains (")
		if e := bytes.LastIndexByte(d, ')'); e >= start {
			spans = append(spans, span{start, e, policy.MaskerRedact, "row"})
		}
		return spans
	}
	for from := 0; from < len(d); {
		k, sep := keyList(d, from)
		if k < 0 {
			break
		}
		cs := k
		ce := bytes.Index(d[cs:], sep)
		if ce < 0 {
			break
		}
		cols := d[cs : cs+ce]
		vs := cs + ce + len(sep)
		ve := -1
		for _, end := range keyEnds {
			if e := bytes.Index(d[vs:], []byte(end)); e >= 0 && (ve < 0 || vs+e < ve) {
				ve = vs + e
			}
		}
		if ve < 0 {
			ve = bytes.LastIndexByte(d, ')')
		}
		if ve < vs {
			break
		}
		if r := m.keyRule(cols, table); r != policy.MaskerNone {
			spans = append(spans, span{vs, ve, r, "key"})
		}
		from = ve + 1
	}
	return spans
}

// keyList finds the next "Key (" (or "key (", "contains (") column list at
// or after from: it returns the start of the list and the separator between
// it and the values.
func keyList(d []byte, from int) (int, []byte) {
	best, sep := -1, []byte(nil)
	for _, p := range [...]struct{ open, sep string }{
		{"Key (", ")=("},
		{"key (", ")=("},
		{"failing row contains (", ") = ("},
	} {
		if k := bytes.Index(d[from:], []byte(p.open)); k >= 0 && (best < 0 || from+k+len(p.open) < best) {
			best, sep = from+k+len(p.open), []byte(p.sep)
		}
	}
	return best, sep
}

// keyRule returns the strongest column rule among the identifiers of a key
// column list.
func (m *Masker) keyRule(cols []byte, table string) policy.Masker {
	best := policy.MaskerNone
	for p := 0; p < len(cols); {
		if !isWord(cols[p]) || isDigit(cols[p]) {
			p++
			continue
		}
		st := p
		for p < len(cols) && (isWord(cols[p]) || cols[p] >= 0x80) {
			p++
		}
		name := string(cols[st:p])
		best = max(best, m.spec.Column(name))
		if table != "" {
			best = max(best, m.spec.Column(table+"."+name))
		}
	}
	return best
}

// messageSpans finds the quoted spans of a Message field. PostgreSQL
// quotes both names and values in its messages, and casting or passing a
// masked column to a function fails with its value in many shapes
// (invalid input syntax …: "v", value "v" is out of range, relation "v"
// does not exist (::regclass), unrecognized configuration parameter "v"
// (current_setting), function "v" does not exist (::regproc), …): with
// column rules, every quoted span is redacted, names included, rather than
// trusting a list of shapes. The quotation marks of the server's message
// translations count too (»v«, «v», „v“, “v”, 「v」, ‘v’), in case a
// server is configured with another lc_messages.
func messageSpans(msg []byte) []span {
	var spans []span
	for i := 0; i < len(msg); {
		a, q := -1, -1
		for k := range quotePairs {
			if j := bytes.Index(msg[i:], []byte(quotePairs[k].open)); j >= 0 && (a < 0 || i+j < a) {
				a, q = i+j, k
			}
		}
		if a < 0 {
			break
		}
		from := a + len(quotePairs[q].open)
		b, blen := -1, 0
		for _, c := range quotePairs[q].close {
			if j := bytes.Index(msg[from:], []byte(c)); j >= 0 && (b < 0 || from+j < b) {
				b, blen = from+j, len(c)
			}
		}
		if b < 0 {
			// An unterminated quote: redact to the end.
			if from < len(msg) {
				spans = append(spans, span{from, len(msg), policy.MaskerRedact, "value"})
			}
			break
		}
		if b > from {
			spans = append(spans, span{from, b, policy.MaskerRedact, "value"})
		}
		i = b + blen
	}
	return spans
}

// quotePairs are the quotation marks of PostgreSQL's messages: an opening
// mark and the marks that may close it.
var quotePairs = [...]struct {
	open  string
	close []string
}{
	{`"`, []string{`"`}},
	{"»", []string{"«", "»"}}, // German »v«, Swedish and Danish »v»
	{"«", []string{"»"}},      // French, Italian, Russian, Ukrainian, Spanish
	{"„", []string{"“", "”"}}, // German, Czech „v“, Polish „v”
	{"“", []string{"”"}},      // typographic English, Chinese
	{"「", []string{"」"}},      // Japanese
	{"‘", []string{"’"}},
}

// MaskPayload masks a NotificationResponse payload. A payload that is a JSON
// object or array (pg_notify(…, row_to_json(NEW)::text)) stays valid JSON,
// and members whose key is a column name with a rule are masked whole by
// that rule; any other payload is masked as text.
func (m *Masker) MaskPayload(dst, payload []byte) (out []byte, counts Counts) {
	t := bytes.TrimLeft(payload, " \t\r\n")
	if len(t) > 0 && (t[0] == '{' || t[0] == '[') && json.Valid(payload) {
		out, changed := m.maskJSON(dst, payload, &counts, true)
		if !changed {
			return payload, counts
		}
		return out, counts
	}
	return m.MaskText(dst, payload)
}
