package recording

// A seventh review: what still counted towards retention_size unsigned
// (the current segment, first-version seals) and a first record longer
// than a segment. Each failed before its fix.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// forgeTail appends n records with big statement texts to the current
// (last) segment, chained to its last record: no key is needed for that.
func forgeTail(t *testing.T, dir string, n, textLen int) {
	t.Helper()
	ro, err := OpenFilesReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	cur := ro.segs[len(ro.segs)-1].name
	ls := segmentLines(t, dir, cur)
	last, err := ParseRecord([]byte(ls[len(ls)-1]))
	if err != nil {
		t.Fatal(err)
	}
	seq, prev := last.Seq, last.Hash
	for i := 0; i < n; i++ {
		seq++
		data, _ := json.Marshal(Statement{N: 1, Text: strings.Repeat("x", textLen), Redaction: RedactParameters, Action: "insert", Verdict: "allow", Forwarded: true})
		rec := &Record{V: Version, Seq: seq, Time: time.Now(), Host: "host-a", Type: TypeStatement, Session: "forged", Prev: prev, Data: data}
		rec.encode()
		prev = rec.Hash
		ls = append(ls, string(rec.Raw))
	}
	writeSegment(t, dir, cur, ls)
}

// Someone without the key appends records (or any bytes in lines) to the
// current segment while the daemon is down. The current segment counts at
// its full data length (uncapped, unsigned) towards retention_size, so at
// its next start the daemon removes every sealed segment that
// retention_size keeps, and signs the removal: verify passes afterwards
// (the forged records show only as an adopted, "unwitnessed" range).
func TestRetentionCapsForgedCurrentSegment(t *testing.T) {
	cfg := tamperChain(t, 4<<10, 4, 8)
	segs := segmentsOf(t, cfg.Dir)
	before, err := verifyDir(t, cfg.Dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RetentionSize = 1 << 20 // far above the recorded chain (tens of KiB)
	forgeTail(t, cfg.Dir, 48, 32<<10)
	if err := restart(t, cfg); err != nil {
		t.Fatalf("daemon refused to start: %v", err)
	}
	if gone := goneSegments(cfg.Dir, segs[:len(segs)-1]); len(gone) > 0 {
		rep, verr := verifyDir(t, cfg.Dir, 0)
		var unw [][2]uint64
		if rep != nil {
			unw = rep.Unwitnessed
		}
		t.Fatalf("retention_size %d keeps the recorded chain (records 1..%d), but after records were appended to the current segment without the key the daemon removed %d sealed segments %v and signed it; verify afterwards: first=%v unwitnessed=%v err=%v",
			cfg.RetentionSize, before.Last, len(gone), gone, func() any {
				if rep != nil {
					return rep.First
				}
				return nil
			}(), unw, verr)
	}
}

// Same with plain junk lines (not records) in the current segment before
// one record that parses: the junk counts towards retention_size too.
func TestRetentionCapsJunkInCurrentSegment(t *testing.T) {
	cfg := tamperChain(t, 4<<10, 4, 8)
	segs := segmentsOf(t, cfg.Dir)
	cfg.RetentionSize = 1 << 20
	cur := segs[len(segs)-1].name
	ls := segmentLines(t, cfg.Dir, cur)
	last, err := ParseRecord([]byte(ls[len(ls)-1]))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 64; i++ {
		ls = append(ls, strings.Repeat("j", 32<<10))
	}
	rec := &Record{V: Version, Seq: last.Seq + 1, Time: time.Now(), Host: "host-a", Type: TypeStatement, Session: "forged", Prev: last.Hash, Data: json.RawMessage(`{}`)}
	rec.encode()
	ls = append(ls, string(rec.Raw))
	writeSegment(t, cfg.Dir, cur, ls)
	if err := restart(t, cfg); err != nil {
		t.Fatalf("daemon refused to start: %v", err)
	}
	if gone := goneSegments(cfg.Dir, segs[:len(segs)-1]); len(gone) > 0 {
		_, verr := verifyDir(t, cfg.Dir, 0)
		t.Fatalf("2 MiB of junk lines in the current segment made the daemon remove %d sealed segments %v that retention_size %d keeps; verify afterwards: %v", len(gone), gone, cfg.RetentionSize, verr)
	}
}

// A record larger than segment_size (statement text up to MaxText = 1 MiB,
// segment_size from 64 KiB) that begins a segment: sealInfo reads the
// first line with a buffer of min(file size, segment_size)+1 bytes, gets
// ErrBufferFull and takes the segment for unsealed. Retention stops there
// for good (nothing after it can go either): the disk fills.
func TestRetentionPastSegmentStartingWithBigRecord(t *testing.T) {
	cfg := FilesConfig{Dir: t.TempDir(), SegmentSize: 4 << 10, Log: quietLog()}
	st, err := OpenFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := openRecorder(t, st, nil)
	writeSessions(t, r, 2, 6)
	ctx := context.Background()
	if err := r.Append(ctx, TypeStatement, "s", Statement{N: 1, Text: "small"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Append(ctx, TypeStatement, "s", Statement{N: 2, Text: strings.Repeat("b", 8<<10)}); err != nil {
		t.Fatal(err)
	}
	writeSessions(t, r, 4, 8)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyDir(t, cfg.Dir, 0); err != nil {
		t.Fatal(err)
	}
	var big string
	for _, sg := range segmentList(t, cfg.Dir) {
		ls := segmentLines(t, cfg.Dir, sg.name)
		if len(ls) > 0 && len(ls[0]) > int(cfg.SegmentSize) {
			big = sg.name
		}
	}
	if big == "" {
		t.Fatal("no segment begins with the big record")
	}
	segs := segmentList(t, cfg.Dir)
	if segs[len(segs)-1].name == big {
		t.Fatal("the big record's segment is the current one")
	}
	cfg.RetentionSize = 8 << 10 // far below the chain: every sealed segment is over it
	if err := restart(t, cfg); err != nil {
		t.Fatal(err)
	}
	if exists(cfg.Dir, big) {
		var left []string
		for _, sg := range segmentList(t, cfg.Dir) {
			left = append(left, sg.name)
		}
		t.Fatalf("retention_size %d: sealed segment %s (first record longer than segment_size) was never removed, nor anything after it; left: %v", cfg.RetentionSize, big, left)
	}
}

// A store migrated from first-version checkpoints (`audit migrate`): the
// earlier version's segments have interior v1 checkpoints, which cannot be
// told from seals. Splitting such a segment at them (the chain unchanged:
// verify passes) and padding each piece with NULs (sparse, free) makes
// each piece count segment_size, so the daemon removes the earlier
// version's records that retention_size keeps, and signs it.
func TestRetentionIgnoresSplitLegacySegment(t *testing.T) {
	cfg := FilesConfig{Dir: t.TempDir(), SegmentSize: 4 << 10, Log: quietLog()}
	// One legacy segment: 12 statements, a v1 checkpoint after every 3
	// (the last one its seal).
	prev := ""
	var seq uint64
	var ls []string
	var last Checkpoint
	ts := time.Now().Add(-time.Hour)
	for j := 0; j < 12; j++ {
		seq++
		data, _ := json.Marshal(Statement{N: j + 1, Text: fmt.Sprintf("insert into t values (%d)", seq), Redaction: RedactParameters, Action: "insert", Verdict: "allow", Forwarded: true})
		rec := &Record{V: Version, Seq: seq, Time: ts, Host: "host-a", Type: TypeStatement, Session: "legacy", Prev: prev, Data: data}
		rec.encode()
		prev = rec.Hash
		ls = append(ls, string(rec.Raw))
		if (j+1)%3 == 0 {
			c := sign(testKey, "host-a", seq, prev, 1, 0, time.Unix(0, 0))
			d, _ := json.Marshal(c)
			seq++
			cr := &Record{V: Version, Seq: seq, Time: ts, Host: "host-a", Type: TypeCheckpoint, Prev: prev, Data: d}
			cr.encode()
			prev = cr.Hash
			ls = append(ls, string(cr.Raw))
			last = c
		}
	}
	writeSegment(t, cfg.Dir, segName(1), ls)
	// The earlier version's current segment: two statements and its
	// shutdown checkpoint (migrate then writes into it).
	ls = nil
	tail := segName(seq + 1)
	for j := 0; j < 2; j++ {
		seq++
		data, _ := json.Marshal(Statement{N: j + 1, Text: "select 1", Redaction: RedactParameters, Action: "select", Verdict: "allow", Forwarded: true})
		rec := &Record{V: Version, Seq: seq, Time: ts, Host: "host-a", Type: TypeStatement, Session: "legacy", Prev: prev, Data: data}
		rec.encode()
		prev = rec.Hash
		ls = append(ls, string(rec.Raw))
	}
	last = sign(testKey, "host-a", seq, prev, 1, 0, time.Unix(0, 0))
	d, _ := json.Marshal(last)
	seq++
	cr := &Record{V: Version, Seq: seq, Time: ts, Host: "host-a", Type: TypeCheckpoint, Prev: prev, Data: d}
	cr.encode()
	ls = append(ls, string(cr.Raw))
	writeSegment(t, cfg.Dir, tail, ls)
	writeLegacyHead(t, cfg.Dir, last)
	migrate(t, cfg)
	// This version records on: a few sealed segments.
	st, err := OpenFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := openRecorder(t, st, nil)
	writeSessions(t, r, 3, 8)
	r.Close()
	segs := segmentList(t, cfg.Dir)
	var total int64
	for _, sg := range segs {
		fi, _ := os.Stat(filepath.Join(cfg.Dir, sg.name))
		total += fi.Size()
	}
	cfg.RetentionSize = total + 4<<10 // keeps everything recorded
	// Split the legacy segment at its interior checkpoints, pad each piece.
	names, pieces := splitPieces(t, 1, segmentLines(t, cfg.Dir, segName(1)))
	for i, n := range names {
		writeSegment(t, cfg.Dir, n, pieces[i])
		if err := os.Truncate(filepath.Join(cfg.Dir, n), cfg.SegmentSize); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := verifyDir(t, cfg.Dir, 0); err != nil {
		t.Fatalf("split chain does not verify: %v", err)
	}
	if err := restart(t, cfg); err != nil {
		t.Fatalf("daemon refused to start: %v", err)
	}
	if gone := goneSegments(cfg.Dir, []segment{{name: names[0]}}); len(gone) > 0 {
		rep, verr := verifyDir(t, cfg.Dir, 0)
		first := uint64(0)
		if rep != nil {
			first = rep.First
		}
		t.Fatalf("retention_size %d keeps the whole chain (%d bytes), but after the legacy segment was split into %d NUL-padded pieces the daemon removed %v; verify afterwards: first=%d err=%v",
			cfg.RetentionSize, total, len(names), goneSegments(cfg.Dir, func() []segment {
				var s []segment
				for _, n := range names {
					s = append(s, segment{name: n})
				}
				return s
			}()), first, verr)
	}
}
