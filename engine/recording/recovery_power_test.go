package recording

// An eighth review: a power loss during a rotation with sync: interval.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// With recording.sync: interval, rotate() used to create the new segment
// before the old one's records were durable: a power loss could keep the
// new, empty seg-(S+2) and lose records K+1..S, and the chain then went on
// at K+1 inside seg-(S+2), so a later rotation created a file that sorts
// before it (verify failed, the next start refused) or one of the same
// name (every statement refused). rotate() now syncs first, and a start
// that finds an empty last segment continues the one before it. The test
// recreates the state such a power loss left on disk.
func TestPowerLossDuringRotation(t *testing.T) {
	// Stopped while the misnamed segment is current, then started again.
	t.Run("restart", func(t *testing.T) {
		if probs := lostBeforeRotation(t, 1200, 4); len(probs) > 0 {
			t.Fatalf("after one power loss during a rotation (sync: interval), with no tampering:\n%s", strings.Join(probs, "\n"))
		}
	})
	// Recording on past the lost range.
	t.Run("verify", func(t *testing.T) {
		if probs := lostBeforeRotation(t, 1200, 12); len(probs) > 0 {
			t.Fatalf("after one power loss during a rotation (sync: interval), with no tampering:\n%s", strings.Join(probs, "\n"))
		}
	})
	// The restarted segment is sealed at exactly the lost seal's seq.
	t.Run("same name", func(t *testing.T) {
		for l := 150; l <= 450; l += 10 {
			if probs := lostBeforeRotation(t, l, 12); len(probs) > 0 && strings.Contains(strings.Join(probs, " "), "exists") {
				t.Fatalf("statement text %d bytes: after one power loss during a rotation (sync: interval), with no tampering:\n%s", l, strings.Join(probs, "\n"))
			}
		}
	})
}

func lostBeforeRotation(t *testing.T, textLen, n int) []string {
	t.Helper()
	cfg := FilesConfig{Dir: t.TempDir(), SegmentSize: 4 << 10, Log: quietLog()}
	st, err := OpenFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := openRecorder(t, st, noCheckpoints)
	ctx := context.Background()
	// Small records filling most of seg-1 (no rotation yet).
	for i := 1; ; i++ {
		if err := r.Append(ctx, TypeStatement, "s", Statement{N: i, Text: "select 1"}); err != nil {
			t.Fatal(err)
		}
		if st.dataLen() > 3<<10 {
			break
		}
	}
	killStore(st)
	o := segName(1)
	ls := segmentLines(t, cfg.Dir, o)
	last, err := ParseRecord([]byte(ls[len(ls)-1]))
	if err != nil {
		t.Fatal(err)
	}
	S := last.Seq
	const K = 2
	// The power loss: the new segment seg-(S+2) exists (created and its
	// directory entry synced first), preallocated; seg-1 kept only its
	// records up to K (its later pages read as the preallocated zeros).
	writeSegment(t, cfg.Dir, o, ls[:K])
	if err := os.Truncate(filepath.Join(cfg.Dir, o), cfg.SegmentSize); err != nil {
		t.Fatal(err)
	}
	plantEmptySegment(t, cfg, S+2)

	// The restarted daemon records other statements than the lost ones.
	st2, err := OpenFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Open(Config{Store: st2, Key: testKey, Host: "host-a", Log: quietLog()})
	if err != nil {
		t.Fatalf("start after the power loss: %v", err)
	}
	var appendErr error
	for i := 1; i <= n; i++ {
		if err := r2.Append(ctx, TypeStatement, "s2", Statement{N: i, Text: strings.Repeat("b", textLen)}); err != nil && appendErr == nil {
			appendErr = err
		}
	}
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, sg := range segmentList(t, cfg.Dir) {
		names = append(names, sg.name)
	}
	t.Logf("text %d: lost %d..%d; segments now %v", textLen, K+1, S, names)
	var problems []string
	if appendErr != nil {
		problems = append(problems, fmt.Sprintf("statements refused after the restart: %v", appendErr))
	}
	if _, err := verifyDir(t, cfg.Dir, 0); err != nil {
		problems = append(problems, fmt.Sprintf("verify: %v", err))
	}
	if err := restart(t, cfg); err != nil {
		problems = append(problems, fmt.Sprintf("next start: %v", err))
	}
	return problems
}
