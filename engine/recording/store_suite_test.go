package recording

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// storeKind is one Store implementation under the shared suite, with the
// means to tamper with what it stored (as an attacker with write access to
// the storage would, without the signing key).
type storeKind struct {
	name string
	// open returns a fresh empty store (segment size tiny for files, so
	// that rotation happens), and a way to reopen it.
	open func(t *testing.T) (st Store, reopen func() Store, tam tamperer)
	// openDeferred is open with DeferSync (recording.sync: interval);
	// reader opens the store read-only, as the CLI does.
	openDeferred func(t *testing.T) (st Store, reader func() Store)
}

// line is one stored record: slot is where it is (segment file, or the
// seq column of its row).
type line struct {
	slot string
	raw  string
}

type tamperer interface {
	lines(t *testing.T) []line
	// write replaces the stored chain with exactly these lines.
	write(t *testing.T, ls []line)
	// segments is true when slots are segments that can be replaced whole.
	segments() bool
}

func seqOf(t *testing.T, raw string) uint64 {
	var r struct {
		Seq uint64 `json:"seq"`
	}
	json.Unmarshal([]byte(raw), &r)
	return r.Seq
}

// forge re-chains lines [from, to) after changing every statement text in
// them, as an attacker without the key would: consistent hashes and prev
// links, the old signatures.
func forge(t *testing.T, ls []line, from, to int) {
	t.Helper()
	prev := ""
	if from > 0 {
		p, err := ParseRecord([]byte(ls[from-1].raw))
		if err != nil {
			t.Fatal(err)
		}
		prev = p.Hash
	}
	for i := from; i < to; i++ {
		rec, err := ParseRecord([]byte(ls[i].raw))
		if err != nil {
			t.Fatal(err)
		}
		if rec.Type == TypeStatement {
			var st Statement
			rec.Decode(&st)
			st.Text = "select 'nothing to see'"
			rec.Data, _ = json.Marshal(st)
		}
		rec.Prev = prev
		rec.encode()
		prev = rec.Hash
		ls[i].raw = string(rec.Raw)
	}
}

func runStoreSuite(t *testing.T, k storeKind) {
	ctx := context.Background()

	t.Run("chain continues across reopen and verifies", func(t *testing.T) {
		st, reopen, _ := k.open(t)
		r := openRecorder(t, st, nil)
		ids := writeSessions(t, r, 3, 6)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		st = reopen()
		r = openRecorder(t, st, nil)
		ids = append(ids, writeSessions(t, r, 2, 3)...)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		st = reopen()
		defer st.Close()
		rep := mustVerify(t, st)
		if rep.First != 1 || rep.Unsigned != 0 || rep.Head == nil || rep.Head.Seq+1 != rep.Last {
			t.Errorf("report %+v (head %+v): a clean close signs everything", rep, rep.Head)
		}
		list, err := ListSessions(ctx, st, ListOptions{Host: "host-a"})
		if err != nil || len(list) != 5 {
			t.Fatalf("sessions: %v %+v", err, list)
		}
		if list[0].ID != ids[0] || list[0].Statements != 6 || list[0].Refused != 1 || list[0].Ended == nil || list[0].Reason != "closed" {
			t.Errorf("first session: %+v", list[0])
		}
		if l, _ := ListSessions(ctx, st, ListOptions{Host: "host-a", Agent: "agent-1"}); len(l) != 2 {
			t.Errorf("agent filter: %d sessions", len(l))
		}
		start, err := FindSession(ctx, st, "host-a", ids[3][:8])
		if err != nil || start.Session != ids[3] {
			t.Fatalf("find: %v", err)
		}
		recs, err := SessionRecords(ctx, st, "host-a", ids[3], 0)
		if err != nil {
			t.Fatal(err)
		}
		// start, 3 × (statement, result), end
		var types []string
		for _, r := range recs {
			types = append(types, string(r.Type))
		}
		if len(recs) != 8 || recs[0].Type != TypeSessionStart || recs[7].Type != TypeSessionEnd {
			t.Errorf("session records: %v", types)
		}
		var res Result
		recs[2].Decode(&res)
		if res.N != 1 || res.Tag != "INSERT 0 1" || res.Rows != nil && *res.Rows != 1 {
			t.Errorf("result: %+v", res)
		}
	})

	tamper := []struct {
		name string
		do   func(t *testing.T, ls []line) []line
		// want is the seq Verify must name, from the original lines.
		want func(ls []line) (lo, hi uint64)
	}{
		{"flip a byte", func(t *testing.T, ls []line) []line {
			b := []byte(ls[10].raw)
			i := strings.Index(ls[10].raw, `"data":`) + 12
			b[i] ^= 0x20
			ls[10].raw = string(b)
			return ls
		}, func(ls []line) (uint64, uint64) { return 11, 11 }},
		{"delete a record", func(t *testing.T, ls []line) []line {
			return append(ls[:12:12], ls[13:]...)
		}, func(ls []line) (uint64, uint64) { return 13, 13 }},
		{"swap two records", func(t *testing.T, ls []line) []line {
			ls[14].raw, ls[15].raw = ls[15].raw, ls[14].raw
			return ls
		}, func(ls []line) (uint64, uint64) { return 15, 15 }},
		{"insert a forged record", func(t *testing.T, ls []line) []line {
			fake := ls[20]
			out := append(ls[:21:21], fake)
			return append(out, ls[21:]...)
		}, func(ls []line) (uint64, uint64) { return 21, 21 }},
		{"truncate the tail", func(t *testing.T, ls []line) []line {
			return ls[:len(ls)-4]
		}, func(ls []line) (uint64, uint64) { return uint64(len(ls)) - 3, uint64(len(ls)) - 3 }},
		{"delete from the front", func(t *testing.T, ls []line) []line {
			return ls[3:]
		}, func(ls []line) (uint64, uint64) { return 1, 1 }},
		{"rewrite a range with consistent hashes", func(t *testing.T, ls []line) []line {
			forge(t, ls, 5, 9)
			return ls
		}, func(ls []line) (uint64, uint64) { return 6, 10 }},
	}
	for _, tc := range tamper {
		t.Run("detects: "+tc.name, func(t *testing.T) {
			st, reopen, tam := k.open(t)
			r := openRecorder(t, st, nil)
			writeSessions(t, r, 3, 8)
			r.Close()
			st = reopen()
			defer st.Close()
			mustVerify(t, st)
			ls := tam.lines(t)
			lo, hi := tc.want(ls)
			tam.write(t, tc.do(t, append([]line(nil), ls...)))
			_, err := Verify(ctx, st, VerifyOptions{Host: "host-a", PublicKey: testPub()})
			var bad *BadRecordError
			if !errors.As(err, &bad) {
				t.Fatalf("verify after tampering: %v, want a bad record", err)
			}
			if bad.Seq < lo || bad.Seq > hi {
				t.Errorf("verify named seq %d, want %d..%d: %v", bad.Seq, lo, hi, err)
			}
			t.Logf("%v", err)
		})
	}

	t.Run("detects: replaced segment", func(t *testing.T) {
		st, reopen, tam := k.open(t)
		if !tam.segments() {
			t.Skip("this store has no segments (a rewritten range is covered above)")
		}
		r := openRecorder(t, st, nil)
		writeSessions(t, r, 4, 8)
		r.Close()
		st = reopen()
		defer st.Close()
		ls := tam.lines(t)
		// Replace the second segment with a forged one, re-chained from
		// the end of the first.
		var segs []string
		for _, l := range ls {
			if len(segs) == 0 || segs[len(segs)-1] != l.slot {
				segs = append(segs, l.slot)
			}
		}
		if len(segs) < 3 {
			t.Fatalf("want ≥ 3 segments, got %d", len(segs))
		}
		from, to := -1, 0
		for i, l := range ls {
			if l.slot == segs[1] {
				if from < 0 {
					from = i
				}
				to = i + 1
			}
		}
		forge(t, ls, from, to)
		tam.write(t, ls)
		_, err := Verify(ctx, st, VerifyOptions{Host: "host-a", PublicKey: testPub()})
		var bad *BadRecordError
		if !errors.As(err, &bad) || bad.Seq < uint64(from+1) || bad.Seq > uint64(to+1) {
			t.Fatalf("verify after replacing %s (seq %d..%d): %v", segs[1], from+1, to, err)
		}
		t.Logf("%v", err)
	})

	t.Run("open refuses a chain shorter than its head", func(t *testing.T) {
		st, reopen, tam := k.open(t)
		r := openRecorder(t, st, nil)
		writeSessions(t, r, 2, 4)
		r.Close()
		st = reopen()
		ls := tam.lines(t)
		tam.write(t, ls[:len(ls)-3])
		st.Close()
		st = reopen()
		defer st.Close()
		if _, err := Open(Config{Store: st, Key: testKey, Host: "host-a", Log: quietLog()}); err == nil || !strings.Contains(err.Error(), "signed head") {
			t.Fatalf("open after truncation: %v", err)
		}
	})

	t.Run("group commit", func(t *testing.T) {
		st, reopen, _ := k.open(t)
		m := NewMetrics(nil)
		r := openRecorder(t, st, func(c *Config) { c.Metrics = m; c.CheckpointEvery = 1 << 30 })
		s := testSession("a")
		r.SessionStarted(s)
		l, _ := r.Session(s)
		const workers, each = 16, 25
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					if err := l.Statement(ctx, &Statement{Text: "select 1", Verdict: "allow", Forwarded: true}, false); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		syncs := histCount(m)
		r.Close()
		st = reopen()
		defer st.Close()
		rep := mustVerify(t, st)
		if rep.Records < workers*each {
			t.Fatalf("%d records", rep.Records)
		}
		t.Logf("%s: %d statements in %d syncs (%.2f records per sync)", k.name, workers*each, syncs, float64(workers*each+1)/float64(syncs))
		if syncs >= workers*each {
			t.Errorf("%d syncs for %d statements: no group commit", syncs, workers*each)
		}
	})
}

func histCount(m *Metrics) int {
	var d dto.Metric
	m.Sync.(prometheus.Metric).Write(&d)
	return int(d.GetHistogram().GetSampleCount())
}

// runSyncIntervalSuite runs a store opened for recording.sync: interval
// under a Recorder with SyncInterval.
func runSyncIntervalSuite(t *testing.T, k storeKind) {
	ctx := context.Background()

	t.Run("interval: written at once, synced in the background, verifies after close", func(t *testing.T) {
		st, reader := k.openDeferred(t)
		m := NewMetrics(nil)
		const every = 20 * time.Millisecond
		r := openRecorder(t, st, func(c *Config) {
			c.Metrics, c.SyncInterval = m, every
			c.CheckpointEvery, c.CheckpointInterval = 1<<30, time.Hour // no head, so no sync but the interval's
		})
		s := testSession("a")
		if err := r.SessionStarted(s); err != nil {
			t.Fatal(err)
		}
		l, _ := r.Session(s)
		for i := range 3 {
			text := "select 'written before it runs' -- " + string(rune('a'+i))
			if err := l.Statement(ctx, &Statement{Text: text, Verdict: "allow", Forwarded: true}, false); err != nil {
				t.Fatal(err)
			}
			// Another store, opened now, reads it: it reached the
			// store (the page cache, the server) before Append returned.
			ro := reader()
			found := false
			err := ro.Scan(ctx, Filter{Types: []Type{TypeStatement}}, func(rec *Record, _ string, err error) error {
				var st Statement
				if err == nil && rec.Decode(&st) == nil && st.Text == text {
					found = true
				}
				return err
			})
			ro.Close()
			if err != nil || !found {
				t.Fatalf("statement %d not readable right after Append returned (%v)", i+1, err)
			}
		}
		if !waitFor(50*every, func() bool { return histCount(m) >= 1 }) {
			t.Fatalf("no background sync within %v", 50*every)
		}
		// Nothing written since: no more syncs (results nobody waits for
		// go within 5ms, then the next interval syncs them).
		time.Sleep(5 * every)
		n := histCount(m)
		time.Sleep(5 * every)
		if got := histCount(m); got != n {
			t.Errorf("%d syncs while nothing was written", got-n)
		}
		l.Statement(ctx, &Statement{Text: "select 2", Verdict: "allow", Forwarded: true}, false)
		if !waitFor(50*every, func() bool { return histCount(m) > n }) {
			t.Fatalf("no background sync after a new write")
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		ro := reader()
		defer ro.Close()
		rep := mustVerify(t, ro)
		if rep.Head == nil || rep.Head.Seq+1 != rep.Last || rep.Unsigned != 0 {
			t.Errorf("report %+v (head %+v): a clean close signs everything", rep, rep.Head)
		}
	})

	t.Run("interval: a signed head never covers records not yet synced", func(t *testing.T) {
		st, reader := k.openDeferred(t)
		so := &syncOrder{t: t, Store: st}
		r := openRecorder(t, wrapSyncOrder(so), func(c *Config) {
			// The interval never fires: only the syncs before heads
			// (every 5 records, at rotations and at close) run.
			c.SyncInterval, c.CheckpointEvery = time.Hour, 5
		})
		writeSessions(t, r, 3, 8)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if so.heads < 5 {
			t.Errorf("%d heads written", so.heads)
		}
		t.Logf("%s: %d heads, %d syncs, %d rotations", k.name, so.heads, so.syncs, so.rotations)
		ro := reader()
		defer ro.Close()
		mustVerify(t, ro)
	})

	t.Run("interval: a recorder that syncs every batch refuses a deferred store", func(t *testing.T) {
		st, _ := k.openDeferred(t)
		defer st.Close()
		if _, err := Open(Config{Store: st, Key: testKey, Host: "host-a", Log: quietLog()}); err == nil || !strings.Contains(err.Error(), "SyncInterval") {
			t.Fatalf("open with SyncInterval 0: %v", err)
		}
	})
}

// syncOrder wraps a deferred store and fails the test when a signed head
// covers a record that no sync made durable yet (a Files rotation syncs
// the sealed segment itself).
type syncOrder struct {
	Store
	t *testing.T

	mu                      sync.Mutex
	written, durable        uint64
	heads, syncs, rotations int
}

func (o *syncOrder) Append(ctx context.Context, recs []*Record) error {
	err := o.Store.Append(ctx, recs)
	if err == nil {
		o.mu.Lock()
		o.written = recs[len(recs)-1].Seq
		o.mu.Unlock()
	}
	return err
}

func (o *syncOrder) Sync(ctx context.Context) error {
	err := o.Store.(syncer).Sync(ctx)
	if err == nil {
		o.mu.Lock()
		o.durable, o.syncs = o.written, o.syncs+1
		o.mu.Unlock()
	}
	return err
}

func (o *syncOrder) deferred() bool { return o.Store.(syncer).deferred() }

func (o *syncOrder) PutHead(ctx context.Context, h *Head) error {
	o.mu.Lock()
	if h.Seq > o.durable {
		o.t.Errorf("signed head at seq %d written while records up to %d only are synced (%d written)", h.Seq, o.durable, o.written)
	}
	o.heads++
	o.mu.Unlock()
	return o.Store.PutHead(ctx, h)
}

// syncOrderRotator is a syncOrder over a store with segments.
type syncOrderRotator struct {
	*syncOrder
	rot rotator
}

func wrapSyncOrder(o *syncOrder) Store {
	if rot, ok := o.Store.(rotator); ok {
		return syncOrderRotator{o, rot}
	}
	return o
}

func (o syncOrderRotator) needsRotation(n int) bool { return o.rot.needsRotation(n) }
func (o syncOrderRotator) tailFirst() uint64        { return o.rot.tailFirst() }

func (o syncOrderRotator) rotate(ctx context.Context, cp *Record) error {
	err := o.rot.rotate(ctx, cp)
	if err == nil {
		o.mu.Lock()
		o.written, o.durable, o.rotations = cp.Seq, cp.Seq, o.rotations+1
		o.mu.Unlock()
	}
	return err
}

func (o syncOrderRotator) retention(now time.Time, pub ed25519.PublicKey) ([]string, uint64) {
	return o.rot.retention(now, pub)
}
func (o syncOrderRotator) remove(victims []string) error { return o.rot.remove(victims) }
func (o syncOrderRotator) firstSeq() uint64              { return o.rot.firstSeq() }

func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}
