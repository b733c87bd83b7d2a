package recording

// Stores written by the previous version (heads signed like checkpoints,
// first-version checkpoints), `audit migrate`, and more ways past the
// checks a third review found: each test failed before its fix.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// legacyChain writes a files store as the version before today's fixes
// left it: one segment per entry of times (records at that time), each
// sealed by a first-version checkpoint (no adopted, no time_ns), the last
// one ending with a clean shutdown's checkpoint, and, with withHead, a
// head.json signed with that checkpoint's signature (the earlier form).
func legacyChain(t *testing.T, dir string, times []time.Time, perSeg int, withHead bool) {
	t.Helper()
	prev := ""
	var seq uint64
	var last Checkpoint
	for _, ts := range times {
		name := segName(seq + 1)
		var ls []string
		for j := 0; j < perSeg; j++ {
			seq++
			data, _ := json.Marshal(Statement{N: j + 1, Text: fmt.Sprintf("insert into t values (%d)", seq), Redaction: RedactParameters, Action: "insert", Verdict: "allow", Forwarded: true})
			rec := &Record{V: Version, Seq: seq, Time: ts, Host: "host-a", Type: TypeStatement, Session: "legacy-session", Prev: prev, Data: data}
			rec.encode()
			prev = rec.Hash
			ls = append(ls, string(rec.Raw))
		}
		c := sign(testKey, "host-a", seq, prev, 1, 0, time.Unix(0, 0)) // TimeNS 0, Adopted 0: the v1 message
		data, _ := json.Marshal(c)
		seq++
		rec := &Record{V: Version, Seq: seq, Time: ts, Host: "host-a", Type: TypeCheckpoint, Prev: prev, Data: data}
		rec.encode()
		prev = rec.Hash
		ls = append(ls, string(rec.Raw))
		writeSegment(t, dir, name, ls)
		last = c
	}
	if withHead {
		writeLegacyHead(t, dir, last)
	}
}

func writeLegacyHead(t *testing.T, dir string, c Checkpoint) {
	t.Helper()
	h := Head{Host: "host-a", Seq: c.Seq, Hash: c.Hash, FirstSeq: c.FirstSeq, Time: time.Now(), Key: c.Key, Sig: c.Sig}
	b, _ := json.Marshal(h)
	if err := os.WriteFile(filepath.Join(dir, headFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// migrate does what `interlock audit migrate` does: verify, accepting a
// head of the earlier form, then open trusting it and close.
func migrate(t *testing.T, cfg FilesConfig) {
	t.Helper()
	ro, _ := OpenFilesReadOnly(cfg.Dir)
	if _, err := Verify(context.Background(), ro, VerifyOptions{PublicKey: testPub(), LegacyHead: true}); err != nil {
		t.Fatalf("migrate: verify: %v", err)
	}
	st, err := OpenFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(Config{Store: st, Key: testKey, Host: "host-a", TrustHead: true, Log: quietLog()})
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

func segmentList(t *testing.T, dir string) []segment {
	t.Helper()
	ro, err := OpenFilesReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ro.segs
}

func exists(dir, name string) bool {
	_, err := os.Stat(filepath.Join(dir, name))
	return err == nil
}

// lastCheckpointOf picks the segments to search by their names: an
// empty segment file with a name past the chain's end (what a crash during
// rotation leaves, so verify accepts it) hides every checkpoint from it.
// With head.json removed and the tail cut after a statement record, the
// daemon takes the chain for an earlier version's chain that never
// checkpointed, continues it and signs a new head over the cut: verify
// passes, with only the "found unsigned … written before a crash" warning
// a crash also gives.
func TestHiddenCheckpointsLetDaemonSignTruncation(t *testing.T) {
	cfg := tamperChain(t, 4<<10, 4, 8)
	segs := segmentsOf(t, cfg.Dir)
	orig, err := verifyDir(t, cfg.Dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Cut inside segs[1], after a statement record.
	ls := segmentLines(t, cfg.Dir, segs[1].name)
	keep := len(ls) / 2
	for keep > 1 && strings.Contains(ls[keep-1], `"type":"checkpoint"`) {
		keep--
	}
	cut, err := ParseRecord([]byte(ls[keep-1]))
	if err != nil {
		t.Fatal(err)
	}
	writeSegment(t, cfg.Dir, segs[1].name, ls[:keep])
	for _, sg := range segs[2:] {
		os.Remove(filepath.Join(cfg.Dir, sg.name))
	}
	os.Remove(filepath.Join(cfg.Dir, headFile))
	// An empty segment named as a crash during rotation would name it.
	if err := os.WriteFile(filepath.Join(cfg.Dir, segName(cut.Seq+2)), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	startErr := restart(t, cfg)
	rep, verr := verifyDir(t, cfg.Dir, 0)
	if startErr == nil && verr == nil {
		t.Fatalf("records %d..%d (signed, head at %d) cut and head.json removed: the daemon continued the chain and verify passes (report %+v; unwitnessed %v, the warning a crash gives)",
			cut.Seq+1, orig.Last, orig.Head.Seq, rep, rep.Unwitnessed)
	}
}

// The same blindness after a crash during rotation: retention
// that could not write its head (full disk) announced its first record in
// a checkpoint only; the restart after the crash does not see that
// checkpoint and refuses to start ("records were deleted").
func TestCrashDuringRotationAfterHeadlessRetention(t *testing.T) {
	cfg := tamperChain(t, 4<<10, 4, 8)
	segs := segmentsOf(t, cfg.Dir)
	cfg.RetentionSize = 8 << 10 // the least the configuration allows (2 × segment_size)
	st, err := OpenFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := openRecorder(t, failHeads{st}, noCheckpoints) // retention runs at start, its head fails
	writeSessions(t, r, 1, 1)
	killStore(st)
	_ = r
	if exists(cfg.Dir, segs[0].name) {
		t.Fatal("retention removed nothing")
	}
	last, err := st.Last(context.Background(), "")
	if err != nil || last == nil || last.Type == TypeCheckpoint {
		t.Fatalf("want a statement tail: %v %v", last, err)
	}
	// kill -9 during the next rotation: the new segment exists, the seal
	// did not reach the old one.
	plantEmptySegment(t, cfg, last.Seq+2)
	if err := restart(t, cfg); err != nil {
		t.Fatalf("restart after retention without its head and a crash during rotation: %v", err)
	}
}

// An earlier version's store: the daemon refuses its head until `audit
// migrate` signs a new one, after which it starts and the chain verifies.
// A head rebuilt from any first-version checkpoint after a cut is refused
// the same way: only the operator's migrate trusts the chain's end.
func TestUpgradeNeedsMigrate(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	legacyChain(t, dir, []time.Time{now, now, now}, 5, true)
	cfg := FilesConfig{Dir: dir, Log: quietLog()}
	if err := restart(t, cfg); err == nil || !strings.Contains(err.Error(), "audit migrate") {
		t.Fatalf("first start over an earlier version's head: %v", err)
	}
	if _, err := verifyDir(t, dir, 0); !IsBadRecord(err) || !strings.Contains(err.Error(), "earlier versions") {
		t.Fatalf("verify of an earlier version's head: %v", err)
	}
	migrate(t, cfg)
	if err := restart(t, cfg); err != nil {
		t.Fatalf("start after migrate: %v", err)
	}
	full, err := verifyDir(t, dir, 0)
	if err != nil {
		t.Fatalf("verify after migrate: %v", err)
	}

	// Cut back to the first segment's (first-version) checkpoint and put
	// a head of the earlier form made of it there.
	segs := segmentList(t, dir)
	ls := segmentLines(t, dir, segs[0].name)
	cpRec, _ := ParseRecord([]byte(ls[len(ls)-1]))
	var c Checkpoint
	cpRec.Decode(&c)
	for _, sg := range segs[1:] {
		os.Remove(filepath.Join(dir, sg.name))
	}
	writeLegacyHead(t, dir, c)
	if err := restart(t, cfg); err == nil {
		t.Fatalf("records %d..%d cut, a head rebuilt from an old checkpoint: the daemon started", cpRec.Seq+1, full.Last)
	}
}

// An earlier version killed between its first checkpoint and its first
// head left checkpoints and no head: refused until migrate.
func TestUpgradeCheckpointWithoutHead(t *testing.T) {
	dir := t.TempDir()
	legacyChain(t, dir, []time.Time{time.Now()}, 5, false)
	cfg := FilesConfig{Dir: dir, Log: quietLog()}
	if err := restart(t, cfg); err == nil || !strings.Contains(err.Error(), "no signed head") {
		t.Fatalf("start over checkpoints without a head: %v", err)
	}
	migrate(t, cfg)
	if err := restart(t, cfg); err != nil {
		t.Fatalf("start after migrate: %v", err)
	}
	if _, err := verifyDir(t, dir, 0); err != nil {
		t.Fatalf("verify after migrate: %v", err)
	}
}

// Retention by size counts every file named seg-<number>.log at up
// to a segment's size, and several names can parse to the same number:
// NUL-filled files named for the current segment's first seq with more
// leading zeros sort before it, inflate the total, and leave the signed
// first record right. The daemon removes recent segments that
// retention_size keeps, signs it, and verify passes.
func TestRetentionSizeFakeSegments(t *testing.T) {
	cfg := tamperChain(t, 4<<10, 3, 8)
	segs := segmentsOf(t, cfg.Dir)
	n := len(segs)
	control := tamperChain(t, 4<<10, 3, 8)
	if n+3 > 12 {
		t.Fatalf("setup: %d segments", n)
	}
	var sizes []int64
	for _, sg := range segs {
		fi, _ := os.Stat(filepath.Join(cfg.Dir, sg.name))
		sizes = append(sizes, min(fi.Size(), cfg.SegmentSize))
	}
	// retention_size that keeps the last two sealed segments (and room for
	// what the restart writes).
	cfg.RetentionSize = sizes[n-3] + sizes[n-2] + sizes[n-1] + 2<<10
	control.RetentionSize = cfg.RetentionSize
	if err := restart(t, control); err != nil {
		t.Fatal(err)
	}
	if !exists(control.Dir, segs[n-2].name) {
		t.Fatalf("control (no padding files): the same chain and retention_size removed %s", segs[n-2].name)
	}
	cur := segs[n-1]
	for i := 1; i <= 3; i++ {
		name := segPrefix + strings.Repeat("0", 20+i-len(strconv.FormatUint(cur.first, 10))) + strconv.FormatUint(cur.first, 10) + segSuffix
		f, err := os.Create(filepath.Join(cfg.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(cfg.SegmentSize)
		f.Close()
	}
	if err := restart(t, cfg); err != nil {
		t.Fatal(err)
	}
	rep, verr := verifyDir(t, cfg.Dir, 0)
	if !exists(cfg.Dir, segs[n-2].name) && verr == nil {
		t.Fatalf("retention_size %d keeps %s and %s, but with three padding files the daemon removed them and signed it; verify passes from seq %d (head first_seq %d)",
			cfg.RetentionSize, segs[n-3].name, segs[n-2].name, rep.First, rep.Head.FirstSeq)
	}
}

// ATTACK (upgraded stores). A first-version checkpoint signs no time, so
// A first-version seal signed no time: its record's time, which only the
// hash chain protects, does not age the segment (backdated, it would make
// retention remove recent segments and take the broken link with them).
func TestRetentionAgeFromUnsignedV1SealTime(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	legacyChain(t, dir, []time.Time{now, now, now, now}, 5, true)
	migrate(t, FilesConfig{Dir: dir, Log: quietLog()})
	segs := segmentList(t, dir)
	victim := segs[2].name
	ls := segmentLines(t, dir, victim)
	rec, err := ParseRecord([]byte(ls[len(ls)-1]))
	if err != nil || rec.Type != TypeCheckpoint {
		t.Fatal(rec, err)
	}
	rec.Time = now.Add(-365 * 24 * time.Hour)
	rec.encode()
	ls[len(ls)-1] = string(rec.Raw)
	writeSegment(t, dir, victim, ls)
	if err := restart(t, FilesConfig{Dir: dir, RetentionAge: 24 * time.Hour, Log: quietLog()}); err != nil {
		t.Fatal(err)
	}
	if !exists(dir, segs[0].name) {
		t.Fatal("segments written a moment ago removed by retention_age 24h after one unsigned seal time was backdated")
	}
	if _, err := verifyDir(t, dir, 0); !IsBadRecord(err) {
		t.Fatalf("the backdated seal is still there to be found: %v", err)
	}
}

// A crash during rotation leaves the tail unsealed in the old segment and
// an empty next one. The restart removes the empty one and continues the
// old segment, which is sealed later as usual, so ordinary retention gets
// past it, and the chain verifies after (the adopted records and the
// checkpoint that names them go together, or the range is retired).
func TestRetentionRemovesAdoptedSegment(t *testing.T) {
	cfg := FilesConfig{Dir: t.TempDir(), SegmentSize: 4 << 10, Log: quietLog()}
	last := crashedChain(t, cfg, 3, 8)
	plantEmptySegment(t, cfg, last.Seq+2)
	segA := segs0Name(t, cfg.Dir, last.Seq) // holds the unsealed tail
	cfg.RetentionSize = 2 * cfg.SegmentSize // the least the configuration allows
	st, err := OpenFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := openRecorder(t, st, nil)
	for i := 0; i < 50 && exists(cfg.Dir, segA); i++ {
		writeSessions(t, r, 1, 1)
	}
	r.Close()
	if exists(cfg.Dir, segA) {
		t.Fatalf("retention never got past %s, the segment a crash during rotation left unsealed", segA)
	}
	if _, err := verifyDir(t, cfg.Dir, 0); err != nil {
		t.Fatalf("crash during rotation, then ordinary retention (retention_size 2 × segment_size): verify fails: %v", err)
	}
}

// segs0Name is the name of the segment that holds seq.
func segs0Name(t *testing.T, dir string, seq uint64) string {
	t.Helper()
	name := "none"
	for _, sg := range segmentList(t, dir) {
		if sg.first <= seq {
			name = sg.name
		}
	}
	return name
}

// A files store's chain keeps its name across a hostname
// change, but only once it has a record: a daemon that started (seq-0 head
// as host-a) and recorded nothing, restarted under a new hostname, and
// crashed before its first checkpoint leaves a chain verify rejects.
func TestHostnameChangeBeforeFirstRecord(t *testing.T) {
	dir := t.TempDir()
	st, _ := OpenFiles(FilesConfig{Dir: dir, Log: quietLog()})
	r := openRecorder(t, st, nil) // host-a, nothing recorded
	r.Close()
	st, _ = OpenFiles(FilesConfig{Dir: dir, Log: quietLog()})
	r, err := Open(Config{Store: st, Key: testKey, Host: "host-b", Log: quietLog(), CheckpointInterval: time.Hour, CheckpointEvery: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	writeSessions(t, r, 1, 2)
	killStore(st)
	if _, err := verifyDir(t, dir, 0); err != nil {
		t.Fatalf("hostname changed before the first record, crash before the first checkpoint: %v", err)
	}
}
