package recording

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Config configures a Recorder.
type Config struct {
	Store Store
	Key   ed25519.PrivateKey
	// Host names this host's chain (default: the hostname).
	Host string
	// Redaction is how much statement text protocol adapters record:
	// RedactNone, RedactParameters (default) or RedactFull.
	Redaction string
	// CheckpointEvery and CheckpointInterval: a signed checkpoint is
	// appended after this many records, or this long after the first
	// record not yet covered (defaults 1000 and 10s).
	CheckpointEvery    int
	CheckpointInterval time.Duration
	// SyncInterval 0 (recording.sync: always) makes every batch durable
	// before its statements are released. Above 0 (recording.sync:
	// interval) a batch is released once the store has it written (it
	// survives a crash of the daemon, not of the host), and the store is
	// synced this often when something was written, before every signed
	// head (so that a head never covers records a power loss could take)
	// and at close. The store must be opened for it (DeferSync).
	SyncInterval time.Duration
	// TrustHead accepts, once, a chain whose head earlier versions wrote
	// (signed like a checkpoint, which any checkpoint in the chain could
	// supply) or a chain with records and no head, and signs a checkpoint
	// and a head of this version for it at once: `interlock audit
	// migrate`, after verifying the chain. Without it Open refuses both.
	TrustHead bool
	Metrics   *Metrics
	Log       *slog.Logger
}

// CheckAndSetDefaults validates c and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	if c.Store == nil {
		return errors.New("recording: Store is required")
	}
	if len(c.Key) != ed25519.PrivateKeySize {
		return fmt.Errorf("%w: Key is required", ErrBadKey)
	}
	if c.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("recording: hostname: %w", err)
		}
		c.Host = h
	}
	switch c.Redaction {
	case "":
		c.Redaction = RedactParameters
	case RedactNone, RedactParameters, RedactFull:
	default:
		return fmt.Errorf("recording: redaction %q must be none, parameters or full", c.Redaction)
	}
	if c.CheckpointEvery <= 0 {
		c.CheckpointEvery = 1000
	}
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = 10 * time.Second
	}
	if c.SyncInterval < 0 {
		return fmt.Errorf("recording: SyncInterval %v must not be negative (0: sync every batch)", c.SyncInterval)
	}
	if sy, ok := c.Store.(syncer); ok && sy.deferred() && c.SyncInterval == 0 {
		return errors.New("recording: the store defers syncs (DeferSync) but SyncInterval is 0: its records would never be made durable")
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return nil
}

// maxBatch bounds one group commit.
const maxBatch = 4096

// Recorder appends events to the chain. One goroutine writes: Append and
// Enqueue hand it events, it commits whatever has queued as one batch with
// one sync, then releases the waiters.
type Recorder struct {
	cfg Config
	in  chan *entry

	mu     sync.RWMutex // closed vs. sends on in
	closed bool
	done   chan struct{}

	sessions sync.Map // *engine.Session → *SessionLog

	// Writer goroutine only.
	seq            uint64
	prev           string
	first          uint64
	uncovered      int       // records since the last checkpoint
	uncoveredSince time.Time // time of the first of them
	lastCheckpoint uint64    // seq of the last checkpoint record
	adopted        uint64    // the last record found uncovered at Open (0: none), until a checkpoint says so
	pending        []*Record // a batch whose append failed, maybe stored after all (see reconcile)
	unsynced       bool      // SyncInterval: written since the last sync
	syncFailing    bool      // the last sync failed (logged once a streak)
}

type entry struct {
	typ     Type
	session string
	data    []byte
	done    chan error // nil: nobody waits
}

// Open continues the chain in cfg.Store and starts the writer. It refuses
// a store whose chain ends before its signed head (records removed).
func Open(cfg Config) (*Recorder, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	ctx := context.Background()
	r := &Recorder{cfg: cfg, in: make(chan *entry, maxBatch), done: make(chan struct{}), first: 1}
	last, err := cfg.Store.Last(ctx, cfg.Host)
	if err != nil {
		return nil, err
	}
	head, err := cfg.Store.Head(ctx, cfg.Host)
	if err != nil {
		return nil, err
	}
	if _, files := cfg.Store.(rotator); files {
		// A files store holds one chain: after a hostname change (a
		// renamed machine, a container recreated on the same volume) it
		// goes on under the name it was started with.
		chain := ""
		switch {
		case last != nil:
			chain = last.Host
		case head != nil:
			chain = head.Host
		}
		if chain != "" && chain != cfg.Host {
			cfg.Log.Warn("recording: the store's chain belongs to another host name; continuing it under that name", "chain_host", chain, "hostname", cfg.Host)
			r.cfg.Host = chain
		}
	}
	if last != nil {
		r.seq, r.prev = last.Seq, last.Hash
		if last.Type == TypeCheckpoint {
			r.lastCheckpoint = last.Seq
		} else {
			// The previous run ended without its final checkpoint (a
			// crash), or someone appended records after it. Either way
			// this run did not write them: its first checkpoint signs
			// them as adopted (Verify reports them), at the next
			// interval or close.
			r.uncovered, r.uncoveredSince = 1, time.Now()
			r.adopted = last.Seq
		}
	}
	if err := r.checkHead(ctx, last, head); err != nil {
		return nil, err
	}
	cfg.Metrics.Head.Set(float64(r.seq))
	go r.run()
	return r, nil
}

// checkHead checks the store against its signed head before this run
// continues (and so signs) the chain, and sets the first record the chain
// keeps from signed data only (file names can be changed by whoever can
// delete files). It refuses:
//   - a chain with records but no head: a new chain gets a head for seq 0
//     before its first record, so the head was removed (or an earlier
//     version never wrote one);
//   - a head whose signature does not verify, and one in the form earlier
//     versions wrote (signed like a checkpoint, so any checkpoint in the
//     chain yields one);
//   - a chain that ends before its head (truncated) or differs from it;
//   - a chain that starts after the first record the head, or the last
//     checkpoint, keeps (deleted from the front).
//
// The first two are what `interlock audit migrate` (Config.TrustHead)
// accepts, once, after the operator verified the chain. An empty store
// gets its first head here; if it cannot be written the daemon does not
// start, rather than record without one.
func (r *Recorder) checkHead(ctx context.Context, last *Record, head *Head) error {
	pub := r.cfg.Key.Public().(ed25519.PublicKey)
	if head == nil && last == nil {
		h := &Head{Host: r.cfg.Host, FirstSeq: 1, Time: time.Now().UTC()}
		signHead(r.cfg.Key, h)
		if err := r.cfg.Store.PutHead(ctx, h); err != nil {
			return fmt.Errorf("recording: cannot write the new chain's signed head: %w", err)
		}
		return nil
	}
	trusted := false
	switch {
	case head == nil && !r.cfg.TrustHead:
		return errors.New("recording: the chain has records but no signed head: the head was removed, or an earlier version never wrote one; run `interlock audit verify`, then `interlock audit migrate` to sign a head for the chain as it is (or move the recordings directory aside to start a new chain)")
	case head != nil && !head.verify(pub) && !(head.legacy(pub) && r.cfg.TrustHead):
		if head.legacy(pub) {
			return fmt.Errorf("recording: the signed head (seq %d) is in the form earlier versions wrote, which any checkpoint in the chain could supply; run `interlock audit verify`, then `interlock audit migrate` to sign a head of this version", head.Seq)
		}
		return fmt.Errorf("recording: the signed head (seq %d) does not verify: edited, or signed by another key; run `interlock audit verify`", head.Seq)
	case head == nil || !head.verify(pub):
		trusted = true
	}
	cp, err := r.lastCheckpointOf(ctx, last)
	if err != nil {
		return err
	}
	if trusted {
		// audit migrate: the operator verified the chain; sign it now.
		r.cfg.Log.Warn("recording: signing a head of this version for the chain as it is (audit migrate)")
		r.uncovered, r.uncoveredSince = max(r.uncovered, 1), time.Time{}
		r.lastCheckpoint = 0
	}
	if head != nil {
		if r.seq < head.Seq {
			return fmt.Errorf("recording: the chain ends at seq %d but its signed head is at seq %d: records were removed; run `interlock audit verify`", r.seq, head.Seq)
		}
		if err := r.checkCovered(ctx, head); err != nil {
			return err
		}
	}
	r.first = 1
	if head != nil && head.FirstSeq > r.first {
		r.first = head.FirstSeq
	}
	if cp != nil && cp.FirstSeq > r.first {
		// Retention whose checkpoint was durable but whose head was not
		// written (a full disk) has removed what it announced.
		r.first = cp.FirstSeq
	}
	if last == nil {
		return nil
	}
	stored := uint64(1)
	if rot, ok := r.cfg.Store.(rotator); ok {
		stored = rot.firstSeq()
	}
	if stored > r.first {
		return fmt.Errorf("recording: the chain starts at seq %d but the signed head keeps records from seq %d: records %d..%d were deleted; run `interlock audit verify`", stored, r.first, r.first, stored-1)
	}
	return nil
}

// checkCovered makes sure the chain still holds what the head covers: the
// record at its seq, with its hash, and after it the checkpoint it was
// signed for. Otherwise records the head covers were rewritten (or cut and
// replaced), and continuing would sign them anew as an adopted tail.
func (r *Recorder) checkCovered(ctx context.Context, head *Head) error {
	if head.Seq == 0 {
		return nil
	}
	var at, next *Record
	errDone := errors.New("done")
	err := r.cfg.Store.Scan(ctx, Filter{Host: r.cfg.Host, From: head.Seq}, func(rec *Record, _ string, _ error) error {
		switch {
		case rec == nil:
		case rec.Seq == head.Seq && at == nil:
			at = rec
		case rec.Seq == head.Seq+1 && at != nil:
			next = rec
			return errDone
		default:
			return errDone
		}
		return nil
	})
	if err != nil && !errors.Is(err, errDone) {
		return err
	}
	bad := func(why string) error {
		return fmt.Errorf("recording: the chain no longer holds what its signed head covers (seq %d): %s; run `interlock audit verify`", head.Seq, why)
	}
	switch {
	case at == nil:
		return bad("that record is missing")
	case at.Hash != head.Hash:
		return bad("that record was changed")
	case next == nil || next.Type != TypeCheckpoint || next.Prev != head.Hash:
		return bad("the checkpoint after it is missing or changed")
	}
	var c Checkpoint
	if next.Decode(&c) != nil || c.Seq != head.Seq || c.Hash != head.Hash || !c.verify(r.cfg.Key.Public().(ed25519.PublicKey), next.Host) {
		return bad("the checkpoint after it does not verify")
	}
	return nil
}

// lastCheckpointOf returns the chain's last checkpoint (nil: none), read
// from the store's last segment and the one before (whose last record is
// its sealing checkpoint), or, when none is there (misleading file names,
// a crash during rotation), from the whole chain.
func (r *Recorder) lastCheckpointOf(ctx context.Context, last *Record) (*Checkpoint, error) {
	if last == nil {
		return nil, nil
	}
	var found *Record
	if last.Type == TypeCheckpoint {
		found = last
	} else {
		scan := func(f Filter) error {
			return r.cfg.Store.Scan(ctx, f, func(rec *Record, _ string, _ error) error {
				if rec != nil {
					found = rec
				}
				return nil
			})
		}
		f := Filter{Host: r.cfg.Host, Types: []Type{TypeCheckpoint}}
		if rot, ok := r.cfg.Store.(rotator); ok && rot.tailFirst() > 1 {
			// The last segment and the seal of the one before: where the
			// last checkpoint is, unless the file names mislead.
			f.From = rot.tailFirst() - 1
			if err := scan(f); err != nil {
				return nil, err
			}
			f.From = 0
		}
		if found == nil {
			if err := scan(f); err != nil {
				return nil, err
			}
		}
	}
	if found == nil {
		return nil, nil
	}
	var c Checkpoint
	if err := found.Decode(&c); err != nil {
		return nil, fmt.Errorf("recording: checkpoint seq %d is damaged: %w; run `interlock audit verify`", found.Seq, err)
	}
	if c.Seq+1 != found.Seq || c.Hash != found.Prev || !c.verify(r.cfg.Key.Public().(ed25519.PublicKey), found.Host) {
		return nil, fmt.Errorf("recording: checkpoint seq %d does not verify; run `interlock audit verify`", found.Seq)
	}
	return &c, nil
}

// Host is the name of this recorder's chain.
func (r *Recorder) Host() string { return r.cfg.Host }

// Redaction is the configured redaction of statement text.
func (r *Recorder) Redaction() string { return r.cfg.Redaction }

// Append records an event and returns once it is durable (with
// SyncInterval, once it is written), or failed.
func (r *Recorder) Append(ctx context.Context, typ Type, session string, data any) error {
	done, err := r.appendAsync(typ, session, data)
	if err != nil {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// appendAsync queues an event and returns the channel that receives the
// outcome of its write (one value).
func (r *Recorder) appendAsync(typ Type, session string, data any) (<-chan error, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("recording: encode %s: %w", typ, err)
	}
	e := &entry{typ: typ, session: session, data: b, done: make(chan error, 1)}
	if err := r.send(e); err != nil {
		return nil, err
	}
	return e.done, nil
}

// Enqueue records an event without waiting; it is written with the next
// batch. Failures are counted and logged.
func (r *Recorder) Enqueue(typ Type, session string, data any) {
	b, err := json.Marshal(data)
	if err != nil {
		r.cfg.Log.Error("recording: encode event", "type", typ, "error", err)
		r.cfg.Metrics.Errors.Inc()
		return
	}
	if err := r.send(&entry{typ: typ, session: session, data: b}); err != nil {
		r.cfg.Metrics.Errors.Inc()
	}
}

func (r *Recorder) send(e *entry) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		r.cfg.Metrics.Errors.Inc()
		return ErrClosed
	}
	r.in <- e
	return nil
}

// Close writes what is queued, appends a final checkpoint, updates the
// head and closes the store.
func (r *Recorder) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		<-r.done
		return nil
	}
	r.closed = true
	close(r.in)
	r.mu.Unlock()
	<-r.done
	return r.cfg.Store.Close()
}

func (r *Recorder) run() {
	defer close(r.done)
	tick := time.NewTicker(min(r.cfg.CheckpointInterval/4+time.Millisecond, time.Second))
	defer tick.Stop()
	var syncTick <-chan time.Time // nil: every batch is synced
	if r.cfg.SyncInterval > 0 {
		t := time.NewTicker(r.cfg.SyncInterval)
		defer t.Stop()
		syncTick = t.C
	}
	if _, ok := r.cfg.Store.(rotator); ok {
		r.retain()
	}
	var (
		batch   = make([]*entry, 0, 64)
		waiters bool             // someone waits for the batch
		linger  <-chan time.Time // set while the batch has only records nobody waits for
	)
	for {
		select {
		case e, ok := <-r.in:
			if !ok {
				r.commit(batch, r.uncovered+len(batch) > 0)
				// The final checkpoint's head synced everything before
				// it, unless its append failed.
				r.sync()
				return
			}
			batch = append(batch, e)
			waiters = waiters || e.done != nil
		drain:
			for len(batch) < maxBatch {
				select {
				case e, ok := <-r.in:
					if !ok {
						break drain // the next receive sees the close
					}
					batch = append(batch, e)
					waiters = waiters || e.done != nil
				default:
					break drain
				}
			}
			if !waiters && len(batch) < maxBatch {
				// Results and other records nobody waits for do not
				// start a sync of their own: they ride with the next
				// statement's, or go after asyncLinger, so that a
				// statement arriving meanwhile does not queue behind
				// them.
				if linger == nil {
					linger = time.After(asyncLinger)
				}
				continue
			}
		case <-linger:
		case <-syncTick:
			// In the writer goroutine, so that no append runs while the
			// store syncs: at most one sync each interval, short next to it.
			r.sync()
			continue
		case <-tick.C:
			if len(batch) == 0 && !(r.uncovered > 0 && time.Since(r.uncoveredSince) >= r.cfg.CheckpointInterval) {
				continue
			}
			r.commit(batch, r.uncovered > 0 && time.Since(r.uncoveredSince) >= r.cfg.CheckpointInterval)
			batch, waiters, linger = batch[:0], false, nil
			r.retain()
			continue
		}
		r.commit(batch, false)
		batch, waiters, linger = batch[:0], false, nil
	}
}

// asyncLinger is how long records nobody waits for may wait for a batch.
const asyncLinger = 5 * time.Millisecond

// commit writes one batch (and a checkpoint when one is due) with one
// sync, then releases its waiters.
func (r *Recorder) commit(batch []*entry, forceCheckpoint bool) {
	now := time.Now()
	r.reconcile(now)
	err := r.maybeRotate(batch, now)
	var recs []*Record
	seq, prev := r.seq, r.prev
	if err == nil {
		recs = make([]*Record, 0, len(batch)+1)
		for _, e := range batch {
			seq++
			rec := &Record{V: Version, Seq: seq, Time: now, Host: r.cfg.Host, Type: e.typ, Session: e.session, Prev: prev, Data: e.data}
			rec.encode()
			prev = rec.Hash
			recs = append(recs, rec)
		}
		cp := forceCheckpoint || r.uncovered+len(batch) >= r.cfg.CheckpointEvery
		if cp && (len(recs) > 0 || r.lastCheckpoint != r.seq) {
			rec := r.checkpoint(seq, prev, r.first, now)
			seq, prev = rec.Seq, rec.Hash
			recs = append(recs, rec)
		}
		if len(recs) > 0 {
			err = r.appendTimed(recs)
		}
	}
	if err != nil {
		r.cfg.Metrics.Errors.Add(float64(max(len(batch), 1)))
		r.cfg.Log.Error("recording: append failed; the statements waiting for it are refused", "records", len(batch), "error", err)
		if len(recs) > 0 {
			r.pending = recs
			r.reconcile(now)
		}
	} else if len(recs) > 0 {
		r.advance(recs, now)
	}
	for _, e := range batch {
		if e.done != nil {
			e.done <- err
		}
	}
}

// reconcile settles a batch whose append reported an error: it may still
// have been stored (the PostgreSQL store's commit can succeed while its
// answer times out). If the store's last record is the batch's, its
// statements stay refused but the chain moves past it, or every later
// batch would collide with it. Until the store answers, the batch stays
// pending and is looked for again before the next one.
func (r *Recorder) reconcile(now time.Time) {
	if r.pending == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	last, err := r.cfg.Store.Last(ctx, r.cfg.Host)
	if err != nil {
		return
	}
	recs := r.pending
	r.pending = nil
	end := recs[len(recs)-1]
	if last == nil || last.Seq != end.Seq || last.Hash != end.Hash {
		return
	}
	r.cfg.Log.Warn("recording: a batch reported as failed was stored after all; continuing after it", "seq", end.Seq)
	if r.cfg.SyncInterval > 0 {
		r.unsynced = true // a later head must sync it first
	}
	r.advance(recs, now)
}

func (r *Recorder) appendTimed(recs []*Record) error {
	t0 := time.Now()
	err := r.cfg.Store.Append(context.Background(), recs)
	if r.cfg.SyncInterval == 0 {
		r.cfg.Metrics.Sync.Observe(time.Since(t0).Seconds())
	} else if err == nil {
		r.unsynced = true
	}
	return err
}

// sync makes what was written since the last sync durable (SyncInterval
// only). A failure is counted and logged, and the next interval tries
// again (a Files store refuses every write after a failed sync; see
// breakOnSync).
func (r *Recorder) sync() error {
	sy, ok := r.cfg.Store.(syncer)
	if r.cfg.SyncInterval == 0 || !r.unsynced || !ok {
		return nil
	}
	t0 := time.Now()
	err := sy.Sync(context.Background())
	r.cfg.Metrics.Sync.Observe(time.Since(t0).Seconds())
	if err != nil {
		r.cfg.Metrics.Errors.Inc()
		if !r.syncFailing {
			r.cfg.Log.Error("recording: sync failed; records written since the previous sync are not durable yet", "error", err)
		}
		r.syncFailing = true
		return err
	}
	if r.syncFailing {
		r.cfg.Log.Info("recording: sync works again")
	}
	r.unsynced, r.syncFailing = false, false
	return nil
}

// checkpoint builds the checkpoint record that follows (seq, hash).
func (r *Recorder) checkpoint(seq uint64, hash string, first uint64, now time.Time) *Record {
	return r.seal(seq, hash, first, now, 0)
}

// seal builds a checkpoint that seals a segment of sealed bytes of data
// (0: an ordinary checkpoint).
func (r *Recorder) seal(seq uint64, hash string, first uint64, now time.Time, sealed int64) *Record {
	cp := signSeal(r.cfg.Key, r.cfg.Host, seq, hash, first, r.adopted, now, sealed)
	data, _ := json.Marshal(cp)
	rec := &Record{V: Version, Seq: seq + 1, Time: now, Host: r.cfg.Host, Type: TypeCheckpoint, Prev: hash, Data: data}
	rec.encode()
	return rec
}

// advance moves the writer's state past durable records and rewrites the
// head after a checkpoint.
func (r *Recorder) advance(recs []*Record, now time.Time) {
	var bytes int
	var cp *Record
	for _, rec := range recs {
		bytes += len(rec.Raw) + 1
		r.cfg.Metrics.Records.WithLabelValues(string(rec.Type)).Inc()
		if rec.Type == TypeCheckpoint {
			cp = rec
			r.uncovered = 0
			continue
		}
		if r.uncovered == 0 {
			r.uncoveredSince = now
		}
		r.uncovered++
	}
	last := recs[len(recs)-1]
	r.seq, r.prev = last.Seq, last.Hash
	r.cfg.Metrics.Bytes.Add(float64(bytes))
	r.cfg.Metrics.Head.Set(float64(r.seq))
	if cp != nil {
		r.lastCheckpoint = cp.Seq
		r.adopted = 0 // every checkpoint since Open carried it
		r.putHead(cp, now)
	}
}

// putHead signs and writes the head for a checkpoint just appended.
func (r *Recorder) putHead(cp *Record, now time.Time) {
	if err := r.sync(); err != nil {
		// A head past durable records would, after a power loss, make the
		// chain look truncated; the previous head stays valid.
		r.cfg.Log.Error("recording: signed head not updated: the records it would cover are not durable", "seq", cp.Seq, "error", err)
		return
	}
	var c Checkpoint
	json.Unmarshal(cp.Data, &c)
	h := &Head{Host: r.cfg.Host, Seq: c.Seq, Hash: c.Hash, FirstSeq: c.FirstSeq, Time: now.UTC()}
	signHead(r.cfg.Key, h)
	if err := r.cfg.Store.PutHead(context.Background(), h); err != nil {
		// The chain is intact; only truncation after the previous head
		// would go unnoticed until the next one is written.
		r.cfg.Metrics.Errors.Inc()
		r.cfg.Log.Error("recording: could not write the signed head", "error", err)
		return
	}
}

// maybeRotate seals the current segment with a checkpoint when the batch
// would overflow it, then applies retention.
func (r *Recorder) maybeRotate(batch []*entry, now time.Time) error {
	rot, ok := r.cfg.Store.(rotator)
	if !ok || len(batch) == 0 {
		return nil
	}
	n := 0
	for _, e := range batch {
		n += len(e.data) + 256 + len(r.cfg.Host) + len(e.session)
	}
	if !rot.needsRotation(n) {
		return nil
	}
	cp := r.seal(r.seq, r.prev, r.first, now, rot.dataLen())
	t0 := time.Now()
	err := rot.rotate(context.Background(), cp)
	r.cfg.Metrics.Sync.Observe(time.Since(t0).Seconds())
	if err != nil {
		return err
	}
	r.advance([]*Record{cp}, now)
	r.retain()
	return nil
}

// retain removes what retention allows, after a checkpoint that announces
// the new first record (so that Verify can tell retention from deletion).
func (r *Recorder) retain() {
	rot, ok := r.cfg.Store.(rotator)
	if !ok {
		return
	}
	victims, first := rot.retention(time.Now(), r.cfg.Key.Public().(ed25519.PublicKey))
	if len(victims) == 0 {
		return
	}
	now := time.Now()
	cp := r.checkpoint(r.seq, r.prev, first, now)
	if err := r.appendTimed([]*Record{cp}); err != nil {
		r.cfg.Metrics.Errors.Inc()
		r.cfg.Log.Error("recording: retention postponed: could not write its checkpoint", "error", err)
		return
	}
	r.first = first
	r.advance([]*Record{cp}, now)
	// The checkpoint announcing the new first record must be durable
	// before anything goes (its head may fail on a full disk, which is
	// when retention matters most: the checkpoint is enough).
	if err := r.sync(); err != nil {
		r.cfg.Log.Error("recording: retention postponed: the checkpoint announcing it is not durable", "error", err)
		return
	}
	if err := rot.remove(victims); err != nil {
		r.cfg.Log.Error("recording: retention could not remove segments", "error", err)
	}
	r.cfg.Log.Info("recording: retention removed old segments", "segments", len(victims), "first_seq", first)
}
