package recording

// Recovery from crashes, full disks and lost answers, and the ways past
// the tamper checks a second review found: each test failed before its fix.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// killStore stops a Files store as kill -9 would: the writer is idle, the
// store is never closed (no final checkpoint).
func killStore(st *Files) {
	time.Sleep(30 * time.Millisecond)
	st.mu.Lock()
	st.cur.Close()
	st.cur = nil
	st.mu.Unlock()
}

func noCheckpoints(c *Config) { c.CheckpointInterval, c.CheckpointEvery = time.Hour, 1<<20 }

// crashedChain records sessions × stmts in a new store at cfg.Dir, with no
// checkpoint, and stops as kill -9 would; it returns the last record.
func crashedChain(t *testing.T, cfg FilesConfig, sessions, stmts int) *Record {
	t.Helper()
	st, err := OpenFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := openRecorder(t, st, noCheckpoints)
	writeSessions(t, r, sessions, stmts)
	killStore(st)
	_ = r
	last, err := st.Last(context.Background(), "")
	if err != nil || last == nil {
		t.Fatal(last, err)
	}
	return last
}

// plantEmptySegment leaves what a crash during a rotation leaves: the next
// segment's file, named for seq first, preallocated (it reads as NULs).
func plantEmptySegment(t *testing.T, cfg FilesConfig, first uint64) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(cfg.Dir, segName(first)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(cfg.SegmentSize)
	f.Close()
}

// A kill -9 during a rotation, after the new, empty segment was made
// durable and before the sealing checkpoint reached the old one: the next
// start removes the empty segment and continues the old one, and the
// chain verifies.
func TestCrashDuringRotationLeavesRenamedSegment(t *testing.T) {
	cfg := FilesConfig{Dir: t.TempDir(), SegmentSize: 1 << 20, Log: quietLog()}
	last := crashedChain(t, cfg, 1, 3)
	// rotate(): createSegment(checkpoint.Seq+1), checkpoint.Seq = last.Seq+1.
	plantEmptySegment(t, cfg, last.Seq+2)
	if err := restart(t, cfg); err != nil {
		t.Fatalf("restart after a crash during rotation: %v", err)
	}
	if _, err := verifyDir(t, cfg.Dir, 0); err != nil {
		t.Fatalf("verify after a crash during rotation and a restart: %v", err)
	}
}

// `audit verify --from` past a range a restart adopted verifies.
func TestVerifyFromAfterAdoptedRange(t *testing.T) {
	cfg := FilesConfig{Dir: t.TempDir(), Log: quietLog()}
	last := crashedChain(t, cfg, 1, 3)
	// The next run adopts 1..last.Seq; its records start at last.Seq+1 and
	// its first checkpoint (at close) signs Adopted = last.Seq.
	if err := restart(t, cfg); err != nil {
		t.Fatal(err)
	}
	if rep, err := verifyDir(t, cfg.Dir, 0); err != nil || len(rep.Unwitnessed) != 1 {
		t.Fatalf("full verify: %+v %v", rep, err)
	}
	if _, err := verifyDir(t, cfg.Dir, last.Seq+1); err != nil {
		t.Fatalf("verify --from %d (the first record the restarted daemon wrote): %v", last.Seq+1, err)
	}
}

// A files store holds one chain: after a hostname change (a recreated
// container on the same volume, a renamed machine) the daemon continues it
// under its name, and it verifies.
func TestHostnameChangeOnFilesStore(t *testing.T) {
	dir := t.TempDir()
	st, _ := OpenFiles(FilesConfig{Dir: dir, SegmentSize: 4 << 10, Log: quietLog()})
	r := openRecorder(t, st, nil) // host-a
	writeSessions(t, r, 2, 4)
	r.Close()
	st, _ = OpenFiles(FilesConfig{Dir: dir, SegmentSize: 4 << 10, Log: quietLog()})
	r, err := Open(Config{Store: st, Key: testKey, Host: "host-b", Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	writeSessions(t, r, 1, 2)
	r.Close()
	if _, err := verifyDir(t, dir, 0); err != nil {
		t.Fatalf("the daemon continued the chain under a new hostname, and the chain no longer verifies: %v", err)
	}
}

// failHeads is a files store whose head writes fail (head.json.tmp needs a
// new block; segments are preallocated, so appends still succeed on a full
// disk).
type failHeads struct{ *Files }

func (failHeads) PutHead(context.Context, *Head) error {
	return errors.New("recording: write head: no space left on device")
}

// A new chain whose head cannot be written (a full disk) does not start:
// without a head its later checkpoints would read as a removed head.
func TestNewChainNeedsItsHead(t *testing.T) {
	st, err := OpenFiles(FilesConfig{Dir: t.TempDir(), Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if r, err := Open(Config{Store: failHeads{st}, Key: testKey, Host: "host-a", Log: quietLog()}); err == nil {
		r.Close()
		t.Fatal("a new chain started without its signed head")
	}
}

// Disk full, so the operator lowers retention_size and restarts (what the
// ENOSPC hint says): retention removes segments once its checkpoint is
// durable, although the head announcing it cannot be written, and the
// next start and verify accept the checkpoint's first record.
func TestRetentionFreesAFullDisk(t *testing.T) {
	cfg := tamperChain(t, 4<<10, 4, 8)
	segs := segmentsOf(t, cfg.Dir)
	cfg.RetentionSize = 6 << 10
	st, err := OpenFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := openRecorder(t, failHeads{st}, nil) // retention runs at start
	writeSessions(t, r, 1, 1)
	r.Close()
	if _, err := os.Stat(filepath.Join(cfg.Dir, segs[0].name)); err == nil {
		t.Fatalf("retention_size %d with %d segments: nothing removed while the head cannot be written (a full disk stays full)", cfg.RetentionSize, len(segs))
	}
	if _, err := verifyDir(t, cfg.Dir, 0); err != nil {
		t.Fatalf("verify after retention whose head could not be written: %v", err)
	}
	if err := restart(t, cfg); err != nil {
		t.Fatalf("restart after retention whose head could not be written: %v", err)
	}
	if rep, err := verifyDir(t, cfg.Dir, 0); err != nil || rep.Head.FirstSeq != rep.First {
		t.Fatalf("after the restart: %+v, %v", rep, err)
	}
}

// lostAnswerDurable stores a batch but reports an error, once (a commit whose answer
// was lost), and checks that no head covers records that no sync made
// durable (as syncOrder does for the store suite).
type lostAnswerDurable struct {
	*Files
	mu               sync.Mutex
	armed            bool
	written, durable uint64
	violations       []string
}

func (z *lostAnswerDurable) Append(ctx context.Context, recs []*Record) error {
	err := z.Files.Append(ctx, recs)
	z.mu.Lock()
	defer z.mu.Unlock()
	if err == nil {
		z.written = recs[len(recs)-1].Seq
		if z.armed {
			z.armed = false
			return errors.New("timeout: the answer to the commit was lost")
		}
	}
	return err
}

func (z *lostAnswerDurable) Sync(ctx context.Context) error {
	err := z.Files.Sync(ctx)
	if err == nil {
		z.mu.Lock()
		z.durable = z.written
		z.mu.Unlock()
	}
	return err
}

func (z *lostAnswerDurable) PutHead(ctx context.Context, h *Head) error {
	z.mu.Lock()
	if h.Seq > z.durable {
		z.violations = append(z.violations, "head at seq "+itoa(h.Seq)+" with records durable up to "+itoa(z.durable))
	}
	z.mu.Unlock()
	return z.Files.PutHead(ctx, h)
}

func itoa(n uint64) string { b, _ := json.Marshal(n); return string(b) }

// recording.sync: interval. A batch (with its checkpoint) reported as
// failed but stored is continued after; a head covering it waits for a
// sync, or after a power loss the chain would look truncated.
func TestLandedBatchHeadAfterSync(t *testing.T) {
	st, err := OpenFiles(FilesConfig{Dir: t.TempDir(), DeferSync: true, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	z := &lostAnswerDurable{Files: st}
	r := openRecorder(t, z, func(c *Config) {
		c.CheckpointEvery, c.CheckpointInterval, c.SyncInterval = 1, time.Hour, time.Hour
	})
	ctx := context.Background()
	if err := r.Append(ctx, TypeStatement, "s1", Statement{N: 1, Text: "select 1"}); err != nil {
		t.Fatal(err)
	}
	z.mu.Lock()
	z.armed = true
	z.mu.Unlock()
	if err := r.Append(ctx, TypeStatement, "s1", Statement{N: 2, Text: "select 2"}); err == nil {
		t.Fatal("want the lost-answer append refused")
	}
	z.mu.Lock()
	v := append([]string(nil), z.violations...)
	z.mu.Unlock()
	r.Close()
	if len(v) > 0 {
		t.Fatalf("signed head written over records no sync made durable: %v", v)
	}
}

// primaryKeyStore models the PostgreSQL store's primary key (host, seq) over a files
// store: a batch whose first seq is not the next is a duplicate key. One
// append is stored but reported failed, and the Last that follows it fails
// too (the server that lost the answer is still unreachable for a moment).
type primaryKeyStore struct {
	*Files
	mu       sync.Mutex
	armed    bool
	failLast int
}

func (z *primaryKeyStore) Append(ctx context.Context, recs []*Record) error {
	last, err := z.Files.Last(ctx, "")
	if err != nil {
		return err
	}
	if last != nil && recs[0].Seq != last.Seq+1 {
		return errors.New(`duplicate key value violates unique constraint "interlock_records_pkey"`)
	}
	if err := z.Files.Append(ctx, recs); err != nil {
		return err
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.armed {
		z.armed, z.failLast = false, 1
		return errors.New("timeout: the answer to the commit was lost")
	}
	return nil
}

func (z *primaryKeyStore) Last(ctx context.Context, host string) (*Record, error) {
	z.mu.Lock()
	if z.failLast > 0 {
		z.failLast--
		z.mu.Unlock()
		return nil, errors.New("connect: connection refused")
	}
	z.mu.Unlock()
	return z.Files.Last(ctx, host)
}

// When the store cannot say right away whether a failed batch landed, the
// recorder asks again before the next batch instead of colliding with it
// for good.
func TestLostAnswerThenLastFails(t *testing.T) {
	st, err := OpenFiles(FilesConfig{Dir: t.TempDir(), Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	z := &primaryKeyStore{Files: st}
	r := openRecorder(t, z, nil)
	ctx := context.Background()
	if err := r.Append(ctx, TypeStatement, "s1", Statement{N: 1, Text: "select 1"}); err != nil {
		t.Fatal(err)
	}
	z.mu.Lock()
	z.armed = true
	z.mu.Unlock()
	r.Append(ctx, TypeStatement, "s1", Statement{N: 2, Text: "select 2"})
	var errs []error
	for n := 3; n <= 6; n++ {
		if err := r.Append(ctx, TypeStatement, "s1", Statement{N: n, Text: "select n"}); err != nil {
			errs = append(errs, err)
		}
	}
	r.Close()
	if len(errs) == 4 {
		t.Fatalf("every later statement refused: %v", errs[len(errs)-1])
	}
}

// A head whose signature does not verify stops the daemon: it would
// otherwise sign the cut the head was written to hide.
func TestUnverifiedHeadRefusedAtStart(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  func(t *testing.T, dir string, segs []segment) Head
	}{
		{"tail truncated", func(t *testing.T, dir string, segs []segment) Head {
			for _, sg := range segs[1:] {
				os.Remove(filepath.Join(dir, sg.name))
			}
			return Head{Host: "host-a", Seq: 1, Hash: "x", FirstSeq: 1, Time: time.Now(), Key: "x", Sig: "x"}
		}},
		{"front deleted", func(t *testing.T, dir string, segs []segment) Head {
			os.Remove(filepath.Join(dir, segs[0].name))
			return Head{Host: "host-a", Seq: 1, Hash: "x", FirstSeq: segs[1].first, Time: time.Now(), Key: "x", Sig: "x"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tamperChain(t, 4<<10, 4, 8)
			h := tc.cut(t, cfg.Dir, segmentsOf(t, cfg.Dir))
			b, _ := json.Marshal(h)
			if err := os.WriteFile(filepath.Join(cfg.Dir, headFile), b, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := verifyDir(t, cfg.Dir, 0); !IsBadRecord(err) {
				t.Fatalf("verify before the restart: %v", err)
			}
			if err := restart(t, cfg); err == nil || !strings.Contains(err.Error(), "does not verify") {
				t.Fatalf("the daemon on a forged, unsigned head: %v", err)
			}
		})
	}
}

// Removing head.json and cutting the chain right after its first
// checkpoint is caught: verify fails and the daemon does not continue it.
func TestOneCheckpointCutCaught(t *testing.T) {
	cfg := tamperChain(t, 4<<10, 4, 8)
	segs := segmentsOf(t, cfg.Dir)
	for _, sg := range segs[1:] {
		os.Remove(filepath.Join(cfg.Dir, sg.name))
	}
	// segs[0] ends with its sealing checkpoint: is it the only one?
	n := 0
	for _, l := range segmentLines(t, cfg.Dir, segs[0].name) {
		if strings.Contains(l, `"type":"checkpoint"`) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("setup: first segment holds %d checkpoints", n)
	}
	os.Remove(filepath.Join(cfg.Dir, headFile))
	if _, err := verifyDir(t, cfg.Dir, 0); !IsBadRecord(err) {
		t.Fatalf("head removed, cut after the first checkpoint: verify %v", err)
	}
	if err := restart(t, cfg); err == nil {
		t.Fatalf("head removed and %d segments cut after the first checkpoint: the daemon continued", len(segs)-1)
	}
}

// Retention by size counts a sealed segment at no more than a segment's
// size: padding one (with newlines, which readers take for data) does not
// make retention remove recent segments.
func TestRetentionSizeIgnoresPadding(t *testing.T) {
	cfg := tamperChain(t, 4<<10, 4, 8)
	segs := segmentsOf(t, cfg.Dir)
	cfg.RetentionSize = 1 << 20 // far above the chain (tens of KiB)
	f, err := os.OpenFile(filepath.Join(cfg.Dir, segs[len(segs)-2].name), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(bytes.Repeat([]byte("\n"), 2<<20))
	f.Close()
	st, err := OpenFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := openRecorder(t, st, nil) // retention runs at start
	writeSessions(t, r, 1, 1)
	r.Close()
	if _, err := os.Stat(filepath.Join(cfg.Dir, segs[0].name)); err != nil {
		rep, verr := verifyDir(t, cfg.Dir, 0)
		t.Fatalf("retention removed %s (recent) after newline padding; verify afterwards: %+v, %v", segs[0].name, rep, verr)
	}
}

// Retention by age takes a segment's age from its own sealing checkpoint
// only: an old segment's checkpoint appended to recent ones does not make
// them old.
func TestRetentionAgeFromForeignCheckpoint(t *testing.T) {
	const age = time.Second
	cfg := FilesConfig{Dir: t.TempDir(), SegmentSize: 4 << 10, Log: quietLog()}
	st, _ := OpenFiles(cfg)
	r := openRecorder(t, st, nil)
	writeSessions(t, r, 3, 8)
	r.Close()
	old := segmentsOf(t, cfg.Dir)
	oldCP := segmentLines(t, cfg.Dir, old[0].name)
	cpLine := oldCP[len(oldCP)-1]
	time.Sleep(age + 200*time.Millisecond)
	st, _ = OpenFiles(cfg) // no retention configured yet
	r = openRecorder(t, st, nil)
	writeSessions(t, r, 3, 8)
	r.Close()
	all := segmentsOf(t, cfg.Dir)
	recent := all[len(old)-1 : len(all)-1] // sealed in the second run (the first run's current segment included)
	if len(recent) == 0 {
		t.Fatal("no recent sealed segments")
	}
	for _, sg := range recent {
		writeSegment(t, cfg.Dir, sg.name, append(segmentLines(t, cfg.Dir, sg.name), cpLine))
	}
	cfg.RetentionAge = age
	st, _ = OpenFiles(cfg)
	r = openRecorder(t, st, nil)
	writeSessions(t, r, 1, 1)
	r.Close()
	if _, err := os.Stat(filepath.Join(cfg.Dir, recent[0].name)); err != nil {
		rep, verr := verifyDir(t, cfg.Dir, 0)
		t.Fatalf("retention by age removed %s, written under a second ago; verify afterwards: %+v, %v", recent[0].name, rep, verr)
	}
}
