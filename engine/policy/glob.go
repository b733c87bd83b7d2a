package policy

import (
	"errors"
	"strings"
)

// glob is a compiled name pattern. Names are split into segments by sep
// ('.' for SQL names, '/' for paths, 0 for flat names such as target names):
//
//   - '*' matches any run of characters within one segment,
//   - '?' matches one character other than sep,
//   - '[a-z]', '[!0-9]' match one character of (not in) a class,
//   - '\' escapes the next character,
//   - a segment that is exactly "**" matches zero or more whole segments.
//
// So "payroll.*" matches "payroll.salaries" but not "payroll.a.b", "*.*"
// matches every schema-qualified name and "/v1/**" every path under /v1.
// Matching is case-sensitive: PostgreSQL folds unquoted identifiers to lower
// case before the classifier sees them, so names arrive as stored.
//
// Matching never allocates: segments are found by index arithmetic.
type glob struct {
	pattern string
	sep     byte
	literal bool     // no metacharacters: compare with ==
	segs    []string // pattern split by sep (when sep != 0)

	// Fast paths for the shapes policies are made of; kind says which
	// applies, fix is the literal part.
	kind globKind
	fix  string
}

type globKind uint8

const (
	globGeneral globKind = iota
	globLiteral          // "public.orders"
	globPrefix           // "public.*", "public.order_*": fix, then no sep
	globSuffix           // "*.pg_sleep": no sep, then fix
	globAnySegs          // "*", "*.*": exactly len(segs) non-empty-or-empty segments
)

var errBadPattern = errors.New("syntax error in pattern")

// compileGlob checks the pattern syntax once so that matching cannot fail.
func compileGlob(pattern string, sep byte) (glob, error) {
	g := glob{pattern: pattern, sep: sep}
	if pattern == "" {
		return g, errors.New("empty pattern")
	}
	if !strings.ContainsAny(pattern, `*?[\`) {
		g.literal, g.kind = true, globLiteral
		return g, nil
	}
	if sep == 0 {
		g.segs = []string{pattern}
	} else {
		g.segs = splitUnescaped(pattern, sep)
	}
	for _, s := range g.segs {
		if err := checkSegment(s); err != nil {
			return g, err
		}
	}
	last := len(pattern) - 1
	switch {
	case pattern[last] == '*' && !strings.ContainsAny(pattern[:last], `*?[\`):
		g.kind, g.fix = globPrefix, pattern[:last]
	case pattern[0] == '*' && !strings.ContainsAny(pattern[1:], `*?[\`):
		g.kind, g.fix = globSuffix, pattern[1:]
	case sep != 0 && strings.Trim(pattern, "*"+string(sep)) == "" && !strings.Contains(pattern, "**"):
		g.kind = globAnySegs
	}
	return g, nil
}

// splitUnescaped splits on sep, except where sep is escaped by '\'.
func splitUnescaped(s string, sep byte) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// checkSegment validates escapes and character classes.
func checkSegment(s string) error {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 >= len(s) {
				return errBadPattern
			}
			i++
		case '[':
			end, ok := classEnd(s, i)
			if !ok {
				return errBadPattern
			}
			i = end
		}
	}
	return nil
}

// classEnd returns the index of the ']' closing the class that starts at i.
func classEnd(s string, i int) (int, bool) {
	j := i + 1
	if j < len(s) && (s[j] == '!' || s[j] == '^') {
		j++
	}
	first := true
	for ; j < len(s); j++ {
		switch {
		case s[j] == ']' && !first:
			return j, true
		case s[j] == '\\':
			j++
		}
		first = false
	}
	return 0, false
}

func (g *glob) String() string { return g.pattern }

// match reports whether name matches the pattern.
func (g *glob) match(name string) bool {
	switch g.kind {
	case globLiteral:
		return g.pattern == name
	case globPrefix:
		return len(name) >= len(g.fix) && name[:len(g.fix)] == g.fix &&
			(g.sep == 0 || strings.IndexByte(name[len(g.fix):], g.sep) < 0)
	case globSuffix:
		n := len(name) - len(g.fix)
		return n >= 0 && name[n:] == g.fix && (g.sep == 0 || strings.IndexByte(name[:n], g.sep) < 0)
	case globAnySegs:
		return strings.Count(name, string(g.sep)) == len(g.segs)-1
	}
	if g.sep == 0 {
		return matchSegment(g.segs[0], name)
	}
	return g.matchSegs(g.segs, name)
}

// matchSegs matches pattern segments against the remaining name. An empty
// name with no segments left is a match.
func (g *glob) matchSegs(segs []string, name string) bool {
	for len(segs) > 0 {
		if segs[0] == "**" {
			rest := segs[1:]
			if len(rest) == 0 {
				return true
			}
			// Try every suffix that starts at a segment boundary. Names are
			// short, so the quadratic worst case does not matter.
			for {
				if g.matchSegs(rest, name) {
					return true
				}
				i := strings.IndexByte(name, g.sep)
				if i < 0 {
					return false
				}
				name = name[i+1:]
			}
		}
		i := strings.IndexByte(name, g.sep)
		seg, more := name, false
		if i >= 0 {
			seg, name, more = name[:i], name[i+1:], true
		} else {
			name = ""
		}
		if !matchSegment(segs[0], seg) {
			return false
		}
		segs = segs[1:]
		if !more {
			// The name is used up; the rest of the pattern must be able to
			// match nothing, which only "**" segments can.
			for _, s := range segs {
				if s != "**" {
					return false
				}
			}
			return true
		}
		if len(segs) == 0 {
			return false
		}
	}
	return name == ""
}

// matchSegment matches one segment with the classic single-backtrack
// wildcard algorithm: O(len(p)·len(s)) at worst, never exponential. The
// caller has already split on the separator, so '*' and '?' can match any
// byte here.
func matchSegment(p, s string) bool {
	pi, si := 0, 0
	starP, starS := -1, 0
	for si < len(s) {
		if pi < len(p) {
			switch c := p[pi]; c {
			case '*':
				for pi < len(p) && p[pi] == '*' {
					pi++
				}
				starP, starS = pi, si
				continue
			case '?':
				pi++
				si++
				continue
			case '[':
				end, _ := classEnd(p, pi)
				if matchClass(p[pi+1:end], s[si]) {
					pi = end + 1
					si++
					continue
				}
			case '\\':
				if pi+1 < len(p) && p[pi+1] == s[si] {
					pi += 2
					si++
					continue
				}
			default:
				if c == s[si] {
					pi++
					si++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		// Let the last '*' swallow one more character and retry.
		starS++
		si = starS
		pi = starP
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// matchClass matches one byte against a class body such as "a-z_" or "!0-9".
func matchClass(class string, c byte) bool {
	negate := false
	if len(class) > 0 && (class[0] == '!' || class[0] == '^') {
		negate = true
		class = class[1:]
	}
	matched := false
	for i := 0; i < len(class); i++ {
		lo := class[i]
		if lo == '\\' && i+1 < len(class) {
			i++
			lo = class[i]
		}
		hi := lo
		if i+2 < len(class) && class[i+1] == '-' {
			hi = class[i+2]
			if hi == '\\' && i+3 < len(class) {
				hi = class[i+3]
				i++
			}
			i += 2
		}
		if lo <= c && c <= hi {
			matched = true
		}
	}
	return matched != negate
}

// globList is a list of patterns; it matches if any pattern does.
type globList []glob

func (l globList) match(name string) bool {
	for i := range l {
		if l[i].match(name) {
			return true
		}
	}
	return false
}

// covers reports whether every name matched by pattern q is also matched by
// the list, as far as a cheap check can tell: a catch-all, the same pattern,
// or a literal q that the list matches. Used by Lint only.
func (l globList) covers(q *glob) bool {
	for i := range l {
		p := &l[i]
		if p.pattern == q.pattern || p.isCatchAll() || (q.literal && p.match(q.pattern)) {
			return true
		}
	}
	return false
}

// isCatchAll reports whether the pattern matches every name of its kind
// (every segment is made of stars: "*", "*.*", "**"). SQL names of one kind
// always have the same number of segments, so "*.*" is a catch-all for
// tables.
func (g *glob) isCatchAll() bool {
	if g.literal {
		return false
	}
	for _, s := range g.segs {
		if strings.Trim(s, "*") != "" {
			return false
		}
	}
	return true
}
