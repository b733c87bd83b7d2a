package postgres

import (
	"strings"
	"unicode/utf8"
)

// Clients that inline their values (pgbench -S, most agents) send a new text
// for every row they touch, and an exact-text cache never hits for them. The
// classifier therefore also caches under a key in which small integer
// literals are replaced by 0. That is sound only where two texts with the
// same key are guaranteed to classify alike, so the scan below refuses
// everything it does not understand exactly, and Classify stores under such
// a key only results that never looked at a literal's value.
//
// Why a literal of 1–9 digits, with no identifier byte, digit, '.' or '$'
// next to it, is safe to replace: PostgreSQL's scanner makes it an integer
// constant (ICONST) of its own whatever its value (nine digits always fit an
// int32; ten may overflow to a numeric, a Float node), so replacing it
// changes no other token. The grammar then uses an ICONST's value without
// looking at it, with two exceptions, found by listing every rule over
// ICONST, Iconst, SignedIconst, NumericOnly and I_or_F_const in libpg_query's
// gram.c: FLOAT(p) is float4, float8 or a syntax error depending on p, and
// ALTER [COLUMN] n SET STATISTICS rejects column numbers outside 1–32767.
// Texts with the keywords FLOAT or STATISTICS are not normalized. (Trigger
// arguments turn integers into strings; the walker flags those as read.)
// What remains value-dependent is the walker's own reading of constants,
// which sets walker.literalValues.

// literalKeyPrefix starts every normalized key. Classify never caches a text
// beginning with a NUL byte under its exact text, so the two kinds of key
// cannot meet.
const literalKeyPrefix = "\x00n:"

// maxLiteralDigits is the longest literal that always lexes as an integer.
const maxLiteralDigits = 9

// literalKey returns the normalized cache key of sql and the text the
// classifier reports for its statement (the text before a trailing
// semicolon, trimmed). ok is false when sql holds no integer literal to
// normalize, or anything the scan does not fully understand: a backslash, a
// NUL byte, invalid UTF-8, a comment, a dollar quote or a $ in an
// identifier, a prefixed string (E'…', B'…', X'…', N'…', U&'…', U&"…"), an
// unterminated quote, the keywords FLOAT or STATISTICS, or more than one
// statement. Quoted strings and identifiers are copied untouched; $n
// parameters are kept.
func literalKey(sql string) (key, text string, ok bool) {
	if strings.IndexByte(sql, '\\') >= 0 || strings.IndexByte(sql, 0) >= 0 || !utf8.ValidString(sql) {
		return "", "", false
	}
	var b strings.Builder
	b.Grow(len(literalKeyPrefix) + len(sql))
	b.WriteString(literalKeyPrefix)
	copied := 0 // sql[copied:i] is still to be copied verbatim
	literals := 0
	semi := -1 // the statement's terminating semicolon
	for i := 0; i < len(sql); {
		c := sql[i]
		if semi >= 0 {
			// After the semicolon only whitespace: anything else is a
			// second statement (or a second, empty one).
			if !isSQLSpace(c) {
				return "", "", false
			}
			i++
			continue
		}
		switch {
		case c == '\'' || c == '"':
			if i > 0 && (isIdentCont(sql[i-1]) || sql[i-1] == '&') {
				return "", "", false
			}
			end := closingQuote(sql, i)
			if end < 0 {
				return "", "", false
			}
			i = end + 1
		case c == '$':
			j := i + 1
			for j < len(sql) && isDigit(sql[j]) {
				j++
			}
			if j == i+1 {
				return "", "", false
			}
			i = j // a parameter, kept as written
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-', c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			return "", "", false
		case c == ';':
			semi = i
			i++
		case isDigit(c):
			j := i
			for j < len(sql) && isDigit(sql[j]) {
				j++
			}
			if j-i <= maxLiteralDigits && (i == 0 || !isNumberNeighbour(sql[i-1])) && (j == len(sql) || !isNumberNeighbour(sql[j])) {
				b.WriteString(sql[copied:i])
				b.WriteByte('0')
				copied = j
				literals++
			}
			i = j
		case isIdentCont(c):
			// A word: keyword or identifier, digits included (t1, int4).
			j := i
			for j < len(sql) && isIdentCont(sql[j]) && sql[j] != '$' {
				j++
			}
			if w := sql[i:j]; len(w) == len("float") && strings.EqualFold(w, "float") || len(w) == len("statistics") && strings.EqualFold(w, "statistics") {
				return "", "", false
			}
			i = j
		default:
			i++
		}
	}
	if literals == 0 {
		return "", "", false
	}
	b.WriteString(sql[copied:])
	if semi >= 0 {
		sql = sql[:semi]
	}
	return b.String(), strings.TrimSpace(sql), true
}

// closingQuote returns the index of the quote closing the string or quoted
// identifier that opens at sql[i], or -1. A doubled quote is part of it.
func closingQuote(sql string, i int) int {
	q := sql[i]
	for j := i + 1; ; {
		k := strings.IndexByte(sql[j:], q)
		if k < 0 {
			return -1
		}
		j += k
		if j+1 < len(sql) && sql[j+1] == q {
			j += 2
			continue
		}
		return j
	}
}

// isNumberNeighbour reports whether c next to a run of digits would make it
// part of another token: an identifier, a parameter, a numeric with a
// fraction, exponent, underscore or base prefix, or trailing junk.
func isNumberNeighbour(c byte) bool {
	return isIdentCont(c) || c == '.'
}

// isSQLSpace reports whether c is whitespace to PostgreSQL's scanner.
func isSQLSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}
