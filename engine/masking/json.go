package masking

import (
	"unicode/utf16"
	"unicode/utf8"

	"github.com/interlockhq/interlock/engine/policy"
)

// Masking inside JSON keeps the document valid: only string tokens (keys
// included: {"alice@example.com": 3} leaks as much as a value) and number
// tokens are rewritten, each as a whole JSON string. A string's escapes are
// decoded before the detectors run ("a\u0040b.com" is an address) and the
// masked string is encoded again. A number the detectors match (a card
// number stored as a JSON number) becomes a string holding the mask.
// Everything else is copied as it is. Input that is not valid JSON is masked
// the same way, token by token, without a validity guarantee.

// MaskJSON masks the detector hits in the JSON document src, keeping it
// valid JSON. Like MaskText, it returns src itself when nothing matched.
func (m *Masker) MaskJSON(dst, src []byte) (out []byte, counts Counts) {
	if m.on == 0 {
		return src, counts
	}
	out, changed := m.maskJSON(dst, src, &counts, false)
	if !changed {
		return src, counts
	}
	return out, counts
}

// maskJSON appends the masked document to dst, or reports false leaving dst
// untouched. byKey applies the column rules to object members by key name
// (notification payloads built with row_to_json).
func (m *Masker) maskJSON(dst, src []byte, c *Counts, byKey bool) ([]byte, bool) {
	last := 0
	changed := false
	replace := func(start, end int, tok []byte) {
		dst = append(dst, src[last:start]...)
		dst = append(dst, tok...)
		last, changed = end, true
	}
	var rule policy.Masker // rule for the next value (byKey)
	var label string
	for i := 0; i < len(src); {
		ch := src[i]
		var end int
		term := true // a string token is terminated
		switch {
		case ch == '"':
			end, term = jsonStringEnd(src, i)
		case ch == '-' || isDigit(ch):
			end = i + 1
			for end < len(src) && jsonNumberByte(src[end]) {
				end++
			}
		case byKey && rule != policy.MaskerNone && (ch == '{' || ch == '[' || ch == 't' || ch == 'f' || ch == 'n'):
			end = jsonValueEnd(src, i)
		default:
			i++
			continue
		}
		if byKey && ch == '"' && isKey(src, end) {
			rule = policy.MaskerNone
			if name, ok := jsonUnquote(src[i:end]); ok && m.columns {
				rule, label = m.spec.Column(string(name)), columnLabel(string(name))
			}
		} else if byKey && rule != policy.MaskerNone {
			c.Columns++
			replace(i, end, m.jsonMemberMask(rule, label, src[i:end]))
			rule, i = policy.MaskerNone, end
			continue
		}
		if m.on != 0 {
			if tok, ok := m.maskJSONToken(src, i, end, term, c); ok {
				replace(i, end, tok)
			}
		}
		i = end
	}
	if !changed {
		return dst, false
	}
	return append(dst, src[last:]...), true
}

// maskJSONToken masks the string or number token src[i:end]; term is false
// for a string that is not terminated.
func (m *Masker) maskJSONToken(src []byte, i, end int, term bool, c *Counts) ([]byte, bool) {
	if src[i] != '"' {
		masked, ok := m.mask(nil, src[:end], i, c)
		if !ok {
			return nil, false
		}
		return appendJSONString(nil, masked), true
	}
	if !term {
		// Unterminated string (invalid JSON): mask the raw text.
		return m.mask([]byte{'"'}, src[:end], i+1, c)
	}
	inner := src[i+1 : end-1]
	var masked []byte
	var ok bool
	if !hasBackslash(inner) {
		masked, ok = m.mask(nil, src[:end-1], i+1, c)
	} else if text, valid := jsonUnquote(src[i:end]); valid {
		masked, ok = m.mask(nil, text, 0, c)
	} else {
		// Invalid escapes: mask the raw text, keep it raw.
		if masked, ok = m.mask([]byte{'"'}, src[:end-1], i+1, c); ok {
			return append(masked, '"'), true
		}
	}
	if !ok {
		return nil, false
	}
	return appendJSONString(nil, masked), true
}

// jsonMemberMask masks the value of an object member whose key has a column
// rule: a JSON string of the whole masked value, or null.
func (m *Masker) jsonMemberMask(k policy.Masker, label string, tok []byte) []byte {
	if k == policy.MaskerNull || string(tok) == "null" {
		return []byte("null")
	}
	v := tok
	if tok[0] == '"' {
		if s, ok := jsonUnquote(tok); ok {
			v = s
		}
	}
	out, _ := m.MaskWhole(nil, k, label, v)
	return appendJSONString(nil, out)
}

func hasBackslash(b []byte) bool {
	for _, c := range b {
		if c == '\\' {
			return true
		}
	}
	return false
}

func jsonNumberByte(c byte) bool {
	return isDigit(c) || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'
}

// isKey reports whether the string token ending at src[end] is an object key.
func isKey(src []byte, end int) bool {
	for end < len(src) && jsonSpace(src[end]) {
		end++
	}
	return end < len(src) && src[end] == ':'
}

func jsonSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// jsonStringEnd returns the offset after the string token starting at
// src[i] == '"', or len(src) and false when it is not terminated.
func jsonStringEnd(src []byte, i int) (int, bool) {
	for p := i + 1; p < len(src); p++ {
		switch src[p] {
		case '\\':
			p++
		case '"':
			return p + 1, true
		}
	}
	return len(src), false
}

// jsonValueEnd returns the offset after the value starting at src[i]: an
// object or array with everything nested in it, or a literal.
func jsonValueEnd(src []byte, i int) int {
	if src[i] != '{' && src[i] != '[' {
		p := i
		for p < len(src) && class[src[p]]&cAlnum != 0 {
			p++
		}
		return p
	}
	depth := 0
	for p := i; p < len(src); p++ {
		switch src[p] {
		case '"':
			e, _ := jsonStringEnd(src, p)
			p = e - 1
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth == 0 {
				return p + 1
			}
		}
	}
	return len(src)
}

// jsonUnquote decodes the string token tok (with its quotes).
func jsonUnquote(tok []byte) ([]byte, bool) {
	if len(tok) < 2 || tok[0] != '"' || tok[len(tok)-1] != '"' {
		return nil, false
	}
	in := tok[1 : len(tok)-1]
	if !hasBackslash(in) {
		return in, true
	}
	out := make([]byte, 0, len(in))
	for p := 0; p < len(in); p++ {
		c := in[p]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		if p++; p >= len(in) {
			return nil, false
		}
		switch in[p] {
		case '"', '\\', '/':
			out = append(out, in[p])
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
		case 'u':
			r, ok := hex4(in, p+1)
			if !ok {
				return nil, false
			}
			p += 4
			if utf16.IsSurrogate(r) {
				if r2, ok := hex4(in, p+3); ok && p+2 < len(in) && in[p+1] == '\\' && in[p+2] == 'u' {
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						r = d
						p += 6
					}
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, false
		}
	}
	return out, true
}

func hex4(b []byte, p int) (rune, bool) {
	if p+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[p : p+4] {
		var v byte
		switch {
		case isDigit(c):
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	return r, true
}

// appendJSONString appends s as a JSON string token. Invalid UTF-8 is kept
// as it is (PostgreSQL text is valid in the database encoding).
func appendJSONString(dst, s []byte) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}
