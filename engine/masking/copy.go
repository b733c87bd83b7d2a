package masking

import (
	"bytes"
	"fmt"
)

// COPY … TO STDOUT in text and CSV format. The server sends each row in one
// CopyData message; MaskCopyLine parses its fields the way PostgreSQL's COPY
// FROM would, masks each by its column's plan and writes it back in the same
// format: text-format escapes (\n, \t, \\, the delimiter) and CSV quoting
// are decoded before the detectors run and encoded again after. Fields that
// are not masked are copied byte for byte.
//
// Binary COPY is not handled: its values are in each type's binary format,
// so a relay must refuse it (or null every planned column) when a mask
// applies. The header line of CSV with HEADER holds column names: forward it
// unmasked.

// CopyFormat describes the rows of one COPY. Start from TextCopy or CSVCopy
// and apply the statement's options.
type CopyFormat struct {
	CSV       bool
	Delimiter byte   // '\t' in text, ',' in CSV
	Null      string // `\N` in text, "" in CSV
	Quote     byte   // CSV only: '"'
	Escape    byte   // CSV only: the quote unless set
}

// TextCopy returns the default text format.
func TextCopy() CopyFormat { return CopyFormat{Delimiter: '\t', Null: `\N`} }

// CSVCopy returns the default CSV format.
func CSVCopy() CopyFormat { return CopyFormat{CSV: true, Delimiter: ',', Quote: '"', Escape: '"'} }

// CheckAndSetDefaults fills in a missing delimiter, quote or escape and
// rejects combinations PostgreSQL rejects too.
func (f *CopyFormat) CheckAndSetDefaults() error {
	if f.Delimiter == 0 {
		f.Delimiter = '\t'
		if f.CSV {
			f.Delimiter = ','
		}
	}
	if f.CSV {
		if f.Quote == 0 {
			f.Quote = '"'
		}
		if f.Escape == 0 {
			f.Escape = f.Quote
		}
	}
	switch d := f.Delimiter; {
	case d == '\n' || d == '\r' || d >= 0x80:
		return fmt.Errorf("copy format: delimiter %q: %w", d, ErrCopyFormat)
	case !f.CSV && (d == '\\' || isAlnum(d) || d == '.'):
		return fmt.Errorf("copy format: text delimiter %q: %w", d, ErrCopyFormat)
	case f.CSV && (f.Quote == d || f.Quote == '\n' || f.Quote == '\r' || f.Escape == '\n' || f.Escape == '\r'):
		return fmt.Errorf("copy format: CSV quote %q, escape %q, delimiter %q: %w", f.Quote, f.Escape, d, ErrCopyFormat)
	}
	return nil
}

// MaskCopyLine masks one row of COPY TO output (its line terminator
// included) with one plan per column (Masker.Plan, Binary false). When
// nothing changed, out is line itself and nothing is allocated; otherwise
// out is dst with the masked row appended. A row that cannot be parsed or
// does not have len(plans) fields is an error: the relay must not forward
// it.
func (m *Masker) MaskCopyLine(dst []byte, f *CopyFormat, plans []Plan, line []byte) (out []byte, counts Counts, err error) {
	body := line
	if n := len(body); n > 0 && body[n-1] == '\n' {
		body = body[:n-1]
		if n > 1 && body[n-2] == '\r' {
			body = body[:n-2]
		}
	}
	w := copyWriter{dst: dst, line: line}
	if f.CSV {
		err = m.copyCSV(&w, f, plans, body, &counts)
	} else {
		err = m.copyText(&w, f, plans, body, &counts)
	}
	if err != nil {
		return nil, counts, err
	}
	if !w.changed {
		return line, counts, nil
	}
	return append(w.dst, line[w.last:]...), counts, nil
}

// copyWriter builds the masked row lazily: nothing is copied until a field
// changes.
type copyWriter struct {
	dst     []byte
	line    []byte
	last    int
	changed bool
}

// field starts replacing line[start:end]: the caller appends the new field
// to w.dst.
func (w *copyWriter) field(start, end int) {
	w.dst = append(w.dst, w.line[w.last:start]...)
	w.last, w.changed = end, true
}

// maskField masks one decoded field value. It returns the new value, or
// null, or changed false.
func (m *Masker) maskField(p *Plan, val []byte, c *Counts) (out []byte, null, changed bool) {
	out, null, n := m.MaskValue(nil, p, val)
	c.Add(&n)
	return out, null, null || n.Total() > 0
}

func (m *Masker) copyText(w *copyWriter, f *CopyFormat, plans []Plan, body []byte, c *Counts) error {
	if bytes.IndexByte(body, '\n') >= 0 || bytes.IndexByte(body, '\r') >= 0 {
		return fmt.Errorf("mask copy row: raw line break: %w", ErrCopyRow)
	}
	field := 0
	for p := 0; ; p++ {
		st := p
		for p < len(body) && body[p] != f.Delimiter {
			if body[p] == '\\' {
				p++
			}
			p++
		}
		p = min(p, len(body))
		if field >= len(plans) {
			return fmt.Errorf("mask copy row: more than %d fields: %w", len(plans), ErrFieldCount)
		}
		if raw := body[st:p]; !plans[field].Pass() && string(raw) != f.Null {
			val := copyTextDecode(raw)
			out, null, changed := m.maskField(&plans[field], val, c)
			if changed {
				w.field(st, p)
				if null {
					w.dst = append(w.dst, f.Null...)
				} else {
					w.dst = copyTextEncode(w.dst, out, f.Delimiter)
				}
			}
		}
		field++
		if p >= len(body) {
			break
		}
	}
	if field != len(plans) {
		return fmt.Errorf("mask copy row: %d fields for %d columns: %w", field, len(plans), ErrFieldCount)
	}
	return nil
}

// copyTextDecode undoes text-format escapes (as COPY FROM reads them).
func copyTextDecode(raw []byte) []byte {
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw
	}
	out := make([]byte, 0, len(raw))
	for p := 0; p < len(raw); p++ {
		c := raw[p]
		if c != '\\' || p+1 >= len(raw) {
			out = append(out, c)
			continue
		}
		p++
		switch c = raw[p]; c {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'v':
			out = append(out, '\v')
		case '0', '1', '2', '3', '4', '5', '6', '7':
			v := c - '0'
			for k := 0; k < 2 && p+1 < len(raw) && raw[p+1] >= '0' && raw[p+1] <= '7'; k++ {
				p++
				v = v<<3 | (raw[p] - '0')
			}
			out = append(out, v)
		case 'x':
			if p+1 < len(raw) && isHex(raw[p+1]) {
				v := hexVal(raw[p+1])
				p++
				if p+1 < len(raw) && isHex(raw[p+1]) {
					v = v<<4 | hexVal(raw[p+1])
					p++
				}
				out = append(out, v)
			} else {
				out = append(out, 'x')
			}
		default:
			out = append(out, c)
		}
	}
	return out
}

func hexVal(c byte) byte {
	switch {
	case isDigit(c):
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// copyTextEncode appends v escaped as COPY TO writes text format.
func copyTextEncode(dst, v []byte, delim byte) []byte {
	for _, c := range v {
		var e byte
		switch c {
		case '\b':
			e = 'b'
		case '\f':
			e = 'f'
		case '\n':
			e = 'n'
		case '\r':
			e = 'r'
		case '\t':
			e = 't'
		case '\v':
			e = 'v'
		case '\\':
			e = '\\'
		}
		if e == 0 && c == delim {
			e = c
		}
		if e != 0 {
			dst = append(dst, '\\', e)
			continue
		}
		dst = append(dst, c)
	}
	return dst
}

func (m *Masker) copyCSV(w *copyWriter, f *CopyFormat, plans []Plan, body []byte, c *Counts) error {
	field := 0
	var scratch []byte
	for p := 0; ; p++ {
		st := p
		quoted, in := false, false
		plain := true // the value is body[st:p] as it is
		for p < len(body) {
			ch := body[p]
			if in {
				if ch == f.Escape && p+1 < len(body) && (body[p+1] == f.Quote || body[p+1] == f.Escape) {
					plain = false
					p += 2
					continue
				}
				if ch == f.Quote {
					in = false
				}
				p++
				continue
			}
			if ch == f.Delimiter {
				break
			}
			if ch == '\n' || ch == '\r' {
				return fmt.Errorf("mask copy row: line break outside quotes: %w", ErrCopyRow)
			}
			if ch == f.Quote {
				in, quoted, plain = true, true, false
			}
			p++
		}
		if in {
			return fmt.Errorf("mask copy row: unterminated quoted field: %w", ErrCopyRow)
		}
		if field >= len(plans) {
			return fmt.Errorf("mask copy row: more than %d fields: %w", len(plans), ErrFieldCount)
		}
		raw := body[st:p]
		if !plans[field].Pass() && (quoted || string(raw) != f.Null) {
			val := raw
			switch {
			case plain:
			case len(raw) >= 2 && raw[0] == f.Quote && raw[len(raw)-1] == f.Quote &&
				bytes.IndexByte(raw[1:len(raw)-1], f.Quote) < 0 && bytes.IndexByte(raw[1:len(raw)-1], f.Escape) < 0:
				val = raw[1 : len(raw)-1] // "…" without escapes
			default:
				scratch = csvDecode(scratch[:0], raw, f)
				if val = scratch; val == nil {
					val = raw[:0] // empty, not NULL
				}
			}
			out, null, changed := m.maskField(&plans[field], val, c)
			if changed {
				w.field(st, p)
				if null {
					w.dst = append(w.dst, f.Null...)
				} else {
					w.dst = csvEncode(w.dst, out, f, quoted)
				}
			}
		}
		field++
		if p >= len(body) {
			break
		}
	}
	if field != len(plans) {
		return fmt.Errorf("mask copy row: %d fields for %d columns: %w", field, len(plans), ErrFieldCount)
	}
	return nil
}

// csvDecode appends the value of the raw CSV field (quotes removed, escapes
// undone) to dst.
func csvDecode(dst, raw []byte, f *CopyFormat) []byte {
	in := false
	for p := 0; p < len(raw); p++ {
		ch := raw[p]
		if in && ch == f.Escape && p+1 < len(raw) && (raw[p+1] == f.Quote || raw[p+1] == f.Escape) {
			p++
			dst = append(dst, raw[p])
			continue
		}
		if ch == f.Quote {
			in = !in
			continue
		}
		dst = append(dst, ch)
	}
	return dst
}

// csvEncode appends v as a CSV field, quoted when it was or when it must be
// (it holds the delimiter, the quote, a line break, or equals the NULL
// string).
func csvEncode(dst, v []byte, f *CopyFormat, quote bool) []byte {
	if !quote {
		quote = string(v) == f.Null || string(v) == `\.`
		for _, c := range v {
			if c == f.Delimiter || c == f.Quote || c == '\n' || c == '\r' {
				quote = true
				break
			}
		}
	}
	if !quote {
		return append(dst, v...)
	}
	dst = append(dst, f.Quote)
	for _, c := range v {
		if c == f.Quote || c == f.Escape {
			dst = append(dst, f.Escape)
		}
		dst = append(dst, c)
	}
	return append(dst, f.Quote)
}
