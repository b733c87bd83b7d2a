package postgres

import (
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// The classifier reads libpg_query's JSON output rather than its protobuf
// output. Both describe the same tree, but on this project's reference
// machine libpg_query needs ~50 µs to serialise a three-table join to
// protobuf (plus ~17 µs for Go to unmarshal it) and ~11 µs to write JSON.
// encoding/json would spend the difference again on maps and interfaces, so
// this file holds a small decoder into one flat slice: no allocation per
// value, strings without escapes point into the input.
//
// The input is produced by libpg_query, but it is decoded defensively
// (bounded depth, every error returned) because string contents come from the
// agent's SQL.

// jkind is the JSON type of a value.
type jkind uint8

const (
	jNull jkind = iota
	jFalse
	jTrue
	jNumber
	jString
	jArray
	jObject
)

// jval is one decoded value. Children of arrays and objects are stored
// contiguously in jtree.vals[first : first+n].
type jval struct {
	key   string // member name when the value belongs to an object
	str   string // string contents (unescaped) or the text of a number
	kind  jkind
	first int32
	n     int32
}

// jtree is a decoded document; root is its top-level value.
type jtree struct {
	vals []jval
	root jval
}

// maxJSONDepth bounds nesting. libpg_query stops far earlier (its stack depth
// check), so hitting this means something is wrong.
const maxJSONDepth = 10000

type jparser struct {
	s     string
	pos   int
	depth int
	vals  []jval
	stack []jval // children of the containers being decoded, innermost last
}

// parseJSON decodes s.
func parseJSON(s string) (*jtree, error) {
	// Roughly one value per 12 bytes of output: avoids most regrowth.
	p := jparser{s: s, vals: make([]jval, 0, len(s)/12+8), stack: make([]jval, 0, 64)}
	root, err := p.value("")
	if err != nil {
		return nil, err
	}
	p.space()
	if p.pos != len(p.s) {
		return nil, p.errorf("trailing data")
	}
	return &jtree{vals: p.vals, root: root}, nil
}

func (p *jparser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s at offset %d", ErrParseTree, fmt.Sprintf(format, args...), p.pos)
}

func (p *jparser) space() {
	for p.pos < len(p.s) {
		switch p.s[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *jparser) value(key string) (jval, error) {
	p.space()
	if p.pos >= len(p.s) {
		return jval{}, p.errorf("unexpected end")
	}
	switch c := p.s[p.pos]; {
	case c == '{':
		return p.container(key, jObject, '}')
	case c == '[':
		return p.container(key, jArray, ']')
	case c == '"':
		str, err := p.string()
		return jval{key: key, kind: jString, str: str}, err
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.pos
		for p.pos < len(p.s) && strings.IndexByte("+-.eE0123456789", p.s[p.pos]) >= 0 {
			p.pos++
		}
		return jval{key: key, kind: jNumber, str: p.s[start:p.pos]}, nil
	case strings.HasPrefix(p.s[p.pos:], "true"):
		p.pos += 4
		return jval{key: key, kind: jTrue}, nil
	case strings.HasPrefix(p.s[p.pos:], "false"):
		p.pos += 5
		return jval{key: key, kind: jFalse}, nil
	case strings.HasPrefix(p.s[p.pos:], "null"):
		p.pos += 4
		return jval{key: key, kind: jNull}, nil
	default:
		return jval{}, p.errorf("unexpected %q", c)
	}
}

// container decodes an object or array. Its children are collected on
// p.stack while their own descendants are decoded, then moved to p.vals in
// one block so that they are contiguous.
func (p *jparser) container(key string, kind jkind, end byte) (jval, error) {
	p.depth++
	if p.depth > maxJSONDepth {
		return jval{}, p.errorf("nesting too deep")
	}
	defer func() { p.depth-- }()
	p.pos++ // opening bracket
	mark := len(p.stack)
	p.space()
	if p.pos < len(p.s) && p.s[p.pos] == end {
		p.pos++
		return jval{key: key, kind: kind}, nil
	}
	for {
		var member string
		if kind == jObject {
			p.space()
			if p.pos >= len(p.s) || p.s[p.pos] != '"' {
				return jval{}, p.errorf("expected member name")
			}
			var err error
			if member, err = p.string(); err != nil {
				return jval{}, err
			}
			p.space()
			if p.pos >= len(p.s) || p.s[p.pos] != ':' {
				return jval{}, p.errorf("expected ':'")
			}
			p.pos++
		}
		v, err := p.value(member)
		if err != nil {
			return jval{}, err
		}
		p.stack = append(p.stack, v)
		p.space()
		if p.pos >= len(p.s) {
			return jval{}, p.errorf("unexpected end")
		}
		c := p.s[p.pos]
		p.pos++
		if c == end {
			break
		}
		if c != ',' {
			return jval{}, p.errorf("expected ',' or %q", end)
		}
	}
	children := p.stack[mark:]
	first := len(p.vals)
	p.vals = append(p.vals, children...)
	p.stack = p.stack[:mark]
	return jval{key: key, kind: kind, first: int32(first), n: int32(len(children))}, nil
}

// string decodes a string starting at the opening quote. Bytes are kept as
// they are (libpg_query copies invalid UTF-8 through unchanged, and so must
// we: a name must compare exactly as the server will see it).
func (p *jparser) string() (string, error) {
	p.pos++ // opening quote
	start := p.pos
	for p.pos < len(p.s) {
		switch p.s[p.pos] {
		case '"':
			str := p.s[start:p.pos]
			p.pos++
			return str, nil
		case '\\':
			return p.escapedString(start)
		}
		p.pos++
	}
	return "", p.errorf("unterminated string")
}

func (p *jparser) escapedString(start int) (string, error) {
	var b strings.Builder
	b.WriteString(p.s[start:p.pos])
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		switch c {
		case '"':
			p.pos++
			return b.String(), nil
		case '\\':
			if p.pos+1 >= len(p.s) {
				return "", p.errorf("unterminated escape")
			}
			e := p.s[p.pos+1]
			p.pos += 2
			switch e {
			case '"', '\\', '/':
				b.WriteByte(e)
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'u':
				r, ok := p.hex4()
				if !ok {
					return "", p.errorf("bad \\u escape")
				}
				if utf16.IsSurrogate(r) {
					r = p.lowSurrogate(r)
				}
				b.WriteRune(r)
			default:
				return "", p.errorf("bad escape %q", e)
			}
		default:
			b.WriteByte(c)
			p.pos++
		}
	}
	return "", p.errorf("unterminated string")
}

// lowSurrogate completes a UTF-16 surrogate pair; an unpaired half becomes
// U+FFFD, as encoding/json does.
func (p *jparser) lowSurrogate(hi rune) rune {
	if strings.HasPrefix(p.s[p.pos:], `\u`) {
		save := p.pos
		p.pos += 2
		if lo, ok := p.hex4(); ok {
			if r := utf16.DecodeRune(hi, lo); r != utf8.RuneError {
				return r
			}
		}
		p.pos = save
	}
	return utf8.RuneError
}

func (p *jparser) hex4() (rune, bool) {
	if p.pos+4 > len(p.s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(p.s[p.pos : p.pos+4]) {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	p.pos += 4
	return r, true
}

// children returns the members of an object or the elements of an array.
func (t *jtree) children(v jval) []jval {
	if v.kind != jObject && v.kind != jArray {
		return nil
	}
	return t.vals[v.first : v.first+v.n]
}

// get returns the member key of object v.
func (t *jtree) get(v jval, key string) (jval, bool) {
	for _, c := range t.children(v) {
		if c.key == key {
			return c, true
		}
	}
	return jval{}, false
}

// getStr returns the string member key of object v, or "".
func (t *jtree) getStr(v jval, key string) string {
	if c, ok := t.get(v, key); ok && c.kind == jString {
		return c.str
	}
	return ""
}

// getBool returns the boolean member key of object v (absent means false:
// libpg_query omits false fields).
func (t *jtree) getBool(v jval, key string) bool {
	c, ok := t.get(v, key)
	return ok && c.kind == jTrue
}

// getInt returns the integer member key of object v, or 0 when absent or
// not a plain integer.
func (t *jtree) getInt(v jval, key string) int {
	c, ok := t.get(v, key)
	if !ok || c.kind != jNumber {
		return 0
	}
	n, neg := 0, false
	for i, ch := range []byte(c.str) {
		switch {
		case i == 0 && ch == '-':
			neg = true
		case ch >= '0' && ch <= '9' && n < 1<<40:
			n = n*10 + int(ch-'0')
		default:
			return 0
		}
	}
	if neg {
		n = -n
	}
	return n
}
