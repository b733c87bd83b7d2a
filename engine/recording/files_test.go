package recording

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var filesKind = storeKind{name: "files", open: func(t *testing.T) (Store, func() Store, tamperer) {
	dir := t.TempDir()
	cfg := FilesConfig{Dir: dir, SegmentSize: 4 << 10, Log: quietLog()}
	open := func() Store {
		st, err := OpenFiles(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	return open(), open, filesTamperer{dir}
}, openDeferred: func(t *testing.T) (Store, func() Store) {
	dir := t.TempDir()
	st, err := OpenFiles(FilesConfig{Dir: dir, SegmentSize: 4 << 10, DeferSync: true, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	return st, func() Store {
		ro, err := OpenFilesReadOnly(dir)
		if err != nil {
			t.Fatal(err)
		}
		return ro
	}
}}

type filesTamperer struct{ dir string }

func (f filesTamperer) segments() bool { return true }

func (f filesTamperer) lines(t *testing.T) []line {
	t.Helper()
	st, err := OpenFilesReadOnly(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []line
	for _, sg := range st.segs {
		st.scanSegment(sg.name, func(l []byte, _ int) error {
			out = append(out, line{slot: sg.name, raw: string(l)})
			return nil
		})
	}
	return out
}

func (f filesTamperer) write(t *testing.T, ls []line) {
	t.Helper()
	bySeg := map[string][]string{}
	for _, l := range ls {
		bySeg[l.slot] = append(bySeg[l.slot], l.raw+"\n")
	}
	ents, _ := os.ReadDir(f.dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), segPrefix) {
			if err := os.WriteFile(filepath.Join(f.dir, e.Name()), []byte(strings.Join(bySeg[e.Name()], "")), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestFilesStore(t *testing.T) {
	runStoreSuite(t, filesKind)
	runSyncIntervalSuite(t, filesKind)
}

// TestFilesRotationAndRetention: segments rotate by size, each sealed
// segment ends with a signed checkpoint, retention removes the oldest ones
// after announcing the new first record, and the rest still verifies;
// removing one more by hand does not.
// With DeferSync (recording.sync: interval) too.
func TestFilesRotationAndRetention(t *testing.T) {
	for _, deferSync := range []bool{false, true} {
		t.Run(map[bool]string{false: "sync always", true: "sync interval"}[deferSync], func(t *testing.T) {
			testFilesRotationAndRetention(t, deferSync)
		})
	}
}

func testFilesRotationAndRetention(t *testing.T, deferSync bool) {
	dir := t.TempDir()
	st, err := OpenFiles(FilesConfig{Dir: dir, SegmentSize: 4 << 10, RetentionSize: 16 << 10, DeferSync: deferSync, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	r := openRecorder(t, st, func(c *Config) {
		if deferSync {
			c.SyncInterval = 10 * time.Millisecond
		}
	})
	writeSessions(t, r, 10, 8)
	r.Close()
	ro, _ := OpenFilesReadOnly(dir)
	if len(ro.segs) < 3 {
		t.Fatalf("%d segments", len(ro.segs))
	}
	var total int64
	for _, sg := range ro.segs {
		fi, _ := os.Stat(filepath.Join(dir, sg.name))
		total += fi.Size()
		var last []byte
		ro.scanSegment(sg.name, func(l []byte, _ int) error { last = append(last[:0], l...); return nil })
		if rec, _ := ParseRecord(last); rec == nil || rec.Type != TypeCheckpoint {
			t.Errorf("segment %s does not end with a checkpoint", sg.name)
		}
	}
	if total > 16<<10+8<<10 || ro.segs[0].first == 1 {
		t.Errorf("retention kept %d bytes from seq %d", total, ro.segs[0].first)
	}
	rep := mustVerify(t, ro)
	if rep.Head.FirstSeq != ro.segs[0].first || rep.First != ro.segs[0].first {
		t.Errorf("head first_seq %d, chain from %d, oldest segment from %d", rep.Head.FirstSeq, rep.First, ro.segs[0].first)
	}
	// Without retention's checkpoint, a removed segment is a deletion.
	os.Remove(filepath.Join(dir, ro.segs[0].name))
	_, err = Verify(context.Background(), ro, VerifyOptions{Host: "host-a", PublicKey: testPub()})
	if !IsBadRecord(err) || !strings.Contains(err.Error(), "deleted") {
		t.Fatalf("verify after removing the oldest segment: %v", err)
	}
	// --from skips what is gone.
	if _, err := Verify(context.Background(), ro, VerifyOptions{Host: "host-a", PublicKey: testPub(), From: ro.segs[1].first + 2}); err != nil {
		t.Fatalf("verify --from: %v", err)
	}
}

// TestFilesTornTail: a crash in the middle of a write leaves a partial
// last line; reopening cuts it and the chain goes on.
func TestFilesTornTail(t *testing.T) {
	dir := t.TempDir()
	cfg := FilesConfig{Dir: dir, Log: quietLog()}
	st, _ := OpenFiles(cfg)
	r := openRecorder(t, st, func(c *Config) { c.CheckpointInterval = time.Hour })
	writeSessions(t, r, 1, 3)
	// Simulate kill -9: no Close; append half a record by hand.
	seg := filepath.Join(dir, segName(1))
	fs := st
	fs.mu.Lock()
	fs.cur.WriteAt([]byte(`{"v":1,"seq":99,"ti`), fs.off)
	fs.mu.Unlock()
	st2, err := OpenFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r2 := openRecorder(t, st2, nil)
	writeSessions(t, r2, 1, 2)
	r2.Close()
	b, _ := os.ReadFile(seg)
	if strings.Contains(string(b), `"seq":99,"ti`) {
		t.Error("torn record still there")
	}
	mustVerify(t, st2)
}

// TestFilesRetentionByAge: sealed segments whose sealing checkpoint is
// older than RetentionAge go at the next retention run; the chain still
// verifies.
func TestFilesRetentionByAge(t *testing.T) {
	dir := t.TempDir()
	const age = 300 * time.Millisecond
	cfg := FilesConfig{Dir: dir, SegmentSize: 4 << 10, RetentionAge: age, Log: quietLog()}
	st, _ := OpenFiles(cfg)
	r := openRecorder(t, st, nil)
	writeSessions(t, r, 3, 8)
	r.Close()
	ro, _ := OpenFilesReadOnly(dir)
	old := ro.segs[:len(ro.segs)-1]
	if len(old) < 2 {
		t.Fatalf("want ≥ 2 sealed segments, got %d", len(old))
	}
	time.Sleep(age + 100*time.Millisecond)
	st, _ = OpenFiles(cfg) // retention runs at start
	r = openRecorder(t, st, nil)
	writeSessions(t, r, 1, 2)
	r.Close()
	for _, sg := range old {
		if _, err := os.Stat(filepath.Join(dir, sg.name)); err == nil {
			t.Errorf("%s outlived retention_age", sg.name)
		}
	}
	ro, _ = OpenFilesReadOnly(dir)
	if rep := mustVerify(t, ro); rep.First != ro.segs[0].first || rep.Head.FirstSeq != rep.First {
		t.Errorf("after retention: chain from %d, head first_seq %d", rep.First, rep.Head.FirstSeq)
	}
}

// TestFilesRetentionIgnoresFileMetadata: a segment's age and size come
// from its records, not from the file: backdating segments or padding
// them with NULs (which readers skip) makes retention remove nothing.
func TestFilesRetentionIgnoresFileMetadata(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    FilesConfig
		tamper func(t *testing.T, path string)
	}{
		{"backdated", FilesConfig{RetentionAge: 30 * 24 * time.Hour}, func(t *testing.T, path string) {
			past := time.Now().Add(-365 * 24 * time.Hour)
			if err := os.Chtimes(path, past, past); err != nil {
				t.Fatal(err)
			}
		}},
		{"padded", FilesConfig{RetentionSize: 1 << 20}, func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write(make([]byte, 2<<20)); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Dir, cfg.SegmentSize, cfg.Log = t.TempDir(), 4<<10, quietLog()
			st, err := OpenFiles(cfg)
			if err != nil {
				t.Fatal(err)
			}
			r := openRecorder(t, st, nil)
			writeSessions(t, r, 3, 8)
			r.Close()
			ro, _ := OpenFilesReadOnly(cfg.Dir)
			segs := ro.segs
			for _, sg := range segs[:len(segs)-1] {
				tc.tamper(t, filepath.Join(cfg.Dir, sg.name))
			}
			st, err = OpenFiles(cfg) // retention runs at start
			if err != nil {
				t.Fatal(err)
			}
			r = openRecorder(t, st, nil)
			writeSessions(t, r, 1, 1)
			r.Close()
			if _, err := os.Stat(filepath.Join(cfg.Dir, segs[0].name)); err != nil {
				t.Fatalf("retention removed %s, written just now: %v", segs[0].name, err)
			}
		})
	}
}

// TestFilesRecordsAfterALostPage: a power loss with recording.sync:
// interval can keep a later page of a segment and lose an earlier one.
// Reopening cuts the segment after its last complete record, so that the
// records beyond the lost page are gone for good (new records are written
// over the hole, and a second crash must not bring the old ones back
// behind them), and the chain goes on and verifies.
func TestFilesRecordsAfterALostPage(t *testing.T) {
	dir := t.TempDir()
	cfg := FilesConfig{Dir: dir, DeferSync: true, Log: quietLog()}
	st, err := OpenFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := openRecorder(t, st, func(c *Config) { c.SyncInterval, c.CheckpointInterval = time.Hour, time.Hour })
	writeSessions(t, r, 2, 6)
	// The power loss: no Close; two records in the middle read as zeros.
	st.mu.Lock()
	b := make([]byte, st.off)
	st.cur.ReadAt(b, 0)
	st.mu.Unlock()
	lines := strings.SplitAfter(string(b), "\n")
	if len(lines) < 12 {
		t.Fatalf("%d lines", len(lines))
	}
	at := int64(len(strings.Join(lines[:8], "")))
	lost := len(lines[8]) + len(lines[9])
	seg := filepath.Join(dir, segName(1))
	f, err := os.OpenFile(seg, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, lost), at)
	f.Close()
	kept := strings.Join(lines[10:], "")

	st2, err := OpenFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(seg); strings.Contains(string(b), kept) {
		t.Fatal("the records after the lost page are still in the segment")
	}
	last, _ := st2.Last(context.Background(), "")
	if last == nil || last.Seq != 8 {
		t.Fatalf("last record after reopening: %+v", last)
	}
	r2 := openRecorder(t, st2, func(c *Config) { c.SyncInterval = time.Hour })
	writeSessions(t, r2, 1, 3)
	r2.Close()
	ro, _ := OpenFilesReadOnly(dir)
	if rep := mustVerify(t, ro); rep.Last < 8+8 {
		t.Errorf("chain after reopening: %+v", rep)
	}
}
