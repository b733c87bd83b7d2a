package postgres

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// libpg_query parses without recursion (bison keeps its own bounded stack),
// but writes its output tree recursively in C, without a depth check. A
// left-deep chain such as 1 + 1 + … + 1, a JOIN chain or a COLLATE chain
// costs about 100 bytes of C stack per level there: some 80,000 levels (a
// 400 kB query) overflow an 8 MiB thread stack and crash the whole engine.
// A crash is not an error Go can recover from, so such queries must be
// refused before they reach libpg_query.
//
// maxNesting bounds an over-estimate of the tree depth: at a few hundred
// bytes per level it keeps a statement well under 2 MiB of C stack (cgo
// calls run on threads with glibc's default stack, RLIMIT_STACK, normally
// 8 MiB), while legitimate queries stay far below it: lists (commas, AND/OR
// chains, CASE branches) do not nest.
const maxNesting = 4000

// tooDeep reports whether sql could nest deeper than maxNesting. Most
// queries have fewer tokens than that and are cleared by counting bytes;
// longer ones are tokenised with PostgreSQL's scanner (which does not
// recurse) and measured by nestingBound.
func tooDeep(sql string) bool {
	if tokenBound(sql) <= maxNesting {
		return false
	}
	scan, err := pg_query.Scan(sql)
	if err != nil {
		// The scanner rejects only what the parser rejects too; the parse
		// that follows reports it with the parser's message.
		return false
	}
	return nestingBound(scan.GetTokens()) > maxNesting
}

// tokenBound is at least the number of tokens in sql: every token starts
// either with a byte that is not part of a word, or at the start of a run of
// word bytes.
func tokenBound(sql string) int {
	n := 0
	inWord := false
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			inWord = false
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '$' || c >= 0x80:
			if !inWord {
				n++
			}
			inWord = true
		default:
			n++
			inWord = false
		}
	}
	return n
}

// nestingBound over-estimates the depth of the parse tree of a token
// stream. Brackets ( [ and CASE … END open a level; within a level, items
// are separated by tokens below which nothing chains (, ; AND OR WHEN THEN
// ELSE: their operands become list elements, not nested nodes); every
// other token that is not a name or a constant (operators, keywords) may
// add one level to the item it is in. An item's bound is its token count
// plus the deepest bracket inside it.
func nestingBound(tokens []*pg_query.ScanToken) int {
	type level struct {
		ops   int // chaining tokens in the current item
		child int // deepest bracket level in the current item
		best  int // deepest item closed so far
	}
	stack := []level{{}}
	closeItem := func(l *level) {
		l.best = max(l.best, l.ops+l.child)
		l.ops, l.child = 0, 0
	}
	for _, t := range tokens {
		top := &stack[len(stack)-1]
		switch t.Token {
		case pg_query.Token_ASCII_40, pg_query.Token_ASCII_91, pg_query.Token_CASE: // ( [ CASE
			stack = append(stack, level{})
		case pg_query.Token_ASCII_41, pg_query.Token_ASCII_93, pg_query.Token_END_P: // ) ] END
			if len(stack) == 1 {
				top.ops++ // END as a statement (END TRANSACTION), or unbalanced
				continue
			}
			closeItem(top)
			depth := top.best + 1
			stack = stack[:len(stack)-1]
			parent := &stack[len(stack)-1]
			parent.child = max(parent.child, depth)
		case pg_query.Token_ASCII_44, pg_query.Token_ASCII_59, // , ;
			pg_query.Token_AND, pg_query.Token_OR,
			pg_query.Token_WHEN, pg_query.Token_THEN, pg_query.Token_ELSE:
			closeItem(top)
		case pg_query.Token_IDENT, pg_query.Token_UIDENT,
			pg_query.Token_FCONST, pg_query.Token_SCONST, pg_query.Token_USCONST,
			pg_query.Token_BCONST, pg_query.Token_XCONST, pg_query.Token_ICONST,
			pg_query.Token_PARAM, pg_query.Token_SQL_COMMENT, pg_query.Token_C_COMMENT:
			// Names, constants and comments do not nest.
		default:
			top.ops++
		}
	}
	// Close whatever is left open (the parser will reject it anyway).
	for len(stack) > 1 {
		top := &stack[len(stack)-1]
		closeItem(top)
		depth := top.best + 1
		stack = stack[:len(stack)-1]
		parent := &stack[len(stack)-1]
		parent.child = max(parent.child, depth)
	}
	closeItem(&stack[0])
	return stack[0].best
}
