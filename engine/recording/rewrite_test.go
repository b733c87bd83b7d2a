package recording

// A fourth review: a chain rewritten under its head, segment files added
// to sway retention, and the key's creation. Each failed before its fix.

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The daemon checks only the head's seq against the chain (and its hash
// only when the chain ends exactly at the head's seq). After a clean
// shutdown the chain ends with a checkpoint one past the head, so a chain
// rewritten under the head (checkpoints dropped, one record longer) is
// adopted as an unsigned tail and signed: verify then passes.
func TestDaemonRefusesRewriteUnderHead(t *testing.T) {
	cfg := FilesConfig{Dir: t.TempDir(), SegmentSize: 1 << 20, Log: quietLog()}
	st, err := OpenFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := openRecorder(t, st, nil)
	writeSessions(t, r, 2, 5) // includes blocked statements
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	before := mustVerify(t, mustRO(t, cfg.Dir))
	head := before.Head
	if head == nil || head.Seq == 0 {
		t.Fatalf("no head after a clean close: %+v", before)
	}

	segs := segmentList(t, cfg.Dir)
	if len(segs) != 1 {
		t.Fatalf("want one segment, got %d", len(segs))
	}
	lines := segmentLines(t, cfg.Dir, segs[0].name)
	// Rewrite the whole chain: blocked statements become allowed ones,
	// checkpoints become results; links and hashes recomputed.
	var out []string
	prev := ""
	edited := 0
	for _, l := range lines {
		rec, err := ParseRecord([]byte(l))
		if err != nil {
			t.Fatal(err)
		}
		if rec.Type == TypeCheckpoint {
			rec.Type, rec.Data = TypeResult, []byte(`{"n":0,"tag":"SELECT 1"}`)
		}
		if bytes.Contains(rec.Data, []byte(`"verdict":"block"`)) {
			rec.Data = bytes.ReplaceAll(rec.Data, []byte(`"verdict":"block"`), []byte(`"verdict":"allow"`))
			edited++
		}
		rec.Prev = prev
		rec.encode()
		prev = rec.Hash
		out = append(out, string(rec.Raw))
	}
	if edited == 0 || uint64(len(out)) <= head.Seq {
		t.Fatalf("setup: %d edited, %d records, head at %d", edited, len(out), head.Seq)
	}
	writeSegment(t, cfg.Dir, segs[0].name, out)

	if err := restart(t, cfg); err == nil {
		rep, verr := verifyDir(t, cfg.Dir, 0)
		t.Fatalf("the chain the head (seq %d) covered was rewritten (%d verdicts changed, every checkpoint removed) and the daemon started and signed it; verify afterwards: err=%v, unwitnessed=%v",
			head.Seq, edited, verr, repUnwitnessed(rep))
	}
}

// Retention by size counts every canonically named segment file at up to
// segment_size: sparse files named inside the last sealed segment's range
// (readers see no record in them, verify passes with them) make the daemon
// remove recent sealed segments that retention_size keeps, and sign it.
func TestRetentionIgnoresAddedSegmentFiles(t *testing.T) {
	cfg := tamperChain(t, 4<<10, 3, 8)
	segs := segmentsOf(t, cfg.Dir)
	n := len(segs)
	var sizes []int64
	var sum, older int64
	for i, sg := range segs {
		fi, err := os.Stat(filepath.Join(cfg.Dir, sg.name))
		if err != nil {
			t.Fatal(err)
		}
		s := min(fi.Size(), cfg.SegmentSize)
		sizes = append(sizes, s)
		sum += s
		if i < n-2 {
			older += s
		}
	}
	// retention_size above the whole chain: nothing is due.
	const slack = 3 << 10
	cfg.RetentionSize = sum + slack
	// Fakes totalling older+slack, named after seqs inside segs[n-2]
	// (sparse files: they read as NULs, no record).
	want := older + slack
	next := segs[n-2].first + 1
	for want > 0 {
		if next >= segs[n-1].first {
			t.Fatalf("setup: segment %s too short for the fake files", segs[n-2].name)
		}
		sz := min(want, cfg.SegmentSize)
		f, err := os.Create(filepath.Join(cfg.Dir, segName(next)))
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(sz)
		f.Close()
		want -= sz
		next++
	}
	if _, err := verifyDir(t, cfg.Dir, 0); err != nil {
		t.Fatalf("setup: verify with the fake files: %v", err)
	}
	if err := restart(t, cfg); err != nil {
		t.Fatal(err)
	}
	rep, verr := verifyDir(t, cfg.Dir, 0)
	if !exists(cfg.Dir, segs[0].name) && verr == nil {
		t.Fatalf("retention_size %d is above the whole chain (%d bytes), but with sparse files named inside %s the daemon removed %s..%s and signed it; verify passes from seq %d (head first_seq %d)",
			cfg.RetentionSize, sum, segs[n-2].name, segs[0].name, segs[n-3].name, rep.First, rep.Head.FirstSeq)
	}
}

func mustRO(t *testing.T, dir string) *Files {
	t.Helper()
	ro, err := OpenFilesReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ro
}

func repUnwitnessed(rep *VerifyReport) [][2]uint64 {
	if rep == nil {
		return nil
	}
	return rep.Unwitnessed
}

// The signing key is written whole before it takes its name: a second
// call loads the same key, and no temporary file stays behind.
func TestKeyCreatedWhole(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, KeyFile)
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("second load: %v (same key: %v)", err, bytes.Equal(k1, k2))
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("files left in the state dir: %v", ents)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", st.Mode().Perm())
	}
}
