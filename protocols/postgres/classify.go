package postgres

import (
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/interlockhq/interlock/engine/policy"
)

// Classifier turns SQL text into policy operations with the real PostgreSQL
// parser (libpg_query). It is safe for concurrent use; results are cached by
// exact statement text in a bounded LRU.
//
// A single statement with integer literals of up to nine digits (WHERE aid =
// 48213) is cached instead under its text with those literals replaced by 0,
// so that clients inlining their values hit the cache too. Only texts whose
// every byte the key's scanner understands are normalized (no comments,
// backslashes, dollar quotes, prefixed strings or second statement; see
// literalKey), and only results that did not depend on a literal's value are
// stored that way: a SET statement_timeout = 5, EXPLAIN (ANALYZE 0) or
// COMMENT ON LARGE OBJECT 1234 is still cached by exact text. A hit
// reports the statement's own text.
type Classifier struct {
	cache *lru // nil when caching is disabled
	cats  *categoryMemo
	// parsers holds *jparser for reuse: a parse tree's buffers are ~10 kB
	// per typical statement, and at tens of thousands of cache misses a
	// second the garbage collector's preemptions showed in the profile.
	parsers sync.Pool
}

// NewClassifier returns a classifier caching up to cacheSize query strings.
// cacheSize <= 0 disables the cache.
func NewClassifier(cacheSize int) *Classifier {
	c := &Classifier{cats: newCategoryMemo()}
	if cacheSize > 0 {
		c.cache = newLRU(cacheSize)
	}
	return c
}

// Classification is the result for one query string. It is shared through
// the cache and must not be modified: callers copy a Statement's Op (a plain
// struct copy; Objects is capped so that append reallocates) before filling
// Agent, Target, Roles or Attrs.InTransaction.
type Classification struct {
	Statements []Statement // one per statement; none for an empty query

	// literalValues is set when a statement's classification depends on
	// the value of a numeric constant (see walker.literalValues).
	literalValues bool
}

// Statement is the classification of one statement of a query string.
type Statement struct {
	// Op carries Protocol ("postgres"), Action, Objects, Attrs.HasWhere
	// (Attrs.RowEstimate is -1), and Unclassified/Reason. A statement that
	// cannot be understood is Unclassified and must be blocked.
	Op policy.Operation

	// Text is this statement's text, for the audit record.
	Text string

	// Tag is the command, as in the server's command tag ("SELECT",
	// "DELETE", "CREATE TABLE", …). Empty for unclassified statements.
	Tag string

	// Prepare is set by PREPARE name AS …: the name, with Op the
	// classification of the inner statement, which the session keeps for
	// EXECUTE.
	Prepare string

	// Execute is set by EXECUTE name (and by EXPLAIN [ANALYZE] EXECUTE
	// name): Op.Action is ActionUnknown and Op.Unclassified is false, and
	// Op.Objects holds only what the EXECUTE itself evaluates (functions in
	// its parameters). The session resolves it with ResolveExecute against
	// the classification it kept for that name at PREPARE time, and blocks
	// an EXECUTE of a name it does not know. Plain EXPLAIN EXECUTE is thereby
	// treated as if it ran the statement: stricter than needed, never looser.
	Execute string

	// Deallocate is set by DEALLOCATE name ("*" for DEALLOCATE ALL, and for
	// DISCARD ALL, which also drops every prepared statement).
	Deallocate string

	// TxControl describes a transaction-control statement. The session
	// should still follow ReadyForQuery's status byte, which is the
	// server's word on the transaction state; TxControl lets it anticipate.
	TxControl TxControl

	// RowLocks is set when the statement takes row locks (SELECT … FOR
	// UPDATE/NO KEY UPDATE/SHARE/KEY SHARE, in any subquery). The action
	// stays select, and every table the statement reads is also locked
	// (action lock, as LOCK TABLE): a row lock blocks the table's writers
	// for as long as the transaction lasts.
	RowLocks bool

	// ReadOnlyOn is set when the statement's changes of
	// (default_)transaction_read_only all turn read-only mode on, which
	// the guard on those settings lets through (psycopg2 sends it).
	ReadOnlyOn bool
}

// TxKind is the kind of a transaction-control statement.
type TxKind uint8

const (
	TxNone             TxKind = iota
	TxBegin                   // BEGIN, START TRANSACTION
	TxCommit                  // COMMIT, END
	TxRollback                // ROLLBACK, ABORT
	TxSavepoint               // SAVEPOINT name
	TxRelease                 // RELEASE [SAVEPOINT] name
	TxRollbackTo              // ROLLBACK TO [SAVEPOINT] name
	TxPrepare                 // PREPARE TRANSACTION 'gid': the session leaves the transaction
	TxCommitPrepared          // COMMIT PREPARED 'gid' (not allowed inside a transaction)
	TxRollbackPrepared        // ROLLBACK PREPARED 'gid'
)

var txKindNames = [...]string{
	TxNone:             "none",
	TxBegin:            "begin",
	TxCommit:           "commit",
	TxRollback:         "rollback",
	TxSavepoint:        "savepoint",
	TxRelease:          "release",
	TxRollbackTo:       "rollback_to",
	TxPrepare:          "prepare",
	TxCommitPrepared:   "commit_prepared",
	TxRollbackPrepared: "rollback_prepared",
}

func (k TxKind) String() string {
	if int(k) < len(txKindNames) {
		return txKindNames[k]
	}
	return "unknown"
}

// TxControl is what a transaction-control statement does.
type TxControl struct {
	Kind TxKind
	// Chain is set by COMMIT/ROLLBACK AND CHAIN: a new transaction starts
	// immediately with the same characteristics.
	Chain bool
	// Name is the savepoint name or the prepared transaction's GID.
	Name string
}

// ResolveExecute returns the operation an EXECUTE statement performs, given
// the operation its prepared statement was classified as: the prepared
// statement's action and objects, plus the objects of the EXECUTE itself
// (functions called in its parameters). The result shares nothing with
// either input.
func (s *Statement) ResolveExecute(prepared policy.Operation) policy.Operation {
	op := prepared
	op.Objects = make([]policy.Object, 0, len(prepared.Objects)+len(s.Op.Objects))
	op.Objects = append(op.Objects, prepared.Objects...)
	for _, o := range s.Op.Objects {
		if !hasObject(op.Objects, o) {
			op.Objects = append(op.Objects, o)
		}
	}
	op.Roles = append([]string(nil), prepared.Roles...)
	return op
}

// Classify classifies every statement of sql. A query the parser rejects
// gives a single Unclassified statement carrying the parser's message. The
// error is only for internal failures, and the caller must block then too.
func (c *Classifier) Classify(sql string) (*Classification, error) {
	// A text starting with NUL could be mistaken for a normalized key; the
	// server refuses it anyway, and refusing is cheap.
	if c.cache == nil || strings.HasPrefix(sql, "\x00") {
		return c.classify(sql)
	}
	if cl, ok := c.cache.get(sql); ok {
		return cl, nil
	}
	var key, text string
	normal := false
	if len(sql) <= maxCachedQuery {
		key, text, normal = literalKey(sql)
	}
	if normal {
		if cl, ok := c.cache.get(key); ok {
			if cl.Statements[0].Text != text {
				return cl.withText(text), nil
			}
			// The text that was classified, seen again: applications
			// repeat their fixed queries (LIMIT 10) verbatim, and the
			// exact key spares them the scan. At most a few such entries
			// per normalized one, so no churn.
			c.cache.add(sql, cl)
			return cl, nil
		}
	}
	cl, err := c.classify(sql)
	if err != nil {
		return nil, err
	}
	if normal && cl.reusable(text) {
		// Only under the normalized key: the exact text would mostly be
		// one more entry that never repeats.
		c.cache.add(key, cl)
	} else {
		c.cache.add(sql, cl)
	}
	return cl, nil
}

// reusable reports whether cl, the classification of a text with statement
// text text, holds for every text with the same normalized key: one
// classified statement that read no literal's value. The text check guards
// literalKey's idea of the statement's bounds against the parser's.
func (cl *Classification) reusable(text string) bool {
	return len(cl.Statements) == 1 && !cl.literalValues && !cl.Statements[0].Op.Unclassified && cl.Statements[0].Text == text
}

// withText returns a copy of the cached single-statement classification cl
// for a statement whose text is text: cached values are shared and must not
// be modified. The copy shares Op.Objects, which nobody writes (see
// Classification).
func (cl *Classification) withText(text string) *Classification {
	st := cl.Statements[0]
	st.Text = text
	return &Classification{Statements: []Statement{st}}
}

// classify classifies sql without the cache.
func (c *Classifier) classify(sql string) (*Classification, error) {
	// libpg_query reads a C string: text after a NUL would be invisible to
	// it. The server rejects such a query message anyway.
	if strings.IndexByte(sql, 0) >= 0 {
		return unparsable(sql, "query contains a NUL byte"), nil
	}
	// The server (client_encoding UTF8, pinned by the engine) rejects
	// invalid UTF-8; refusing it here keeps the two from ever lexing
	// different bytes.
	if !utf8.ValidString(sql) {
		return unparsable(sql, "query is not valid UTF-8"), nil
	}
	if tooDeep(sql) {
		return unparsable(sql, fmt.Sprintf("query nests more than %d levels deep", maxNesting)), nil
	}
	out, err := pg_query.ParseToJSON(sql)
	if err != nil {
		return unparsable(sql, err.Error()), nil
	}
	p, _ := c.parsers.Get().(*jparser)
	if p == nil {
		p = &jparser{}
	}
	defer func() {
		if p.reset() {
			c.parsers.Put(p)
		}
	}()
	tree, err := p.parse(out)
	if err != nil {
		return nil, fmt.Errorf("classify: decode parse tree: %w", err)
	}
	stmts, ok := tree.get(tree.root, "stmts")
	if !ok {
		if tree.root.kind == jObject {
			return &Classification{}, nil // empty query, or only comments and semicolons
		}
		return nil, fmt.Errorf("classify: decode parse tree: %w: no statement list", ErrParseTree)
	}
	raw := tree.children(stmts)
	cl := &Classification{Statements: make([]Statement, 0, len(raw))}
	for _, rs := range raw {
		st, literalValues := classifyRaw(tree, rs, sql, c.cats)
		cl.Statements = append(cl.Statements, st)
		cl.literalValues = cl.literalValues || literalValues
	}
	return cl, nil
}

// unparsable is the classification of a query the parser rejected.
func unparsable(sql, reason string) *Classification {
	return &Classification{Statements: []Statement{{
		Op:   policy.Operation{Protocol: policy.ProtocolPostgres, Unclassified: true, Reason: reason, Attrs: policy.Attributes{RowEstimate: -1}},
		Text: strings.TrimSpace(sql),
	}}}
}

// classifyRaw classifies one RawStmt, and reports whether the result
// depends on the value of a numeric constant.
func classifyRaw(t *jtree, rs jval, sql string, cats *categoryMemo) (Statement, bool) {
	st := Statement{Text: statementText(t, rs, sql)}
	st.Op.Protocol = policy.ProtocolPostgres
	st.Op.Attrs.RowEstimate = -1
	w := walker{t: t, cats: cats, relAct: policy.ActionSelect}
	stmt, ok := t.get(rs, "stmt")
	if ok && stmt.kind == jObject && stmt.n == 1 {
		inner := t.vals[stmt.first]
		w.statement(t.keyOf(inner), inner, &st)
	} else {
		w.unclassified("statement without a parse tree")
	}
	if w.fail != "" {
		st.Op = policy.Operation{Protocol: policy.ProtocolPostgres, Unclassified: true, Reason: w.fail, Attrs: policy.Attributes{RowEstimate: -1}}
		st.Tag, st.Prepare, st.Execute, st.Deallocate = "", "", "", ""
		st.TxControl = TxControl{}
		return st, w.literalValues
	}
	st.RowLocks = w.rowLocks
	st.ReadOnlyOn = w.readOnlyOn && !w.readOnlyOff
	if w.rowLocks {
		w.rowLockObjects()
	}
	st.Op.Objects = w.objs[:len(w.objs):len(w.objs)]
	if len(st.Op.Objects) == 0 {
		st.Op.Objects = nil
	}
	detach(&st)
	return st, w.literalValues
}

// detach copies the strings of st that may point into libpg_query's output
// (names read from the tree), so that a cached classification does not keep
// the whole parse tree text, about fifteen times the query's size, alive.
func detach(st *Statement) {
	for i := range st.Op.Objects {
		st.Op.Objects[i].Name = strings.Clone(st.Op.Objects[i].Name)
	}
	st.Prepare = strings.Clone(st.Prepare)
	st.Execute = strings.Clone(st.Execute)
	st.Deallocate = strings.Clone(st.Deallocate)
	st.TxControl.Name = strings.Clone(st.TxControl.Name)
}

// statementText cuts one statement out of the query string using the
// parser's byte offsets (stmt_len 0 means "to the end").
func statementText(t *jtree, rs jval, sql string) string {
	loc, n := t.getInt(rs, "stmt_location"), t.getInt(rs, "stmt_len")
	if loc < 0 || loc > len(sql) {
		return strings.TrimSpace(sql)
	}
	end := len(sql)
	if n > 0 && loc+n <= len(sql) {
		end = loc + n
	}
	return strings.TrimSpace(sql[loc:end])
}

func hasObject(objs []policy.Object, o policy.Object) bool {
	for _, x := range objs {
		if x == o {
			return true
		}
	}
	return false
}
