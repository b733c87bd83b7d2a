package postgres

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/interlockhq/interlock/engine"
)

// serverLoop copies the server's messages to the agent. Rows and copy data
// pass as raw bytes; only ReadyForQuery (transaction state), CommandComplete
// and ErrorResponse (events, sentinel errors) are decoded. Output is flushed
// whenever the server has nothing more buffered, so pipelined answers go
// out in few writes.
func (ss *session) serverLoop() error {
	r := ss.up.r
	w := ss.cc.w
	var (
		body    []byte
		relayed int64 // bytes not yet accounted: metrics are updated per batch, not per row
	)
	defer func() { ss.s.AddBytes(engine.DirTargetToClient, relayed); ss.flushCounts() }()
	for {
		if r.Buffered() == 0 {
			ss.s.AddBytes(engine.DirTargetToClient, relayed)
			relayed = 0
			w.mu.Lock()
			err := w.w.Flush()
			w.mu.Unlock()
			if err != nil {
				return fmt.Errorf("write to agent: %w", err)
			}
		}
		hdr, err := r.Peek(5)
		if err != nil {
			return err
		}
		typ := hdr[0]
		n := int(binary.BigEndian.Uint32(hdr[1:5])) - 4
		if n < 0 {
			return fmt.Errorf("server sent a message of negative length")
		}
		relayed += int64(5 + n)
		if n > maxDecodedServerMessage && strings.IndexByte("ZCETNAH", typ) >= 0 || n > maxServerRow {
			// Only messages the relay decodes are read whole; a broken
			// length must not make it allocate gigabytes.
			return fmt.Errorf("server sent a %q message of %d bytes", typ, n)
		}
		if ss.ms != nil {
			act, e := ss.ms.step(typ)
			if act != actRelay {
				if cap(body) < 5+n {
					body = make([]byte, 5+n)
				}
				body = body[:5+n]
				if _, err := io.ReadFull(r, body); err != nil {
					return err
				}
				out, err := ss.maskMessage(act, e, body)
				if err != nil {
					return err
				}
				if out == nil {
					continue
				}
				w.mu.Lock()
				_, err = w.w.Write(out)
				w.mu.Unlock()
				if err != nil {
					return fmt.Errorf("write to agent: %w", err)
				}
				continue
			}
		}
		switch typ {
		case 'Z', 'C', 'E':
			if cap(body) < 5+n {
				body = make([]byte, 5+n)
			}
			body = body[:5+n]
			if _, err := io.ReadFull(r, body); err != nil {
				return err
			}
			out, err := ss.serverMessage(typ, body)
			if err != nil {
				return err
			}
			w.mu.Lock()
			_, err = w.w.Write(out)
			w.mu.Unlock()
			if err != nil {
				return fmt.Errorf("write to agent: %w", err)
			}
		default:
			w.mu.Lock()
			_, err := io.CopyN(w.w, r, int64(5+n))
			w.mu.Unlock()
			if err != nil {
				return fmt.Errorf("relay %q message: %w", typ, err)
			}
		}
	}
}

// Bounds on the server messages the relay reads whole: rows (masked
// DataRow and CopyData) can be as large as PostgreSQL allows (1 GiB), the
// others are small.
const (
	maxDecodedServerMessage = 64 << 20
	maxServerRow            = 1<<30 + 1<<20
)

// serverMessage looks at one decoded-worthy message (msg holds the type
// byte, the length and the body) and returns the bytes for the agent.
func (ss *session) serverMessage(typ byte, msg []byte) ([]byte, error) {
	body := msg[5:]
	switch typ {
	case 'Z':
		ss.flushCounts()
		if len(body) == 1 {
			ss.txStatus.Store(uint32(body[0]))
			ss.h.cfg.Observer.ReadyForQuery(ss.s, body[0])
		}
		ss.answeredRequest()
	case 'C':
		tag := body
		if len(tag) > 0 && tag[len(tag)-1] == 0 {
			tag = tag[:len(tag)-1]
		}
		if ss.ms != nil {
			total := ss.ms.counts.Total()
			if n := total - ss.ms.resultBase; n > 0 {
				if mc, ok := ss.h.cfg.Observer.(MaskedCounter); ok {
					mc.Masked(ss.s, int64(n))
				}
			}
			ss.ms.resultBase = total
		}
		ss.h.cfg.Observer.CommandComplete(ss.s, tag)
	case 'E':
		var e pgproto3.ErrorResponse
		if err := e.Decode(body); err != nil {
			return nil, fmt.Errorf("decode server error: %w", err)
		}
		if mine := ss.takePending(e.Message); mine != nil {
			// A sentinel's syntax error: the agent gets the policy's
			// refusal in its place.
			ss.h.cfg.Observer.ServerError(ss.s, mine)
			return mine.Encode(nil)
		}
		if ss.ms != nil && ss.ms.maskFields(&e) {
			// Values in the server's error (a key's value in a
			// unique violation) are masked like the rows.
			ss.h.cfg.Observer.ServerError(ss.s, &e)
			return e.Encode(nil)
		}
		ss.h.cfg.Observer.ServerError(ss.s, &e)
	}
	return msg, nil
}

// maskMessage handles a message the masking state wants to see (msg holds
// the type byte, the length and the body); nil means drop it.
func (ss *session) maskMessage(act maskAction, e *expect, msg []byte) ([]byte, error) {
	switch act {
	case actSwallow:
		return nil, nil
	case actRowDesc:
		if err := ss.ms.rowDescription(e, msg[5:]); err != nil {
			return nil, err
		}
		if e.swallow {
			return nil, nil
		}
		return msg, nil
	case actRow:
		return ss.ms.maskRow(e, msg)
	case actNotice:
		return ss.ms.maskNotice(msg)
	case actNotify:
		return ss.ms.maskNotify(msg)
	case actCopyOut:
		if err := ss.ms.copyOutResponse(e, msg[5:]); err != nil {
			return nil, err
		}
		return msg, nil
	case actCopyRow:
		return ss.ms.maskCopyRow(e, msg)
	case actViolation:
		return nil, fmt.Errorf("masking: the server sent %q answering no query", msg[0])
	}
	return msg, nil
}
