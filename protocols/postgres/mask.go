package postgres

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/interlockhq/interlock/engine/masking"
	"github.com/interlockhq/interlock/engine/policy"
)

// MaskingConfig enables the enforcement of mask decisions (docs/masking.md).
// Without it, mask decisions, and approve decisions that carry masks, are
// refused.
type MaskingConfig struct {
	// Key is the hash masker's secret (masking.Config.Key), one per
	// deployment so that tokens join across sessions.
	Key []byte
	// Redaction is the redact marker (masking.Config.Redaction).
	Redaction string
	// Metrics counts masked values; nil: not counted.
	Metrics *MaskMetrics
}

// MaskMetrics are the masking collectors.
type MaskMetrics struct {
	values *prometheus.CounterVec
}

// NewMaskMetrics registers interlock_masked_values_total on reg.
func NewMaskMetrics(reg prometheus.Registerer) *MaskMetrics {
	m := &MaskMetrics{values: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "interlock_masked_values_total",
		Help: "Values masked before they reached the agent, by agent, target and detector (\"column\" for column rules).",
	}, []string{"agent", "target", "detector"})}
	reg.MustRegister(m.values)
	return m
}

func (m *MaskMetrics) add(agent, target string, c *masking.Counts) {
	if m == nil {
		return
	}
	if c.Columns > 0 {
		m.values.WithLabelValues(agent, target, "column").Add(float64(c.Columns))
	}
	for d, n := range c.Detectors {
		if n > 0 {
			m.values.WithLabelValues(agent, target, policy.Detector(d).String()).Add(float64(n))
		}
	}
}

// masker returns the Masker of spec, cached per spec pointer (the policy
// caches merged specs per rule set, so pointers repeat).
func (h *Handler) masker(spec *policy.MaskSpec) (*masking.Masker, error) {
	if v, ok := h.maskers.Load(spec); ok {
		return v.(*masking.Masker), nil
	}
	m, err := masking.New(masking.Config{Spec: spec, Key: h.cfg.Masking.Key, Redaction: h.cfg.Masking.Redaction})
	if err != nil {
		return nil, err
	}
	v, _ := h.maskers.LoadOrStore(spec, m)
	return v.(*masking.Masker), nil
}

// mergeSpecs returns the union of two specs: every column pattern of both
// (MaskSpec.Column takes the strongest match) and the stronger masker per
// detector. Used when the statements of one Query carry different masks:
// all of its rows get the union.
func mergeSpecs(a, b *policy.MaskSpec) *policy.MaskSpec {
	switch {
	case a == nil:
		return b
	case b == nil || a == b:
		return a
	}
	m := &policy.MaskSpec{
		RuleIDs: append(append([]string(nil), a.RuleIDs...), b.RuleIDs...),
		Columns: append(append([]policy.ColumnMask(nil), a.Columns...), b.Columns...),
	}
	for d := range m.Detectors {
		m.Detectors[d] = max(a.Detectors[d], b.Detectors[d])
	}
	return m
}

// maskState is the session's masking state. The client loop pushes one
// expected answer per request it forwards; the server loop pops them in
// order, so it knows which request each server message answers and which
// mask applies to it.
type maskState struct {
	mu       sync.Mutex
	q        []*expect
	skipping bool // an extended-protocol error: the server skips to Sync

	// any masks errors, notices and notifications: the union of every
	// mask this session has been subject to so far (nil: none yet).
	any atomic.Pointer[masking.Masker]

	// client loop only.
	seen    map[*policy.MaskSpec]bool
	union   *policy.MaskSpec
	portals map[string]*portal

	// server loop only.
	cat    *catalog // nil: output names only (tests without a target)
	cur    *expect
	counts masking.Counts
	// resultBase is counts.Total() at the last CommandComplete, so that
	// each result is told only its own masked values.
	resultBase int
	row        []byte
	val        []byte
}

// expect is a request the server has yet to answer.
type expect struct {
	kind    byte         // the client message: 'Q' 'P' 'B' 'D' 'E' 'C' 'S' 'F'
	parsed  *atomic.Bool // Parse: set when the server confirms it
	mask    *masking.Masker
	portal  *portal // Describe portal, Execute
	swallow bool    // an injected Describe: the agent never sees its answer
	plans   []masking.Plan

	// COPY … TO STDOUT: the Query's COPY statements in order (Execute:
	// its portal's), and the one in progress.
	copies    []*copyOut
	copying   *copyOut
	copyPlans []masking.Plan
	header    bool // the next CopyData is the CSV header
}

// portal is a bound portal whose results may need masking.
type portal struct {
	mask      *masking.Masker
	copy      *copyOut       // a masked COPY … TO STDOUT
	described bool           // the agent described it after the Bind (client loop)
	plans     []masking.Plan // from the answer to Describe (server loop)
}

// maxPortals bounds the portal table: portals end with their transaction,
// which the client loop does not follow, so the table is cleared when it
// fills; an Execute of a portal no longer in it gets the session's union of
// masks.
const maxPortals = 4096

// bindPortal records the mask of a portal being bound (client loop).
func (ms *maskState) bindPortal(name string, p *portal) {
	if len(ms.portals) >= maxPortals {
		clear(ms.portals)
	}
	ms.portals[name] = p
}

func newMaskState() *maskState {
	return &maskState{seen: map[*policy.MaskSpec]bool{}, portals: map[string]*portal{}}
}

func (ms *maskState) push(e *expect) {
	ms.mu.Lock()
	ms.q = append(ms.q, e)
	ms.mu.Unlock()
}

// pop returns the next expected answer, dropping the requests the server
// skips after an error in extended mode (up to the next Sync).
func (ms *maskState) pop() *expect {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for len(ms.q) > 0 {
		e := ms.q[0]
		ms.q[0] = nil
		ms.q = ms.q[1:]
		if ms.skipping {
			if e.kind != 'S' {
				continue
			}
			ms.skipping = false
		}
		return e
	}
	return nil
}

func (ms *maskState) skipToSync() {
	ms.mu.Lock()
	ms.skipping = true
	ms.mu.Unlock()
	ms.cur = nil
}

// noteMask notes a mask the session is now subject to (client loop): errors,
// notices, notifications and FETCHes get the union of all of them.
func (ss *session) noteMask(spec *policy.MaskSpec) {
	ms := ss.ms
	if spec == nil || ms.seen[spec] {
		return
	}
	ms.seen[spec] = true
	ms.union = mergeSpecs(ms.union, spec)
	m, err := ss.h.masker(ms.union)
	if err != nil {
		ss.s.Log.Error("masking: cannot build the session's masker", "error", err)
		return
	}
	ms.any.Store(m)
}

// expectFor records the answer a forwarded message will get (client loop,
// before the message is written upstream).
func (ss *session) expectFor(msg pgproto3.FrontendMessage, mask *masking.Masker, copies []*copyOut) {
	ms := ss.ms
	switch m := msg.(type) {
	case *pgproto3.Query:
		ms.push(&expect{kind: 'Q', mask: mask, copies: copies})
	case *pgproto3.Parse:
		// parse stored the entry just before forwarding this Parse (under
		// the agent's name; only the unnamed statement keeps it).
		e := &expect{kind: 'P'}
		if m.Name == "" {
			e.parsed = ss.parsed[""].done
		}
		ms.push(e)
	case *pgproto3.Bind:
		ms.push(&expect{kind: 'B'})
	case *pgproto3.Describe:
		e := &expect{kind: 'D'}
		if m.ObjectType == 'P' {
			if p := ms.portals[m.Name]; p != nil {
				p.described = true
				e.portal = p
			}
		}
		ms.push(e)
	case *pgproto3.Execute:
		e := &expect{kind: 'E'}
		if p := ms.portals[m.Portal]; p != nil {
			e.portal, e.mask = p, p.mask
			if p.copy != nil {
				e.copies = []*copyOut{p.copy}
			}
		}
		ms.push(e)
	case *pgproto3.Close:
		if m.ObjectType == 'P' {
			delete(ms.portals, m.Name)
		}
		ms.push(&expect{kind: 'C'})
	case *pgproto3.Sync:
		ms.push(&expect{kind: 'S'})
	case *pgproto3.FunctionCall:
		ms.push(&expect{kind: 'F'})
	}
}

// beforeExecute injects a Describe of a masked portal the agent did not
// describe (pgx's cached statements): its RowDescription gives the plan,
// and the agent never sees it.
func (ss *session) beforeExecute(m *pgproto3.Execute) error {
	p := ss.ms.portals[m.Portal]
	bound := m.Portal == "" || strings.HasPrefix(m.Portal, ss.portalPrefix)
	if p == nil || !bound {
		// A portal the table no longer holds (see maxPortals), or one
		// Interlock did not bind (a SQL cursor): it gets every mask the
		// session can get, and a Describe of its own every time, since a
		// cursor of that name may have been declared again over another
		// query since the last Execute.
		p = nil
		if any := ss.anyMask(); any != nil {
			p = &portal{mask: any}
		}
		ss.ms.portals[m.Portal] = p
		if p == nil {
			delete(ss.ms.portals, m.Portal)
		}
	}
	if p == nil || p.mask == nil || p.described {
		return nil
	}
	p.described = true
	ss.ms.push(&expect{kind: 'D', portal: p, swallow: true})
	return ss.write(&pgproto3.Describe{ObjectType: 'P', Name: m.Portal})
}

// Server side.

// maskAction is what serverLoop does with one message.
type maskAction uint8

const (
	actRelay     maskAction = iota // as without masking
	actSwallow                     // read and drop (answers to injected messages)
	actRowDesc                     // read, build the plans, forward
	actRow                         // read, mask, forward
	actNotice                      // read, mask the fields, forward
	actNotify                      // read, mask the payload, forward
	actCopyOut                     // CopyOutResponse: read, plan, forward
	actCopyRow                     // CopyData of a masked COPY: read, mask, forward
	actViolation                   // rows that answer no query in a masked session: end it
)

// step advances the expected-answer state for a server message of type typ
// and says what to do with it. It runs before the message is read; rows of
// unmasked requests are relayed raw.
func (ms *maskState) step(typ byte) (maskAction, *expect) {
	switch typ {
	case 'N':
		if ms.any.Load() != nil {
			return actNotice, nil
		}
		return actRelay, nil
	case 'A':
		if ms.any.Load() != nil {
			return actNotify, nil
		}
		return actRelay, nil
	case 'S':
		return actRelay, nil
	}
	e := ms.cur
	if e == nil {
		e = ms.pop()
		ms.cur = e
	}
	if e == nil || (typ == 'D' || typ == 'd') && e.kind != 'Q' && e.kind != 'E' {
		if (typ == 'D' || typ == 'd') && ms.any.Load() != nil {
			// Rows that answer no query: the server is out of step
			// with the queue, and the mask could be the wrong one.
			return actViolation, nil
		}
		// Nothing expected (a FATAL error): relay.
		return actRelay, e
	}
	act := actRelay
	switch typ {
	case 'D':
		if e.mask != nil {
			act = actRow
		}
	case 'T':
		if e.mask != nil || (e.portal != nil && e.portal.mask != nil) {
			act = actRowDesc
		}
	case 'H':
		if e.mask != nil {
			act = actCopyOut
		}
	case 'd':
		if e.copyPlans != nil {
			act = actCopyRow
		}
	case 'c', 'C', 'E':
		e.copying, e.copyPlans, e.header = nil, nil, false
	}
	switch e.kind {
	case 'Q':
		switch typ {
		case 'Z':
			ms.cur = nil
		case 'C', 'I', 'E':
			e.plans = nil
		}
	case 'P', 'B', 'C':
		switch typ {
		case 'E':
			ms.skipToSync()
		default: // '1' '2' '3'
			if typ == '1' && e.parsed != nil {
				e.parsed.Store(true)
			}
			ms.cur = nil
		}
	case 'D':
		switch typ {
		case 'E':
			ms.skipToSync()
		case 'T', 'n':
			ms.cur = nil
		}
		if e.swallow && typ != 'E' {
			if act == actRowDesc {
				return actRowDesc, e // built, then dropped
			}
			return actSwallow, e
		}
	case 'E':
		switch typ {
		case 'C', 's', 'I':
			ms.cur = nil
		case 'E':
			ms.skipToSync()
		}
	case 'S', 'F':
		if typ == 'Z' {
			ms.cur = nil
		}
	}
	return act, e
}

// copyOutResponse starts a masked COPY … TO STDOUT: the next COPY
// statement of the request says the format and columns.
func (ms *maskState) copyOutResponse(e *expect, body []byte) error {
	var h pgproto3.CopyOutResponse
	if err := h.Decode(body); err != nil {
		return fmt.Errorf("decode CopyOutResponse: %w", err)
	}
	if h.OverallFormat != 0 {
		return errors.New("masking: binary COPY in a masked request")
	}
	if len(e.copies) == 0 {
		return errors.New("masking: a COPY the relay did not see in a masked request")
	}
	co := e.copies[0]
	e.copies = e.copies[1:]
	plans, err := ms.copyPlans(e.mask, co, len(h.ColumnFormatCodes))
	if err != nil {
		return err
	}
	e.copying, e.copyPlans, e.header = co, plans, co.header
	return nil
}

// maskCopyRow masks one CopyData row of a masked COPY.
func (ms *maskState) maskCopyRow(e *expect, msg []byte) ([]byte, error) {
	if e.header {
		e.header = false
		return msg, nil
	}
	line := msg[5:]
	out, c, err := e.mask.MaskCopyLine(ms.val[:0], &e.copying.format, e.copyPlans, line)
	if err != nil {
		return nil, fmt.Errorf("masking: COPY row: %w", err)
	}
	ms.counts.Add(&c)
	if len(out) == len(line) && (len(out) == 0 || &out[0] == &line[0]) {
		return msg, nil
	}
	ms.val = out[:0]
	row := append(ms.row[:0], 'd', 0, 0, 0, 0)
	row = append(row, out...)
	binary.BigEndian.PutUint32(row[1:], uint32(len(row)-1))
	ms.row = row
	return row, nil
}

// rowDescription builds the plans of a masked request from its
// RowDescription. A column that traces back to a table is named
// "schema.table.column" from the catalog; others (expressions), and all of
// them when the catalog cannot be read, by "..<output name>": an empty
// schema and table, so that patterns naming the column alone or with
// wildcard schema and table segments ("email", "*.ssn") apply, and patterns
// naming a table ("customers.email") do not (docs/masking.md).
func (ms *maskState) rowDescription(e *expect, body []byte) error {
	var rd pgproto3.RowDescription
	if err := rd.Decode(body); err != nil {
		return fmt.Errorf("decode RowDescription: %w", err)
	}
	m := e.mask
	if e.portal != nil && e.kind == 'D' {
		m = e.portal.mask
	}
	if m == nil {
		return nil
	}
	cols := make([]masking.Column, len(rd.Fields))
	for i, f := range rd.Fields {
		name, ok, unresolved := ms.cat.column(f.TableOID, int16(f.TableAttributeNumber))
		if !ok {
			name = ".." + string(f.Name)
		}
		cols[i] = masking.Column{Name: name, TypeOID: f.DataTypeOID, Binary: f.Format == 1, Unresolved: unresolved}
	}
	plans := m.Plan(cols)
	if e.kind == 'D' {
		e.portal.plans = plans
	} else {
		e.plans = plans
	}
	return nil
}

var errMaskRow = errors.New("masking: a row the relay cannot parse")

// maskRow rewrites one DataRow (msg: type, length, body) of a masked
// request. A row that does not match its RowDescription ends the session:
// it must not reach the agent unmasked.
func (ms *maskState) maskRow(e *expect, msg []byte) ([]byte, error) {
	plans := e.plans
	if e.kind == 'E' && e.portal != nil {
		plans = e.portal.plans
	}
	body := msg[5:]
	if len(body) < 2 {
		return nil, errMaskRow
	}
	n := int(binary.BigEndian.Uint16(body))
	if n != len(plans) {
		return nil, fmt.Errorf("%w: %d values for %d planned columns", errMaskRow, n, len(plans))
	}
	out := append(ms.row[:0], 'D', 0, 0, 0, 0, body[0], body[1])
	p := 2
	for i := range n {
		if p+4 > len(body) {
			return nil, errMaskRow
		}
		l := int(int32(binary.BigEndian.Uint32(body[p:])))
		p += 4
		if l < 0 {
			out = binary.BigEndian.AppendUint32(out, 0xffffffff)
			continue
		}
		if p+l > len(body) {
			return nil, errMaskRow
		}
		v := body[p : p+l]
		p += l
		if plans[i].Pass() {
			out = binary.BigEndian.AppendUint32(out, uint32(l))
			out = append(out, v...)
			continue
		}
		mv, null, c := e.mask.MaskValue(ms.val[:0], &plans[i], v)
		ms.counts.Add(&c)
		if null {
			out = binary.BigEndian.AppendUint32(out, 0xffffffff)
			continue
		}
		out = binary.BigEndian.AppendUint32(out, uint32(len(mv)))
		out = append(out, mv...)
		if len(mv) > 0 && len(v) > 0 && &mv[0] != &v[0] {
			ms.val = mv[:0]
		}
	}
	if p != len(body) {
		return nil, errMaskRow
	}
	binary.BigEndian.PutUint32(out[1:], uint32(len(out)-1))
	ms.row = out
	return out, nil
}

// maskFields masks the free-text fields of an error or notice with the
// session's masks. It reports whether anything changed.
func (ms *maskState) maskFields(e *pgproto3.ErrorResponse) bool {
	m := ms.any.Load()
	if m == nil {
		return false
	}
	table := ""
	if e.TableName != "" {
		table = e.SchemaName + "." + e.TableName
	}
	changed := false
	field := func(code byte, s *string) {
		if *s == "" {
			return
		}
		out, c := m.MaskErrorField(nil, code, []byte(*s), table)
		if c.Total() > 0 || string(out) != *s {
			*s = string(out)
			changed = true
			ms.counts.Add(&c)
		}
	}
	field('M', &e.Message)
	field('D', &e.Detail)
	field('H', &e.Hint)
	field('W', &e.Where)
	field('q', &e.InternalQuery)
	for k, v := range e.UnknownFields {
		field(k, &v)
		e.UnknownFields[k] = v
	}
	return changed
}

// maskNotice masks a NoticeResponse (msg: type, length, body).
func (ms *maskState) maskNotice(msg []byte) ([]byte, error) {
	var n pgproto3.NoticeResponse
	if err := n.Decode(msg[5:]); err != nil {
		return nil, fmt.Errorf("decode notice: %w", err)
	}
	if !ms.maskFields((*pgproto3.ErrorResponse)(&n)) {
		return msg, nil
	}
	return n.Encode(nil)
}

// maskNotify masks a NotificationResponse's payload.
func (ms *maskState) maskNotify(msg []byte) ([]byte, error) {
	var a pgproto3.NotificationResponse
	if err := a.Decode(msg[5:]); err != nil {
		return nil, fmt.Errorf("decode notification: %w", err)
	}
	m := ms.any.Load()
	out, c := m.MaskPayload(nil, []byte(a.Payload))
	if c.Total() == 0 && string(out) == a.Payload {
		return msg, nil
	}
	ms.counts.Add(&c)
	a.Payload = string(out)
	return a.Encode(nil)
}

// flushCounts adds the masked counts to the metrics (server loop, at
// ReadyForQuery and at the end).
func (ss *session) flushCounts() {
	ms := ss.ms
	if ms == nil || ms.counts.Total() == 0 {
		return
	}
	ss.h.cfg.Masking.Metrics.add(ss.s.Identity.Agent, ss.target.Name, &ms.counts)
	ms.counts = masking.Counts{}
	ms.resultBase = 0
}
