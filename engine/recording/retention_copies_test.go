package recording

// A fifth review: retention swayed by copies of real checkpoints.

import (
	"os"
	"path/filepath"
	"testing"
)

// Files named after the seq following each of a sealed segment's interior
// checkpoints, holding NULs (readers see no record, verify passes) and then
// a copy of the next real checkpoint, end in a checkpoint that verifies and
// covers the seq before the next file's name. They must not count towards
// retention_size: a sealed segment counts only when it begins with the
// record its name says, and only in the unbroken run of sealed segments
// from the first.
func TestRetentionIgnoresCopiedCheckpoints(t *testing.T) {
	cfg := FilesConfig{Dir: t.TempDir(), SegmentSize: 4 << 10, Log: quietLog()}
	st, err := OpenFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Checkpoints inside segments, as checkpoint_every or the 10s
	// checkpoint_interval write them in any longer run.
	r := openRecorder(t, st, func(c *Config) { c.CheckpointEvery = 3 })
	writeSessions(t, r, 4, 8)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyDir(t, cfg.Dir, 0); err != nil {
		t.Fatal(err)
	}
	segs := segmentsOf(t, cfg.Dir)
	n := len(segs)
	// What retention counts today: sealed segments (cut to their data) and
	// the current segment's data.
	var sum int64
	for i, sg := range segs {
		if i == n-1 {
			for _, l := range segmentLines(t, cfg.Dir, sg.name) {
				sum += int64(len(l)) + 1
			}
			continue
		}
		fi, err := os.Stat(filepath.Join(cfg.Dir, sg.name))
		if err != nil {
			t.Fatal(err)
		}
		sum += min(fi.Size(), cfg.SegmentSize)
	}
	cfg.RetentionSize = sum + 1<<10 // nothing is due

	// The last sealed segment's checkpoints: interior ones, then its seal.
	b := segs[n-2]
	var cps []*Record
	for _, l := range segmentLines(t, cfg.Dir, b.name) {
		rec, err := ParseRecord([]byte(l))
		if err != nil {
			t.Fatal(err)
		}
		if rec.Type == TypeCheckpoint {
			cps = append(cps, rec)
		}
	}
	if len(cps) < 3 {
		t.Fatalf("setup: segment %s has %d checkpoints, want ≥ 3", b.name, len(cps))
	}
	// A file named after each interior checkpoint's next seq, holding the
	// following checkpoint: its "seal" then covers the record before the
	// next file's name.
	for i := 0; i+1 < len(cps); i++ {
		name := segName(cps[i].Seq + 1)
		line := append([]byte("\n"), cps[i+1].Raw...)
		line = append(line, '\n')
		buf := make([]byte, cfg.SegmentSize)
		copy(buf[len(buf)-len(line):], line)
		if err := os.WriteFile(filepath.Join(cfg.Dir, name), buf, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := verifyDir(t, cfg.Dir, 0); err != nil {
		t.Fatalf("setup: verify with the added files: %v", err)
	}
	if err := restart(t, cfg); err != nil {
		t.Fatalf("restart: %v", err)
	}
	rep, verr := verifyDir(t, cfg.Dir, 0)
	var gone []string
	for _, sg := range segs {
		if !exists(cfg.Dir, sg.name) {
			gone = append(gone, sg.name)
		}
	}
	if len(gone) > 0 && verr == nil {
		t.Fatalf("retention_size %d is above the whole chain (%d bytes), but with %d files holding copies of %s's checkpoints the daemon removed %v and signed it; verify passes from seq %d (head first_seq %d)",
			cfg.RetentionSize, sum, len(cps)-1, b.name, gone, rep.First, rep.Head.FirstSeq)
	}
}
