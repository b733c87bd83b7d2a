package postgres

import (
	"fmt"
	"math"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// The classifier reads libpg_query's JSON output rather than its protobuf
// output. Both describe the same tree, but on this project's reference
// machine libpg_query needs ~50 µs to serialise a three-table join to
// protobuf (plus ~17 µs for Go to unmarshal it) and ~11 µs to write JSON.
// encoding/json would spend the difference again on maps and interfaces, so
// this file holds a small decoder into one flat slice of pointer-free
// values: strings are offsets into the input (only the rare escaped ones
// are copied), so a whole tree is one allocation the garbage collector
// never scans.
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

// span locates a string: s[off:off+n] of the decoded document when off >= 0,
// escaped[-off-1] when negative (a string that contained escapes).
type span struct{ off, n int32 }

// jval is one decoded value. Children of arrays and objects are stored
// contiguously in jtree.vals[first : first+n].
type jval struct {
	key   span // member name when the value belongs to an object
	str   span // string contents or the text of a number
	kind  jkind
	first int32
	n     int32
}

// jtree is a decoded document; root is its top-level value.
type jtree struct {
	s       string
	escaped []string
	vals    []jval
	root    jval
}

// text returns the string sp locates.
func (t *jtree) text(sp span) string {
	if sp.off < 0 {
		return t.escaped[-sp.off-1]
	}
	return t.s[sp.off : sp.off+sp.n]
}

// keyOf returns the member name of v.
func (t *jtree) keyOf(v jval) string { return t.text(v.key) }

// strOf returns the string contents or number text of v.
func (t *jtree) strOf(v jval) string { return t.text(v.str) }

// maxJSONDepth bounds nesting. Queries that could nest deeper than
// maxNesting never reach libpg_query (see classify_depth.go), so hitting
// this means something is wrong.
const maxJSONDepth = 100000

// jparser decodes documents. It can be reused (see Classifier.parsers): its
// buffers then serve the next document, and the tree it returned before is
// no longer valid.
type jparser struct {
	s       string
	pos     int
	depth   int
	vals    []jval
	stack   []jval // children of the containers being decoded, innermost last
	escaped []string
	tree    jtree
}

// maxPooledValues is the largest value buffer a parser keeps for reuse; the
// rare huge document does not pin its memory.
const maxPooledValues = 1 << 16

// parseJSON decodes s with a fresh parser.
func parseJSON(s string) (*jtree, error) {
	var p jparser
	return p.parse(s)
}

// parse decodes s into p's buffers.
func (p *jparser) parse(s string) (*jtree, error) {
	if len(s) > math.MaxInt32 {
		return nil, fmt.Errorf("%w: document of %d bytes is too large", ErrParseTree, len(s))
	}
	// Roughly one value per 10 bytes of output: avoids most regrowth.
	if want := len(s)/10 + 8; cap(p.vals) < want {
		p.vals = make([]jval, 0, want)
	}
	p.s, p.pos, p.depth = s, 0, 0
	p.vals, p.stack, p.escaped = p.vals[:0], p.stack[:0], p.escaped[:0]
	root, err := p.value(span{})
	if err != nil {
		return nil, err
	}
	p.space()
	if p.pos != len(p.s) {
		return nil, p.errorf("trailing data")
	}
	p.tree = jtree{s: s, escaped: p.escaped, vals: p.vals, root: root}
	return &p.tree, nil
}

// reset drops references to the last document; it reports whether the
// parser is worth keeping for reuse.
func (p *jparser) reset() bool {
	clear(p.escaped)
	p.s, p.tree = "", jtree{}
	return cap(p.vals) <= maxPooledValues && cap(p.stack) <= maxPooledValues
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

func (p *jparser) value(key span) (jval, error) {
	p.space()
	if p.pos >= len(p.s) {
		return jval{}, p.errorf("unexpected end")
	}
	switch p.s[p.pos] {
	case '{':
		return p.container(key, jObject, '}')
	case '[':
		return p.container(key, jArray, ']')
	}
	return p.scalar(key)
}

// scalar decodes a string, number, true, false or null.
func (p *jparser) scalar(key span) (jval, error) {
	switch c := p.s[p.pos]; {
	case c == '"':
		str, err := p.string()
		return jval{key: key, kind: jString, str: str}, err
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.pos
	number:
		for p.pos < len(p.s) {
			switch p.s[p.pos] {
			case '+', '-', '.', 'e', 'E', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
				p.pos++
			default:
				break number
			}
		}
		return jval{key: key, kind: jNumber, str: span{int32(start), int32(p.pos - start)}}, nil
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

// container decodes an object or array starting at its opening bracket.
// Its children are collected on p.stack while their own descendants are
// decoded, then moved to p.vals in one block so that they are contiguous.
func (p *jparser) container(key span, kind jkind, end byte) (jval, error) {
	if p.depth >= maxJSONDepth {
		return jval{}, p.errorf("nesting too deep")
	}
	p.depth++
	v, err := p.members(key, kind, end)
	p.depth--
	return v, err
}

func (p *jparser) members(key span, kind jkind, end byte) (jval, error) {
	p.pos++ // opening bracket
	mark := len(p.stack)
	p.space()
	if p.pos < len(p.s) && p.s[p.pos] == end {
		p.pos++
		return jval{key: key, kind: kind}, nil
	}
	for {
		var member span
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
		p.space()
		if p.pos >= len(p.s) {
			return jval{}, p.errorf("unexpected end")
		}
		var v jval
		var err error
		switch p.s[p.pos] {
		case '{':
			v, err = p.container(member, jObject, '}')
		case '[':
			v, err = p.container(member, jArray, ']')
		default:
			v, err = p.scalar(member)
		}
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
	first := len(p.vals)
	p.vals = append(p.vals, p.stack[mark:]...)
	p.stack = p.stack[:mark]
	return jval{key: key, kind: kind, first: int32(first), n: int32(len(p.vals) - first)}, nil
}

// string decodes a string starting at the opening quote. Bytes are kept as
// they are (libpg_query copies invalid UTF-8 through unchanged, and so must
// we: a name must compare exactly as the server will see it).
func (p *jparser) string() (span, error) {
	p.pos++ // opening quote
	start := p.pos
	i := strings.IndexByte(p.s[start:], '"')
	if i < 0 {
		return span{}, p.errorf("unterminated string")
	}
	if b := strings.IndexByte(p.s[start:start+i], '\\'); b >= 0 {
		p.pos = start + b
		str, err := p.escapedString(start)
		if err != nil {
			return span{}, err
		}
		p.escaped = append(p.escaped, str)
		return span{off: -int32(len(p.escaped)), n: int32(len(str))}, nil
	}
	p.pos = start + i + 1
	return span{int32(start), int32(i)}, nil
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
		if t.keyOf(c) == key {
			return c, true
		}
	}
	return jval{}, false
}

// getStr returns the string member key of object v, or "".
func (t *jtree) getStr(v jval, key string) string {
	if c, ok := t.get(v, key); ok && c.kind == jString {
		return t.strOf(c)
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
	for i, ch := range []byte(t.strOf(c)) {
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
