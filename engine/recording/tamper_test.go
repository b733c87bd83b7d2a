package recording

// Manipulations by someone who can write the store (the files, or rows of
// the shared table) but does not hold the signing key, beyond the store
// suite's edits: each is either caught by Verify, refused by the daemon's
// next start, or reported as records signed only as found.

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/interlockhq/interlock/test/harness"
)

// tamperChain writes a files store with 4 KiB segments (several
// rotations) and closes it cleanly: final checkpoint, head covers all.
func tamperChain(t *testing.T, segmentSize int64, sessions, stmts int) FilesConfig {
	t.Helper()
	cfg := FilesConfig{Dir: t.TempDir(), SegmentSize: segmentSize, Log: quietLog()}
	st, err := OpenFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := openRecorder(t, st, nil)
	writeSessions(t, r, sessions, stmts)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func verifyDir(t *testing.T, dir string, from uint64) (*VerifyReport, error) {
	t.Helper()
	ro, err := OpenFilesReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	return Verify(context.Background(), ro, VerifyOptions{PublicKey: testPub(), From: from})
}

func segmentsOf(t *testing.T, dir string) []segment {
	t.Helper()
	ro, err := OpenFilesReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ro.segs) < 3 {
		t.Fatalf("want ≥ 3 segments, got %d", len(ro.segs))
	}
	return ro.segs
}

func segmentLines(t *testing.T, dir, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSuffix(strings.TrimRight(string(b), "\x00"), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func writeSegment(t *testing.T, dir, name string, ls []string) {
	t.Helper()
	data := ""
	if len(ls) > 0 {
		data = strings.Join(ls, "\n") + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// restart opens the store as the daemon does at its next start, records a
// little and stops cleanly; it returns Open's error.
func restart(t *testing.T, cfg FilesConfig) error {
	t.Helper()
	st, err := OpenFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(Config{Store: st, Key: testKey, Host: "host-a", Log: quietLog()})
	if err != nil {
		st.Close()
		return err
	}
	writeSessions(t, r, 1, 1)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return nil
}

// Records deleted from the front while the daemon is down: the next start
// must not take the first file name for retention and sign it.
func TestFrontDeletionRefusedAtStart(t *testing.T) {
	for _, tc := range []struct {
		name   string
		delete func(t *testing.T, dir string, segs []segment)
	}{
		{"first segment removed", func(t *testing.T, dir string, segs []segment) {
			os.Remove(filepath.Join(dir, segs[0].name))
		}},
		{"first records cut, segment renamed", func(t *testing.T, dir string, segs []segment) {
			ls := segmentLines(t, dir, segs[0].name)
			os.Remove(filepath.Join(dir, segs[0].name))
			writeSegment(t, dir, segName(6), ls[5:])
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tamperChain(t, 4<<10, 4, 8)
			tc.delete(t, cfg.Dir, segmentsOf(t, cfg.Dir))
			if _, err := verifyDir(t, cfg.Dir, 0); !IsBadRecord(err) {
				t.Fatalf("verify after deleting the first records: %v", err)
			}
			err := restart(t, cfg)
			if err == nil || !strings.Contains(err.Error(), "were deleted") {
				t.Fatalf("the daemon started over a chain whose first records were deleted: %v", err)
			}
			if _, err := verifyDir(t, cfg.Dir, 0); !IsBadRecord(err) {
				t.Fatalf("verify after the refused start: %v", err)
			}
		})
	}
}

// Without head.json a truncated tail would pass: a chain that has signed
// checkpoints but no head fails verification, and the daemon refuses it.
func TestHeadRemovedIsDetected(t *testing.T) {
	cfg := tamperChain(t, 4<<10, 4, 8)
	segs := segmentsOf(t, cfg.Dir)
	last := segs[len(segs)-1].name
	ls := segmentLines(t, cfg.Dir, last)
	writeSegment(t, cfg.Dir, last, ls[:len(ls)-3]) // the final checkpoint and two records
	if err := os.Remove(filepath.Join(cfg.Dir, headFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyDir(t, cfg.Dir, 0); !IsBadRecord(err) || !strings.Contains(err.Error(), "no signed head") {
		t.Errorf("verify without head.json: %v", err)
	}
	if err := restart(t, cfg); err == nil || !strings.Contains(err.Error(), "no signed head") {
		t.Errorf("the daemon continued a chain with checkpoints but no head: %v", err)
	}

	// A chain gets its head (for seq 0) before its first record, so a
	// daemon stopped between its first checkpoint and that checkpoint's
	// head still leaves one: a missing head is always a removed one.
	one := FilesConfig{Dir: t.TempDir(), Log: quietLog()}
	st1, _ := OpenFiles(one)
	r1 := openRecorder(t, st1, func(c *Config) { c.CheckpointInterval, c.CheckpointEvery = time.Hour, 1<<20 })
	if _, err := os.Stat(filepath.Join(one.Dir, headFile)); err != nil {
		t.Fatalf("a new chain has no head before its first record: %v", err)
	}
	writeSessions(t, r1, 1, 2)
	r1.Close()
	if err := os.Remove(filepath.Join(one.Dir, headFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyDir(t, one.Dir, 0); !IsBadRecord(err) {
		t.Errorf("one checkpoint, head removed: %v", err)
	}
	if err := restart(t, one); err == nil {
		t.Error("the daemon continued a chain whose head was removed after its first checkpoint")
	}

	// A chain that never reached its first checkpoint has no head yet,
	// legitimately.
	st, _ := OpenFiles(FilesConfig{Dir: t.TempDir(), Log: quietLog()})
	r := openRecorder(t, st, func(c *Config) { c.CheckpointInterval, c.CheckpointEvery = time.Hour, 1<<20 })
	writeSessions(t, r, 1, 2)
	if _, err := Verify(context.Background(), st, VerifyOptions{PublicKey: testPub()}); err != nil {
		t.Errorf("a chain before its first checkpoint: %v", err)
	}
	r.Close()
}

// A head carries its own signature: one rebuilt from a checkpoint in the
// chain (whose signature earlier heads reused) does not verify, so a tail
// cut after that checkpoint cannot be covered by it.
func TestHeadRebuiltFromCheckpointRejected(t *testing.T) {
	cfg := tamperChain(t, 4<<10, 4, 8)
	segs := segmentsOf(t, cfg.Dir)
	ls := segmentLines(t, cfg.Dir, segs[0].name)
	cpRec, err := ParseRecord([]byte(ls[len(ls)-1]))
	if err != nil || cpRec.Type != TypeCheckpoint {
		t.Fatalf("the first segment does not end with its sealing checkpoint: %v", err)
	}
	var c Checkpoint
	if err := cpRec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	for _, sg := range segs[1:] {
		os.Remove(filepath.Join(cfg.Dir, sg.name))
	}
	h := Head{Host: cpRec.Host, Seq: c.Seq, Hash: c.Hash, FirstSeq: c.FirstSeq, Time: time.Now(), Key: c.Key, Sig: c.Sig}
	b, _ := json.Marshal(h)
	if err := os.WriteFile(filepath.Join(cfg.Dir, headFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyDir(t, cfg.Dir, 0); !IsBadRecord(err) || !strings.Contains(err.Error(), "signed head") {
		t.Fatalf("tail deleted, head rebuilt from an in-chain checkpoint: %v", err)
	}

	// A head signed as earlier versions signed them (with the
	// signature of a first-version checkpoint) is named as such.
	h.Sig = sign(testKey, "host-a", c.Seq, c.Hash, c.FirstSeq, 0, time.Unix(0, 0)).Sig
	b, _ = json.Marshal(h)
	os.WriteFile(filepath.Join(cfg.Dir, headFile), b, 0o600)
	if _, err := verifyDir(t, cfg.Dir, 0); !IsBadRecord(err) || !strings.Contains(err.Error(), "earlier versions") {
		t.Fatalf("a legacy head: %v", err)
	}
}

// verify --from skips only what precedes the start: a record with an old
// seq appended later is out of order, not skipped.
func TestVerifyFromChecksLaterOldSeqs(t *testing.T) {
	cfg := tamperChain(t, 4<<10, 4, 8)
	segs := segmentsOf(t, cfg.Dir)
	victim, err := ParseRecord([]byte(segmentLines(t, cfg.Dir, segs[0].name)[0]))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(Statement{N: 99, Text: "drop table audit_trail", Redaction: RedactNone, Verdict: "allow", Forwarded: true})
	fake := &Record{V: Version, Seq: 2, Time: victim.Time, Host: victim.Host, Type: TypeStatement, Session: victim.Session, Prev: "x", Data: data}
	fake.encode()
	last := segs[len(segs)-1].name
	writeSegment(t, cfg.Dir, last, append(segmentLines(t, cfg.Dir, last), string(fake.Raw)))
	if _, err := verifyDir(t, cfg.Dir, segs[1].first); !IsBadRecord(err) {
		t.Fatalf("verify --from %d with an old seq appended at the end: %v", segs[1].first, err)
	}
}

// Segment names place segments in the chain; a renamed one is reported.
func TestRenamedSegmentDetected(t *testing.T) {
	cfg := tamperChain(t, 4<<10, 4, 8)
	segs := segmentsOf(t, cfg.Dir)
	if err := os.Rename(filepath.Join(cfg.Dir, segs[2].name), filepath.Join(cfg.Dir, segName(segs[1].first+1))); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyDir(t, cfg.Dir, 0); !IsBadRecord(err) || !strings.Contains(err.Error(), "renamed") {
		t.Fatalf("verify with a renamed segment: %v", err)
	}
}

// The report names the host whose chain a files store holds, so that
// another host's chain signed with the same key is not taken for this
// one's; records of two hosts in one chain are bad.
func TestFilesVerifyNamesHost(t *testing.T) {
	dir := t.TempDir()
	st, _ := OpenFiles(FilesConfig{Dir: dir, SegmentSize: 4 << 10, Log: quietLog()})
	r := openRecorder(t, st, func(c *Config) { c.Host = "host-b" })
	writeSessions(t, r, 2, 4)
	r.Close()
	rep, err := verifyDir(t, dir, 0)
	if err != nil || rep.Host != "host-b" {
		t.Fatalf("verify: host %q, %v; want host-b", rep.Host, err)
	}
	ro, _ := OpenFilesReadOnly(dir)
	if _, err := Verify(context.Background(), ro, VerifyOptions{Host: "host-a", PublicKey: testPub()}); !IsBadRecord(err) {
		t.Fatalf("host-b's chain verified as host-a's: %v", err)
	}
}

// Records the daemon finds after the last checkpoint at its start were not
// written by it: its first checkpoint signs them as adopted, and Verify
// reports them, whether a crash left them or someone wrote them.
func TestAdoptedTailReported(t *testing.T) {
	t.Run("crash tail rewritten", func(t *testing.T) {
		cfg := FilesConfig{Dir: t.TempDir(), Log: quietLog()}
		st, err := OpenFiles(cfg)
		if err != nil {
			t.Fatal(err)
		}
		r := openRecorder(t, st, func(c *Config) { c.CheckpointInterval, c.CheckpointEvery = time.Hour, 1<<20 })
		writeSessions(t, r, 1, 6)
		// kill -9: the writer is idle, the store goes without a close.
		time.Sleep(20 * time.Millisecond)
		st.mu.Lock()
		st.cur.Close()
		st.cur = nil
		st.mu.Unlock()
		name := segName(1)
		var tl []line
		for _, l := range segmentLines(t, cfg.Dir, name) {
			tl = append(tl, line{slot: name, raw: l})
		}
		forge(t, tl, 2, len(tl))
		out := make([]string, len(tl))
		for i := range tl {
			out[i] = tl[i].raw
		}
		writeSegment(t, cfg.Dir, name, out)
		if err := restart(t, cfg); err != nil {
			t.Fatal(err)
		}
		rep, err := verifyDir(t, cfg.Dir, 0)
		if err != nil {
			t.Fatal(err)
		}
		if want := [][2]uint64{{1, uint64(len(tl))}}; len(rep.Unwitnessed) != 1 || rep.Unwitnessed[0] != want[0] {
			t.Fatalf("unwitnessed %v, want %v", rep.Unwitnessed, want)
		}
	})
	t.Run("appended after a clean stop", func(t *testing.T) {
		cfg := tamperChain(t, 1<<20, 2, 3)
		name := segName(1)
		ls := segmentLines(t, cfg.Dir, name)
		last, _ := ParseRecord([]byte(ls[len(ls)-1]))
		first, _ := ParseRecord([]byte(ls[0]))
		data, _ := json.Marshal(Statement{N: 4, Text: "grant all on everything to mallory", Redaction: RedactNone, Verdict: "allow", Forwarded: true})
		fake := &Record{V: Version, Seq: last.Seq + 1, Time: last.Time, Host: last.Host, Type: TypeStatement, Session: first.Session, Prev: last.Hash, Data: data}
		fake.encode()
		writeSegment(t, cfg.Dir, name, append(ls, string(fake.Raw)))
		if err := restart(t, cfg); err != nil {
			t.Fatal(err)
		}
		rep, err := verifyDir(t, cfg.Dir, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Unwitnessed) != 1 || rep.Unwitnessed[0] != [2]uint64{fake.Seq, fake.Seq} {
			t.Fatalf("unwitnessed %v, want [[%d %d]]", rep.Unwitnessed, fake.Seq, fake.Seq)
		}
		// A clean stop and start adopts nothing.
		if err := restart(t, cfg); err != nil {
			t.Fatal(err)
		}
		if rep, err := verifyDir(t, cfg.Dir, 0); err != nil || len(rep.Unwitnessed) != 1 {
			t.Fatalf("after a clean restart: unwitnessed %v, %v", rep.Unwitnessed, err)
		}
	})
}

// The shared store: a head row filed under a higher seq than its JSON
// says, or a head written in this host's place, is caught; a record
// another fleet member appends to this host's chain is reported as
// adopted after the host's restart.
func TestPostgresHeadsAndForeignRecords(t *testing.T) {
	harness.RequirePrivileged(t)
	pg := harness.StartPostgres(t)
	ctx := context.Background()
	dsn := pg.CreateDatabase(t, "tamper")
	st, err := OpenPostgres(ctx, PostgresConfig{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := openRecorder(t, st, func(c *Config) { c.CheckpointEvery = 10 })
	ids := writeSessions(t, r, 3, 6)
	r.Close()
	mustVerify(t, st)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	// Another fleet member (INSERT and SELECT, no key of host-a's)
	// appends to host-a's chain while it is down.
	last, err := st.Last(ctx, "host-a")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(Statement{N: 4, Text: "grant all on everything to mallory", Redaction: RedactNone, Verdict: "allow", Forwarded: true})
	fake := &Record{V: Version, Seq: last.Seq + 1, Time: time.Now(), Host: "host-a", Type: TypeStatement, Session: ids[0], Prev: last.Hash, Data: data}
	fake.encode()
	if _, err := conn.Exec(ctx, `INSERT INTO interlock_records (host, seq, time, type, session, record) VALUES ($1, $2, $3, $4, $5, $6)`,
		fake.Host, int64(fake.Seq), fake.Time, string(fake.Type), fake.Session, string(fake.Raw)); err != nil {
		t.Fatal(err)
	}
	r = openRecorder(t, st, nil)
	writeSessions(t, r, 1, 1)
	r.Close()
	rep := mustVerify(t, st)
	if len(rep.Unwitnessed) != 1 || rep.Unwitnessed[0] != [2]uint64{fake.Seq, fake.Seq} {
		t.Fatalf("a record another host appended: unwitnessed %v, want [[%d %d]]", rep.Unwitnessed, fake.Seq, fake.Seq)
	}

	// A head filed under a far higher seq than the one it names.
	var raw string
	if err := conn.QueryRow(ctx, `SELECT head FROM interlock_heads WHERE host = 'host-a' ORDER BY seq LIMIT 1`).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO interlock_heads (host, seq, head) VALUES ('host-a', 4611686018427387904, $1)`, raw); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(ctx, st, VerifyOptions{Host: "host-a", PublicKey: testPub()}); err == nil || !strings.Contains(err.Error(), "tampered") {
		t.Fatalf("verify with a head row filed under another seq: %v", err)
	}
	if _, err := Open(Config{Store: st, Key: testKey, Host: "host-a", Log: quietLog()}); err == nil {
		t.Fatal("the daemon started with a tampered heads table")
	}
	if _, err := conn.Exec(ctx, `DELETE FROM interlock_heads WHERE seq = 4611686018427387904`); err != nil {
		t.Fatal(err)
	}

	// A head put in host-a's place at the seq its next checkpoint takes.
	last, _ = st.Last(ctx, "host-a")
	squat, _ := json.Marshal(Head{Host: "host-a", Seq: last.Seq + 2, Hash: "x"})
	if _, err := conn.Exec(ctx, `INSERT INTO interlock_heads (host, seq, head) VALUES ('host-a', $1, $2)`, int64(last.Seq+2), string(squat)); err != nil {
		t.Fatal(err)
	}
	h := &Head{Host: "host-a", Seq: last.Seq + 2, Hash: "y", FirstSeq: 1, Time: time.Now()}
	signHead(testKey, h)
	if err := st.PutHead(ctx, h); err == nil || !strings.Contains(err.Error(), "different head") {
		t.Fatalf("PutHead over someone else's head row: %v", err)
	}
}

// lostAnswer stores a batch but reports an error, once: a commit whose
// answer did not arrive.
type lostAnswer struct {
	Store
	armed bool
}

func (l *lostAnswer) Append(ctx context.Context, recs []*Record) error {
	err := l.Store.Append(ctx, recs)
	if err == nil && l.armed {
		l.armed = false
		return errors.New("timeout: the answer to the commit was lost")
	}
	return err
}

// After such an append its statement is refused, but the chain continues
// after the stored batch instead of colliding with it for good.
func TestAppendStoredDespiteError(t *testing.T) {
	st, err := OpenFiles(FilesConfig{Dir: t.TempDir(), Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	la := &lostAnswer{Store: st}
	r := openRecorder(t, la, nil)
	ctx := context.Background()
	if err := r.Append(ctx, TypeStatement, "s1", Statement{N: 1, Text: "select 1"}); err != nil {
		t.Fatal(err)
	}
	la.armed = true
	if err := r.Append(ctx, TypeStatement, "s1", Statement{N: 2, Text: "select 2"}); err == nil {
		t.Fatal("an append that reported an error was taken as written")
	}
	for n := 3; n <= 5; n++ {
		if err := r.Append(ctx, TypeStatement, "s1", Statement{N: n, Text: "select 3"}); err != nil {
			t.Fatalf("append %d after a stored-but-failed one: %v", n, err)
		}
	}
	r.Close()
	if rep := mustVerify(t, st); rep.Records < 5 {
		t.Fatalf("verified %d records, want ≥ 5", rep.Records)
	}
}
