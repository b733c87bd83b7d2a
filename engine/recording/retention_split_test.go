package recording

// A sixth review: splitting a real sealed segment at its interior
// checkpoints gave pieces that each passed as sealed segments, each padded
// with NULs (after its data, or between its first record and its seal) to
// count a whole segment_size. A seal now signs its segment's length and
// where it starts, and interior checkpoints are not seals.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// splitPieces splits a sealed segment's lines after each interior checkpoint:
// every piece begins with the record its name says and ends with a real
// checkpoint of the record before it.
func splitPieces(t *testing.T, first uint64, lines []string) (names []string, pieces [][]string) {
	t.Helper()
	start := 0
	name := segName(first)
	for i, l := range lines {
		rec, err := ParseRecord([]byte(l))
		if err != nil {
			t.Fatal(err)
		}
		if rec.Type != TypeCheckpoint {
			continue
		}
		names = append(names, name)
		pieces = append(pieces, lines[start:i+1])
		start = i + 1
		name = segName(rec.Seq + 1)
	}
	if start != len(lines) {
		t.Fatalf("segment does not end with its seal")
	}
	return names, pieces
}

func splitChain(t *testing.T, segSize int64, sessions, stmts int) (FilesConfig, []segment, int64) {
	t.Helper()
	cfg := FilesConfig{Dir: t.TempDir(), SegmentSize: segSize, Log: quietLog()}
	st, err := OpenFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := openRecorder(t, st, func(c *Config) { c.CheckpointEvery = 3 })
	writeSessions(t, r, sessions, stmts)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyDir(t, cfg.Dir, 0); err != nil {
		t.Fatal(err)
	}
	segs := segmentsOf(t, cfg.Dir)
	var sum int64
	for _, sg := range segs {
		fi, err := os.Stat(filepath.Join(cfg.Dir, sg.name))
		if err != nil {
			t.Fatal(err)
		}
		sum += min(fi.Size(), cfg.SegmentSize)
	}
	return cfg, segs, sum
}

func goneSegments(dir string, segs []segment) []string {
	var gone []string
	for _, sg := range segs {
		if !exists(dir, sg.name) {
			gone = append(gone, sg.name)
		}
	}
	return gone
}

// The last sealed segment is split at its interior checkpoints and each
// piece padded with NULs after its data up to segment_size (under the
// 64 KiB sealInfo tolerates). The chain is unchanged: verify passes before
// and after, with no clean-up. retention_size is above the whole chain,
// yet the daemon's next start removes older segments and signs it.
func TestRetentionIgnoresSplitPaddedSegment(t *testing.T) {
	cfg, segs, sum := splitChain(t, 4<<10, 4, 8)
	n := len(segs)
	cfg.RetentionSize = sum + 1<<10 // nothing is due

	b := segs[n-2]
	names, pieces := splitPieces(t, b.first, segmentLines(t, cfg.Dir, b.name))
	if len(pieces) < 3 {
		t.Fatalf("setup: segment %s has %d checkpoints, want ≥ 3", b.name, len(pieces))
	}
	for i, name := range names {
		data := []byte(strings.Join(pieces[i], "\n") + "\n")
		buf := make([]byte, cfg.SegmentSize)
		copy(buf, data)
		if err := os.WriteFile(filepath.Join(cfg.Dir, name), buf, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := verifyDir(t, cfg.Dir, 0); err != nil {
		t.Fatalf("setup: verify with %s split into %d padded pieces: %v", b.name, len(pieces), err)
	}
	if err := restart(t, cfg); err != nil {
		t.Fatalf("restart: %v", err)
	}
	rep, verr := verifyDir(t, cfg.Dir, 0)
	if gone := goneSegments(cfg.Dir, segs); len(gone) > 0 && verr == nil {
		t.Fatalf("retention_size %d is above the whole chain (%d bytes), but with %s split at its checkpoints into %d NUL-padded pieces the daemon removed %v and signed it; verify passes from seq %d (head first_seq %d)",
			cfg.RetentionSize, sum, b.name, len(pieces), gone, rep.First, rep.Head.FirstSeq)
	}
}

// With segments larger than sealInfo's 64 KiB window the padding goes
// between a piece's first record and its seal: each piece then counts a
// whole segment_size. The daemon's start removes everything before; the
// writer then puts each remaining piece's records back (or the original
// segment), and verify passes.
func TestRetentionIgnoresMiddlePaddedPieces(t *testing.T) {
	cfg, segs, sum := splitChain(t, 128<<10, 60, 10)
	n := len(segs)
	if n < 4 {
		t.Fatalf("setup: want ≥ 4 segments, got %d", n)
	}
	cfg.RetentionSize = sum + 64<<10 // nothing is due

	b := segs[n-2]
	orig := segmentLines(t, cfg.Dir, b.name)
	names, pieces := splitPieces(t, b.first, orig)
	if len(pieces) < 3 {
		t.Fatalf("setup: segment %s has %d checkpoints, want ≥ 3", b.name, len(pieces))
	}
	for i, name := range names {
		p := pieces[i]
		buf := make([]byte, cfg.SegmentSize)
		copy(buf, p[0]+"\n")
		seal := "\n" + p[len(p)-1] + "\n"
		copy(buf[len(buf)-len(seal):], seal)
		if err := os.WriteFile(filepath.Join(cfg.Dir, name), buf, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := restart(t, cfg); err != nil {
		t.Fatalf("restart: %v", err)
	}
	// Clean up: the pieces still there get their records back.
	for i, name := range names {
		if exists(cfg.Dir, name) {
			writeSegment(t, cfg.Dir, name, pieces[i])
		}
	}
	rep, verr := verifyDir(t, cfg.Dir, 0)
	gone := goneSegments(cfg.Dir, segs[:n-2])
	if len(gone) > 0 && verr == nil {
		t.Fatalf("retention_size %d is above the whole chain (%d bytes), but with %s split into %d pieces padded between first record and seal the daemon removed %d of the %d older segments (%v) and signed it; after the pieces got their records back verify passes from seq %d (head first_seq %d)",
			cfg.RetentionSize, sum, b.name, len(pieces), len(gone), n-2, gone, rep.First, rep.Head.FirstSeq)
	}
	if verr != nil {
		t.Logf("verify after: %v", verr)
	}
}
