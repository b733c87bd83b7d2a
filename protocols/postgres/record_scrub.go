package postgres

import (
	"strconv"
	"strings"
)

// scrubLiterals returns sql with every literal replaced by a placeholder
// ($n, numbered after the highest parameter the text already uses) and
// every comment removed, for recordings with redaction "parameters". It
// follows PostgreSQL's lexical rules under standard_conforming_strings on
// (which the engine pins): '…' with doubled quotes inside, E'…' with backslash
// escapes, B'…', X'…', N'…', U&'…', $tag$…$tag$, numbers (decimal, real,
// 0x/0o/0b, with _ separators), -- and nested /* */ comments; "quoted
// identifiers" are kept. Unterminated literals and comments run to the end
// of the text and are scrubbed too: whatever the bytes, nothing the
// scanner would read as a literal survives (tested against libpg_query's
// own scanner).
//
// It is a lexer, not a parser (pg_query.Normalize costs a parse, ~10 µs
// a statement): cheap enough to run on every recorded statement.
func scrubLiterals(sql string) string {
	var b strings.Builder
	b.Grow(len(sql))
	next := maxParam(sql) + 1
	var last byte // last byte written
	afterPlaceholder := false
	lex(sql, func(kind tokKind, tok string) {
		switch kind {
		case tokLiteral:
			// Keep the placeholder a token of its own: "$" + "$1" would
			// open a dollar quote, "a" + "$1" extend an identifier.
			if isIdentCont(last) {
				b.WriteByte(' ')
			}
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(next))
			next++
			last, afterPlaceholder = '0', true
			return
		case tokComment:
			b.WriteByte(' ')
			last = ' '
		default:
			if afterPlaceholder && isIdentCont(tok[0]) {
				b.WriteByte(' ')
			}
			b.WriteString(tok)
			last = tok[len(tok)-1]
		}
		afterPlaceholder = false
	})
	return b.String()
}

type tokKind uint8

const (
	tokOther tokKind = iota
	tokLiteral
	tokComment
	tokParam
)

// maxParam is the highest $n in sql (outside literals and comments).
func maxParam(sql string) int {
	m := 0
	lex(sql, func(kind tokKind, tok string) {
		if kind == tokParam {
			if n, err := strconv.Atoi(tok[1:]); err == nil && n > m {
				m = n
			}
		}
	})
	return m
}

func isIdentStart(c byte) bool {
	return c == '_' || c >= 0x80 || (c|0x20 >= 'a' && c|0x20 <= 'z')
}

func isIdentCont(c byte) bool { return isIdentStart(c) || c == '$' || (c >= '0' && c <= '9') }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// lex splits sql into tokens and calls emit for each; the concatenation of
// all tokens is sql.
func lex(sql string, emit func(tokKind, string)) {
	i := 0
	n := len(sql)
	for i < n {
		c := sql[i]
		start := i
		switch {
		case c == '-' && i+1 < n && sql[i+1] == '-':
			for i < n && sql[i] != '\n' && sql[i] != '\r' {
				i++
			}
			emit(tokComment, sql[start:i])
		case c == '/' && i+1 < n && sql[i+1] == '*':
			depth := 0
			for i < n {
				if sql[i] == '/' && i+1 < n && sql[i+1] == '*' {
					depth++
					i += 2
				} else if sql[i] == '*' && i+1 < n && sql[i+1] == '/' {
					depth--
					i += 2
					if depth == 0 {
						break
					}
				} else {
					i++
				}
			}
			emit(tokComment, sql[start:i])
		case c == '\'':
			i = quoted(sql, i, false)
			emit(tokLiteral, sql[start:i])
		case c == '"':
			i++
			for i < n {
				if sql[i] == '"' {
					if i+1 < n && sql[i+1] == '"' {
						i += 2
						continue
					}
					i++
					break
				}
				i++
			}
			emit(tokOther, sql[start:i])
		case c == '$':
			switch {
			case i+1 < n && isDigit(sql[i+1]):
				i++
				for i < n && isDigit(sql[i]) {
					i++
				}
				emit(tokParam, sql[start:i])
			default:
				j := i + 1
				for j < n && isIdentCont(sql[j]) && sql[j] != '$' {
					j++
				}
				if j < n && sql[j] == '$' && (j == i+1 || isIdentStart(sql[i+1])) {
					tag := sql[i : j+1]
					end := strings.Index(sql[j+1:], tag)
					if end < 0 {
						i = n
					} else {
						i = j + 1 + end + len(tag)
					}
					emit(tokLiteral, sql[start:i])
				} else {
					i++
					emit(tokOther, sql[start:i])
				}
			}
		case isDigit(c) || (c == '.' && i+1 < n && isDigit(sql[i+1])):
			i = number(sql, i)
			emit(tokLiteral, sql[start:i])
		case isIdentStart(c):
			for i < n && isIdentCont(sql[i]) {
				i++
			}
			word := sql[start:i]
			switch {
			case i < n && sql[i] == '\'' && len(word) == 1 && strings.ContainsRune("eEbBxXnN", rune(word[0])):
				i = quoted(sql, i, word[0]|0x20 == 'e')
				emit(tokLiteral, sql[start:i])
			case i+1 < n && sql[i] == '&' && (word == "u" || word == "U") && (sql[i+1] == '\'' || sql[i+1] == '"'):
				if sql[i+1] == '\'' {
					i = quoted(sql, i+1, false)
					emit(tokLiteral, sql[start:i])
				} else {
					emit(tokOther, sql[start:i])
				}
			default:
				emit(tokOther, word)
			}
		default:
			i++
			emit(tokOther, sql[start:i])
		}
	}
}

// quoted returns the end of the '…' string starting at sql[i] == '\”.
func quoted(sql string, i int, backslash bool) int {
	n := len(sql)
	i++
	for i < n {
		switch sql[i] {
		case '\\':
			if backslash {
				i += 2
				continue
			}
		case '\'':
			if i+1 < n && sql[i+1] == '\'' {
				i += 2
				continue
			}
			return i + 1
		}
		i++
	}
	return n
}

// number returns the end of the numeric literal starting at sql[i]
// (0x/0o/0b literals take every identifier character after the prefix:
// over-scrubbing is harmless).
func number(sql string, i int) int {
	n := len(sql)
	if sql[i] == '0' && i+1 < n && strings.ContainsRune("xXoObB", rune(sql[i+1])) {
		i += 2
		for i < n && (isIdentCont(sql[i]) && sql[i] != '$') {
			i++
		}
		return i
	}
	for i < n && (isDigit(sql[i]) || sql[i] == '_') {
		i++
	}
	if i < n && sql[i] == '.' && !(i+1 < n && sql[i+1] == '.') {
		i++
		for i < n && (isDigit(sql[i]) || sql[i] == '_') {
			i++
		}
	}
	if i < n && (sql[i] == 'e' || sql[i] == 'E') {
		j := i + 1
		if j < n && (sql[j] == '+' || sql[j] == '-') {
			j++
		}
		if j < n && isDigit(sql[j]) {
			i = j
			for i < n && isDigit(sql[i]) {
				i++
			}
		}
	}
	return i
}
