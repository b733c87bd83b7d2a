package postgres

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/interlockhq/interlock/engine"
	"github.com/interlockhq/interlock/engine/masking"
	"github.com/interlockhq/interlock/engine/policy"
)

// session relays one agent connection. Two loops share it: clientLoop reads
// the agent's messages, decides and forwards them; serverLoop copies the
// server's messages back, decoding only the few it must see.
//
// Blocked statements are never answered by the engine directly, which would
// race with the server's answers to earlier pipelined messages. Instead the
// engine sends the server a sentinel that fails at once with a syntax error
// (a Query or Parse of the single token interlock_blocked_<nonce>_<seq>, or
// a Bind of a statement of that name), and serverLoop swaps that error for
// the policy's 42501. The server thereby keeps the order of answers, aborts
// an open transaction block and skips to the next Sync exactly as it would
// for any failed statement, and the agent stays in step.
type session struct {
	h      *Handler
	s      *engine.Session
	cc     *clientConn
	up     *upstream
	target *policy.Target

	upw     *bufio.Writer // only clientLoop writes upstream
	buf     []byte
	written int64 // bytes forwarded since the last flush, for metrics

	sentinel   string // "interlock_blocked_<nonce>_"
	seq        uint64
	stmtPrefix string // "interlock_stmt_<nonce>_": server-side names of named statements
	stmts      uint64
	// portals maps the agent's named portals to their server-side names
	// ("interlock_portal_<nonce>_<n>", new for every Bind), for the same
	// reason as statements: an Execute reaches the portal Interlock bound,
	// or none, never a cursor or an older portal of that name.
	portalPrefix string
	portals      map[string]string
	nportals     uint64
	// extendedOpen: extended-protocol messages were forwarded since the
	// last Sync; the server may be skipping to that Sync after an error.
	extendedOpen bool
	// The transaction state Executes since the last Sync leave: segTxKnown
	// with segInTx after an executed BEGIN, COMMIT or ROLLBACK (on an
	// error the server skips the rest of the segment, so what follows
	// runs in that state or not at all); segUnsure after an Execute that
	// may change it otherwise (CALL, DO, an unknown portal). See txCertain.
	segTxKnown, segInTx, segUnsure bool
	// portalTx is, for each portal bound since the last Sync (by
	// server-side name), its transaction effect and the state it was
	// decided in.
	portalTx map[string]portalTx
	mu       sync.Mutex
	pending  map[string]pendingRefusal // sentinel token → error for the agent

	txStatus atomic.Uint32 // last ReadyForQuery status from the server
	// requests counts the requests (Query, Sync, FunctionCall) forwarded so
	// far, answered those the server answered with ReadyForQuery.
	requests atomic.Int64
	answered atomic.Int64
	// inRequest: clientLoop is handling a Query or FunctionCall (a refusal
	// made now belongs to it, not to the next Sync).
	inRequest bool

	// clientLoop only.
	prepared   map[string]sqlPrepared // SQL-level PREPARE name → operation
	parsed     map[string]parsedStmt  // protocol-level statement name → state
	syncs      int64                  // Syncs forwarded
	nextMask   *masking.Masker        // the mask of the Query being forwarded
	nextCopies []*copyOut             // and its COPY … TO STDOUT statements

	// ms tracks which request each server message answers and the masks
	// that apply; nil when masking is not configured (rows always raw).
	ms *maskState
}

type parsedStmt struct {
	// syncs is the session's Sync count when the Parse was forwarded, and
	// done is set by the server loop when the server confirmed it
	// (ParseComplete; masked sessions only). A Bind in the same pipeline
	// segment (no Sync since) binds this statement or is skipped with it;
	// after a Sync, only a confirmed Parse says what the name holds.
	syncs   int64
	done    *atomic.Bool
	blocked *pgproto3.ErrorResponse
	mask    *masking.Masker // masks the results of its portals
	copy    *copyOut        // a masked COPY … TO STDOUT
	// query and pol let a Bind re-decide the statement when the policy was
	// reloaded since the Parse: a long-lived prepared statement must not
	// keep the permissions of an old policy.
	query string
	pol   *policy.Policy
	// upstream is the statement's name on the server ("" for the unnamed
	// statement); see parse.
	upstream string
	// gated: the statement needs a human approval for each execution;
	// credits are the approvals not used yet.
	gated   bool
	credits int
	// inTx and txSure are the transaction state the statement was decided
	// under: a Bind in another state (a statement prepared inside a
	// transaction block, run after its COMMIT) is decided again when a
	// rule tests in_transaction.
	decidedIn txState
	effect    txEffect // what executing it does to the transaction state
	recordN   int      // its statement record, see Superseder
}

// portalTx is what the transaction tracking knows of a bound portal.
type portalTx struct {
	effect  txEffect
	boundIn txState // the state at its Bind, which its decision is for
}

// txState is the transaction state a statement is decided in: inTx, and
// whether that is certain (see txCertain).
type txState struct{ inTx, sure bool }

// same reports whether two states are certainly the same.
func (a txState) same(b txState) bool { return a.sure && b.sure && a.inTx == b.inTx }

// txState reads the state the next statement runs in. The answered count
// comes first: the server side stores the status before it counts the
// answer, so a status read after "all answered" is current. counted is as
// for txCertain.
func (ss *session) txState(counted int64) txState {
	sure := ss.txCertain(counted)
	return txState{inTx: ss.inTransaction(), sure: sure}
}

// txEffect is what executing a statement does to the transaction state.
type txEffect uint8

const (
	txKeeps   txEffect = iota // stays in or out of a block (SELECT, DML, SAVEPOINT, …)
	txOpens                   // BEGIN, COMMIT/ROLLBACK AND CHAIN: in a block afterwards
	txCloses                  // COMMIT, ROLLBACK, PREPARE TRANSACTION: out of a block afterwards
	txUnknown                 // CALL, DO, unclassified: may commit or open anything
)

// txEffectOf is the effect of the (single, extended-protocol) statement cl.
func txEffectOf(cl *Classification) txEffect {
	if cl == nil || len(cl.Statements) != 1 {
		return txUnknown
	}
	st := &cl.Statements[0]
	switch st.TxControl.Kind {
	case TxBegin:
		return txOpens
	case TxCommit, TxRollback, TxPrepare:
		if st.TxControl.Chain {
			return txOpens
		}
		return txCloses
	}
	if st.Op.Unclassified || st.Op.Action == policy.ActionCall || st.Op.Action == policy.ActionDo || st.Execute != "" {
		return txUnknown
	}
	return txKeeps
}

func newSession(h *Handler, s *engine.Session, cc *clientConn, up *upstream, t *policy.Target) *session {
	var nonce [6]byte
	rand.Read(nonce[:])
	ss := &session{
		h: h, s: s, cc: cc, up: up, target: t,
		upw:          h.bufs.writer(up.conn, upstreamBufSize),
		sentinel:     sentinelPrefix + hex.EncodeToString(nonce[:]) + "_",
		stmtPrefix:   stmtPrefix + hex.EncodeToString(nonce[:]) + "_",
		portalPrefix: portalPrefix + hex.EncodeToString(nonce[:]) + "_",
		portals:      map[string]string{},
		pending:      map[string]pendingRefusal{},
		prepared:     map[string]sqlPrepared{},
		parsed:       map[string]parsedStmt{},
	}
	if h.cfg.Masking != nil {
		ss.ms = newMaskState()
		if up.database != "" {
			ss.ms.cat = &catalog{ss: ss, tables: map[uint32]*catTable{}}
		}
		// Values that answer no statement (notification payloads) are
		// masked from the start with every mask the agent can get here.
		ss.noteMask(h.cfg.Policy().MasksFor(s.Identity.Agent, t.Name))
	}
	ss.txStatus.Store(uint32(up.txStatus))
	return ss
}

// sentinelPrefix starts the name of the failing statement a refused one is
// replaced with, and stmtPrefix the server-side names of the agent's named
// statements (a random nonce and a counter follow).
const (
	sentinelPrefix = "interlock_blocked_"
	stmtPrefix     = "interlock_stmt_"
	portalPrefix   = "interlock_portal_"
)

// interlockNames reports whether s names, in any letter case, one of
// Interlock's own name prefixes (own: an agent that could create or name
// such statements could make a refusal run one, or reach another statement
// than the one Interlock decided) or one of the tables the approvals and
// recording stores keep in PostgreSQL (store). It reads s once without
// copying it: it runs for every statement.
func interlockNames(s string) (own, store bool) {
	const common = len("interlock_")
	for i := 0; i+common <= len(s); i++ {
		if (s[i]|0x20) != 'i' || !strings.EqualFold(s[i:i+common], "interlock_") {
			continue
		}
		rest := s[i+common:]
		for _, p := range [...]string{sentinelPrefix, stmtPrefix, portalPrefix} {
			own = own || hasPrefixFold(rest, p[common:])
		}
		for _, t := range [...]string{"approvals", "records", "heads"} {
			store = store || hasPrefixFold(rest, t)
		}
	}
	return own, store
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// namesSentinel reports whether s names one of Interlock's own prefixes.
func namesSentinel(s string) bool {
	own, _ := interlockNames(s)
	return own
}

// unicodeIdent reports whether s holds a U&"…" identifier, whose escapes
// the server decodes: such a name can spell one of Interlock's prefixes
// without containing it (namesSentinel checks the text as sent).
func unicodeIdent(s string) bool {
	for i := strings.IndexByte(s, '&'); i >= 0; {
		if i > 0 && s[i-1]|0x20 == 'u' && i+1 < len(s) && s[i+1] == '"' {
			return true
		}
		j := strings.IndexByte(s[i+1:], '&')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return false
}

// portalName is the server-side name of the agent's portal: the one its
// last Bind created, or the agent's own name for a portal Interlock did
// not bind (a SQL cursor, or one whose mapping was dropped).
func (ss *session) portalName(agent string) string {
	if up, ok := ss.portals[agent]; ok {
		return up
	}
	return agent
}

// known reports whether the server holds this statement under its name,
// for a Bind sent after syncs Syncs.
func (p parsedStmt) known(syncs int64) bool {
	return p.upstream != "" || p.syncs == syncs || (p.done != nil && p.done.Load())
}

func (ss *session) close() {
	ss.up.conn.Close()
	if ss.ms != nil {
		ss.ms.cat.close()
	}
	ss.h.cancels.unregister(ss.up.key)
}

// run relays until either side ends.
func (ss *session) run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { ss.cc.conn.Close(); ss.up.conn.Close() })
	defer stop()
	var (
		wg        sync.WaitGroup
		serverErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		serverErr = ss.serverLoop()
		// The server is gone: the agent's reads end too.
		ss.cc.conn.Close()
	}()
	clientErr := ss.clientLoop(ctx)
	if ss.inFlight() > 0 {
		// The agent left (or broke the protocol) while the server is still
		// working for it: stop that work instead of letting it run on.
		ss.h.cancels.cancelBackend(ss.s, ss.up)
	}
	ss.up.conn.Close()
	wg.Wait()
	if clientErr != nil {
		return clientErr
	}
	if errors.Is(serverErr, net.ErrClosed) || errors.Is(serverErr, io.EOF) {
		return nil
	}
	return serverErr
}

// clientLoop reads the agent's messages until it terminates.
func (ss *session) clientLoop(ctx context.Context) error {
	for {
		if ss.h.cfg.IdleTimeout > 0 {
			ss.cc.conn.SetReadDeadline(time.Now().Add(ss.h.cfg.IdleTimeout))
		}
		msg, err := ss.cc.be.Receive()
		if err != nil {
			return ss.clientReadError(err)
		}
		flush := false
		switch m := msg.(type) {
		case *pgproto3.Query:
			ss.requests.Add(1)
			ss.inRequest = true
			err = ss.query(ctx, m)
			ss.inRequest = false
			ss.queryInSegment()
			flush = true
		case *pgproto3.Parse:
			ss.extendedOpen = true
			err = ss.parse(ctx, m)
		case *pgproto3.Bind:
			ss.extendedOpen = true
			err = ss.bind(ctx, m)
		case *pgproto3.Close:
			ss.extendedOpen = true
			if p, ok := ss.parsed[m.Name]; ok && m.ObjectType == 'S' {
				delete(ss.parsed, m.Name)
				m.Name = p.upstream
			} else if m.ObjectType == 'P' {
				up := ss.portalName(m.Name)
				delete(ss.portals, m.Name)
				m.Name = up
			}
			err = ss.forward(m)
		case *pgproto3.Describe:
			ss.extendedOpen = true
			if p, ok := ss.parsed[m.Name]; ok && m.ObjectType == 'S' {
				m.Name = p.upstream
			} else if m.ObjectType == 'P' {
				m.Name = ss.portalName(m.Name)
			}
			err = ss.forward(m)
		case *pgproto3.Execute:
			ss.extendedOpen = true
			m.Portal = ss.portalName(m.Portal)
			if e := ss.txMovedSinceBind(m.Portal); e != nil {
				// In place of the Execute, a message the server fails:
				// it skips the rest of the segment, as for any error.
				ss.segUnsure = true
				err = ss.forward(&pgproto3.Parse{Query: ss.block(e)})
				break
			}
			if ss.ms != nil {
				err = ss.beforeExecute(m)
			}
			if err == nil {
				ss.executed(m.Portal)
				err = ss.forward(m)
			}
		case *pgproto3.CopyData:
			err = ss.forward(m)
		case *pgproto3.Sync:
			ss.syncs++
			ss.extendedOpen = false
			ss.segTxKnown, ss.segUnsure = false, false
			clear(ss.portalTx)
			ss.requests.Add(1)
			err = ss.forward(m)
			flush = true
		case *pgproto3.Flush, *pgproto3.CopyDone, *pgproto3.CopyFail:
			err = ss.forward(m)
			flush = true
		case *pgproto3.FunctionCall:
			ss.requests.Add(1)
			ss.inRequest = true
			err = ss.functionCall(ctx, m)
			ss.inRequest = false
			ss.queryInSegment()
			flush = true
		case *pgproto3.Terminate:
			ss.forward(m)
			ss.flush()
			return nil
		default:
			ss.cc.fatal("08P01", fmt.Sprintf("Interlock: unexpected message %T", msg))
			return fmt.Errorf("agent sent unexpected %T", msg)
		}
		if err == nil && flush {
			err = ss.flush()
		}
		if err != nil {
			return err
		}
	}
}

func (ss *session) clientReadError(err error) error {
	var tooBig *pgproto3.ExceededMaxBodyLenErr
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return nil
	case errors.As(err, &tooBig):
		ss.cc.fatal("54000", fmt.Sprintf("Interlock: message of %d bytes exceeds the limit of %d bytes", tooBig.ActualBodyLen, tooBig.MaxExpectedBodyLen))
		return fmt.Errorf("agent message too large: %w", err)
	case isTimeout(err):
		ss.cc.fatal("57P05", "Interlock: terminating connection due to idle timeout")
		return errors.New("agent idle timeout")
	}
	ss.cc.fatal("08P01", "Interlock: invalid message: "+err.Error())
	return fmt.Errorf("read agent message: %w", err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// forward encodes msg onto the upstream buffer and, when masking is on,
// records the answer it expects.
func (ss *session) forward(msg pgproto3.FrontendMessage) error {
	if ss.ms != nil {
		ss.expectFor(msg, ss.nextMask, ss.nextCopies)
		ss.nextMask, ss.nextCopies = nil, nil
	}
	return ss.write(msg)
}

// write encodes msg onto the upstream buffer.
func (ss *session) write(msg pgproto3.FrontendMessage) error {
	var err error
	ss.buf, err = msg.Encode(ss.buf[:0])
	if err != nil {
		return fmt.Errorf("encode %T: %w", msg, err)
	}
	if _, err := ss.upw.Write(ss.buf); err != nil {
		return fmt.Errorf("write to target: %w", err)
	}
	ss.written += int64(len(ss.buf))
	return nil
}

func (ss *session) flush() error {
	ss.s.AddBytes(engine.DirClientToTarget, ss.written)
	ss.written = 0
	if err := ss.upw.Flush(); err != nil {
		return fmt.Errorf("write to target: %w", err)
	}
	return nil
}

// block registers the error the agent gets for a refused statement and
// returns the sentinel token that makes the server fail in its place.
func (ss *session) block(e *pgproto3.ErrorResponse) string {
	ss.seq++
	token := fmt.Sprintf("%s%d", ss.sentinel, ss.seq)
	ss.mu.Lock()
	by := ss.requests.Load() // a refused Query or FunctionCall: itself
	if !ss.inRequest {
		by++ // a Parse, Bind…: the next Sync
	}
	ss.pending[token] = pendingRefusal{e: e, answeredBy: by}
	ss.mu.Unlock()
	return token
}

// inFlight is the number of requests the server has not answered yet.
func (ss *session) inFlight() int64 { return ss.requests.Load() - ss.answered.Load() }

// pendingRefusal is the agent's error for a sentinel, and the number of the
// request (Query, Sync, FunctionCall) whose ReadyForQuery ends it.
type pendingRefusal struct {
	e          *pgproto3.ErrorResponse
	answeredBy int64
}

// answeredRequest forgets the refusals of requests the server has answered
// (serverLoop, at each ReadyForQuery). The server skips every message after
// an error until the Sync, so the sentinels of refused messages behind a
// failing one never come back as errors.
func (ss *session) answeredRequest() {
	answered := ss.answered.Add(1)
	ss.mu.Lock()
	for token, p := range ss.pending {
		if p.answeredBy <= answered {
			delete(ss.pending, token)
		}
	}
	ss.mu.Unlock()
}

// takePending returns (and forgets) the agent's error for a server error
// that a sentinel caused.
func (ss *session) takePending(msg string) *pgproto3.ErrorResponse {
	i := strings.Index(msg, ss.sentinel)
	if i < 0 {
		return nil
	}
	j := i + len(ss.sentinel)
	for j < len(msg) && msg[j] >= '0' && msg[j] <= '9' {
		j++
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	e := ss.pending[msg[i:j]].e
	delete(ss.pending, msg[i:j])
	return e
}

func (ss *session) inTransaction() bool {
	if ss.segTxKnown {
		return ss.segInTx
	}
	st := byte(ss.txStatus.Load())
	return st == 'T' || st == 'E'
}

// queryInSegment: a simple Query or FunctionCall sent inside an open
// extended-protocol segment runs at once, before the rest of the segment,
// and may open or end a transaction block: what follows in the segment is
// unsure until the Sync.
func (ss *session) queryInSegment() {
	if ss.extendedOpen {
		ss.segUnsure = true
	}
}

// txMovedSinceBind refuses the Execute of a portal bound in another
// transaction state than now (a portal bound before an executed BEGIN of
// the same segment), when a rule tests in_transaction: its statement was
// decided for the state at its Bind.
func (ss *session) txMovedSinceBind(portal string) *pgproto3.ErrorResponse {
	pt, ok := ss.portalTx[portal]
	if !ok || !ss.h.cfg.Policy().ConditionsOnTransaction() || pt.boundIn.same(ss.txState(0)) {
		return nil
	}
	return refusal("the transaction state changed between this portal's Bind and its Execute, and the policy decides by it: bind the statement after the BEGIN or COMMIT", "")
}

// executed notes what the Execute of a portal (server-side name) does to
// the transaction state of the rest of the segment.
func (ss *session) executed(portal string) {
	pt, ok := ss.portalTx[portal]
	e := pt.effect
	if !ok {
		e = txUnknown // a portal bound before the Sync, a SQL cursor
	}
	switch e {
	case txOpens:
		ss.segTxKnown, ss.segInTx = true, true
	case txCloses:
		ss.segTxKnown, ss.segInTx = true, false
	case txUnknown:
		ss.segUnsure = true
	}
}
