package recording

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Files is the default store: segment files seg-<first seq>.log under a
// directory (state_dir/recordings), one record a line, and head.json.
//
// Syncs are what a statement waits for, so the layout keeps them cheap: a
// new segment is allocated at its full size up front (fallocate: the file
// size never changes on append, and a full disk is found at rotation, not
// mid-segment), and the writer zeroes it a chunk (zeroChunk) ahead of its
// appends, so that an append overwrites blocks that are already written
// and its sync (O_DSYNC) flushes data only, with no journal commit: on
// ext4 about a third of the latency of a sync after an append that grows
// the file. The unused tail reads as NUL bytes, where readers stop; a
// sealed segment is cut to its data. A crash can leave a torn last line
// (written, never synced, never acknowledged), and a power loss can keep
// later pages of the file but not an earlier one: opening for writing cuts
// the segment after its last complete line.
//
// With DeferSync (recording.sync: interval) segments are opened without
// O_DSYNC: an append returns once its records are in the page cache, where
// they survive a crash of the daemon but not of the host, and Sync
// (fdatasync) makes them durable.
type Files struct {
	cfg FilesConfig
	ro  bool

	mu        sync.Mutex
	cur       *os.File
	curName   string
	curFirst  uint64
	off       int64 // data length of the current segment
	allocated int64
	zeroed    int64 // the current segment is written (data or zeros) up to here
	broken    error // a failed append could not be rolled back
	segs      []segment
}

// FilesConfig configures a Files store.
type FilesConfig struct {
	Dir string
	// SegmentSize is when a segment is sealed and a new one started.
	SegmentSize int64
	// RetentionAge removes sealed segments last written longer ago (0:
	// keep); RetentionSize removes the oldest sealed segments while all
	// segments together are larger (0: no limit).
	RetentionAge  time.Duration
	RetentionSize int64
	// DeferSync opens segments without O_DSYNC: Append writes, Sync makes
	// durable (for recording.Config.SyncInterval; a Recorder without it
	// refuses such a store).
	DeferSync bool
	Log       *slog.Logger

	noSync bool // benchmarks of the append path only
}

type segment struct {
	name  string
	first uint64
	// Of a sealed segment, found once (sealInfo): whether its own sealing
	// checkpoint verifies, and its signed time (zero: unknown, a
	// first-version checkpoint).
	sealKnown, sealOK bool
	sealSize          int64 // bytes it counts for retention_size
	sealTime          time.Time
}

const (
	segPrefix = "seg-"
	segSuffix = ".log"
	headFile  = "head.json"
	// DefaultSegmentSize is the default FilesConfig.SegmentSize.
	DefaultSegmentSize = 64 << 20
)

func segName(first uint64) string { return fmt.Sprintf("%s%020d%s", segPrefix, first, segSuffix) }

// OpenFiles opens (creating the directory, 0700) the store for the daemon's
// writer: it cuts a torn last line and positions the writer after the last
// record.
func OpenFiles(cfg FilesConfig) (*Files, error) {
	if cfg.SegmentSize <= 0 {
		cfg.SegmentSize = DefaultSegmentSize
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("recording: create %s: %w", cfg.Dir, err)
	}
	s := &Files{cfg: cfg}
	if err := s.list(); err != nil {
		return nil, err
	}
	if err := s.openTail(); err != nil {
		return nil, err
	}
	return s, nil
}

// OpenFilesReadOnly opens the store for reading (the CLI, while the daemon
// runs): it changes nothing.
func OpenFilesReadOnly(dir string) (*Files, error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("recording: nothing recorded yet: %s does not exist (the daemon creates it at its first start)", dir)
	} else if err != nil {
		return nil, fmt.Errorf("recording: open %s: %w", dir, err)
	}
	s := &Files{cfg: FilesConfig{Dir: dir}, ro: true}
	return s, s.list()
}

func (s *Files) list() error {
	ents, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("recording: list %s: %w", s.cfg.Dir, err)
	}
	s.segs = s.segs[:0]
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, segPrefix) || !strings.HasSuffix(n, segSuffix) {
			continue
		}
		first, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(n, segPrefix), segSuffix), 10, 64)
		if err != nil || n != segName(first) {
			// Only the names the writer gives: another spelling of a
			// number (more leading zeros) would slip a file in beside
			// the real segment of that seq.
			continue
		}
		s.segs = append(s.segs, segment{name: n, first: first})
	}
	sort.Slice(s.segs, func(i, j int) bool { return s.segs[i].first < s.segs[j].first })
	return nil
}

// openTail opens the last segment for appending (or creates the first),
// finds the end of its data and cuts a torn last line.
func (s *Files) openTail() error {
	if len(s.segs) == 0 {
		return s.startSegment(1)
	}
	last := s.segs[len(s.segs)-1]
	path := filepath.Join(s.cfg.Dir, last.name)
	f, err := os.OpenFile(path, os.O_RDWR|s.syncFlag(), 0)
	if err != nil {
		return fmt.Errorf("recording: open %s: %w", path, err)
	}
	end, torn, err := dataEnd(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("recording: read %s: %w", path, err)
	}
	if end == 0 && len(s.segs) > 1 {
		// A segment created by a rotation that a crash interrupted before
		// anything reached it: the chain goes on in the segment before
		// it, which is sealed later as usual (otherwise it would be
		// named past its first record and stop retention for good).
		f.Close()
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("recording: remove the empty segment %s: %w", path, err)
		}
		if err := syncDir(s.cfg.Dir); err != nil {
			return fmt.Errorf("recording: sync %s: %w", s.cfg.Dir, err)
		}
		s.cfg.Log.Warn("recording: removed an empty segment a crash during rotation left; continuing the one before it", "segment", last.name)
		s.segs = s.segs[:len(s.segs)-1]
		return s.openTail()
	}
	if torn > 0 {
		// A line written but not synced before a crash. With O_DSYNC its
		// statement was never acknowledged, so never forwarded; with
		// DeferSync it is a record lost to a power loss.
		s.cfg.Log.Warn("recording: cutting a torn last record (crash during a write)", "segment", last.name, "bytes", torn)
	}
	if st, err := f.Stat(); err == nil && st.Size() > end {
		// Cut everything after the last complete line, not only a torn
		// one: a power loss (above all with DeferSync, whose writes reach
		// the disk in no particular order) can keep a later page of
		// records after a lost one. Readers stop at the lost page's NULs,
		// but the new records written over it would otherwise run into
		// the old ones, and a second crash could keep those instead of
		// the zeros written ahead of the new ones.
		if err := f.Truncate(end); err != nil {
			f.Close()
			return fmt.Errorf("recording: cut %s after its last record: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("recording: cut %s after its last record: %w", path, err)
		}
	}
	st, _ := f.Stat()
	s.cur, s.curName, s.curFirst, s.off, s.allocated, s.zeroed = f, last.name, last.first, end, st.Size(), end
	if s.allocated < s.cfg.SegmentSize && end < s.cfg.SegmentSize {
		s.preallocate()
	}
	return nil
}

// dataEnd returns the end of f's complete lines and the length of a torn
// fragment after them (bytes before the NUL padding or EOF with no newline).
func dataEnd(f *os.File) (end, torn int64, err error) {
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, 1<<62), 256<<10)
	var off int64
	for {
		chunk, err := r.ReadSlice('\n')
		if i := bytes.IndexByte(chunk, 0); i >= 0 {
			return end, off + int64(i) - end, nil
		}
		off += int64(len(chunk))
		switch {
		case err == nil:
			end = off
		case errors.Is(err, bufio.ErrBufferFull):
		case err == io.EOF:
			return end, off - end, nil
		default:
			return 0, 0, err
		}
	}
}

func (s *Files) preallocate() {
	err := unix.Fallocate(int(s.cur.Fd()), 0, 0, s.cfg.SegmentSize)
	switch {
	case err == nil:
		s.allocated = s.cfg.SegmentSize
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, syscall.ENOSYS):
		// The filesystem cannot: appends grow the file instead.
	default:
		s.cfg.Log.Warn("recording: could not preallocate the segment; appends grow it", "segment", s.curName, "error", err)
	}
}

// startSegment creates and switches to a new, empty segment.
func (s *Files) startSegment(first uint64) error {
	f, name, alloc, err := s.createSegment(first)
	if err != nil {
		return err
	}
	s.cur, s.curName, s.curFirst, s.off, s.allocated, s.zeroed = f, name, first, 0, alloc, 0
	s.segs = append(s.segs, segment{name: name, first: first})
	return nil
}

func (s *Files) createSegment(first uint64) (*os.File, string, int64, error) {
	name := segName(first)
	path := filepath.Join(s.cfg.Dir, name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|s.syncFlag(), 0o600)
	if err != nil {
		return nil, "", 0, fmt.Errorf("recording: create segment %s: %w", path, err)
	}
	var alloc int64
	err = unix.Fallocate(int(f.Fd()), 0, 0, s.cfg.SegmentSize)
	switch {
	case err == nil:
		alloc = s.cfg.SegmentSize
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, syscall.ENOSYS):
	default:
		// ENOSPC above all: refuse now rather than fail later mid-segment.
		f.Close()
		os.Remove(path)
		return nil, "", 0, fmt.Errorf("recording: allocate segment %s: %w", path, err)
	}
	if err := syncDir(s.cfg.Dir); err != nil {
		f.Close()
		os.Remove(path)
		return nil, "", 0, fmt.Errorf("recording: sync %s: %w", s.cfg.Dir, err)
	}
	return f, name, alloc, nil
}

// Last implements Store (a Files store holds one host's chain).
func (s *Files) Last(ctx context.Context, _ string) (*Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.segs) - 1; i >= 0; i-- {
		var last []byte
		err := s.scanSegment(s.segs[i].name, func(line []byte, _ int) error {
			last = append(last[:0], line...)
			return nil
		})
		if err != nil {
			return nil, err
		}
		if last != nil {
			rec, err := ParseRecord(last)
			if err != nil {
				return nil, fmt.Errorf("recording: the last record in %s is damaged (%v); run `interlock audit verify`, and move the recordings directory (head.json included) aside to start a new chain", s.segs[i].name, err)
			}
			return rec, nil
		}
	}
	return nil, nil
}

// Append implements Store.
func (s *Files) Append(ctx context.Context, recs []*Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ro {
		return errors.New("recording: store opened read-only")
	}
	if s.broken != nil {
		return s.broken
	}
	return s.appendLocked(recs)
}

func (s *Files) appendLocked(recs []*Record) error {
	n := 0
	for _, r := range recs {
		n += len(r.Raw) + 1
	}
	buf := make([]byte, 0, n)
	for _, r := range recs {
		buf = append(append(buf, r.Raw...), '\n')
	}
	end := s.off + int64(n)
	if end > s.zeroed && !s.cfg.noSync {
		// Zero the next chunk first (in this write's sync), so that the
		// appends after it overwrite written blocks.
		// With DeferSync the appends do not wait for a sync, but the
		// zeros stay: the background fdatasync then flushes data only
		// (appends into unwritten extents would make each of them commit
		// the journal for the extent conversion, not once a chunk), and
		// the byte after the last record is always a written NUL, which
		// is what keeps readers and a restarted writer from running into
		// records a power loss kept after a lost page (see openTail).
		// The price is a chunk of zeros written once per chunk of records.
		// Within the allocation only: past it (a segment that overflows
		// before its rotation, a filesystem without fallocate) zeroing
		// would take space the disk may not have.
		z := min((end+zeroChunk)/zeroChunk*zeroChunk, s.allocated)
		if z > end {
			if _, err := s.cur.WriteAt(make([]byte, z-end), end); err != nil {
				s.rollback(err)
				return fmt.Errorf("recording: write %s: %w", s.curName, hint(err))
			}
		}
		s.zeroed = z
	}
	// With O_DSYNC, the write returns once the data is durable (with
	// DeferSync, once it is in the page cache). After a failed write or
	// sync the page cache state is unknown (the kernel may have dropped
	// the dirty pages): roll back and let the next batch try again.
	if _, err := s.cur.WriteAt(buf, s.off); err != nil {
		s.rollback(err)
		return fmt.Errorf("recording: write %s: %w", s.curName, hint(err))
	}
	s.off = end
	return nil
}

// zeroChunk is how far ahead of its appends the writer zeroes a segment.
const zeroChunk = 1 << 20

func (s *Files) syncFlag() int {
	if s.cfg.noSync || s.cfg.DeferSync {
		return 0
	}
	return syscall.O_DSYNC
}

// Sync implements syncer: fdatasync of the current segment (sealed ones
// were synced at their rotation).
func (s *Files) Sync(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ro || s.cur == nil || s.cfg.noSync {
		return nil
	}
	if s.broken != nil {
		return s.broken
	}
	if err := unix.Fdatasync(int(s.cur.Fd())); err != nil {
		s.breakOnSync(s.curName, err)
		return s.broken
	}
	return nil
}

// breakOnSync stops the store after a failed sync. Unlike a failed write,
// it cannot be rolled back or retried: records written since the last sync
// were acknowledged (their statements ran), the kernel may have dropped
// their pages after reporting the error once, and a second fdatasync would
// then succeed without them on disk. So every later append fails (its
// statement is refused) until the daemon restarts and reads the segment
// back; PostgreSQL stops for the same reason (data_sync_retry).
func (s *Files) breakOnSync(name string, err error) {
	s.broken = fmt.Errorf("recording: sync of %s failed; records written since the previous sync may be lost, and no statement is recorded until the daemon restarts: %w", name, hint(err))
	s.cfg.Log.Error(s.broken.Error())
}

func (s *Files) deferred() bool { return s.cfg.DeferSync && !s.cfg.noSync }

// rollback undoes a partial write: the region after off is zeroed (within
// the preallocation) or cut.
func (s *Files) rollback(cause error) {
	var err error
	if s.off < s.allocated {
		err = unix.Fallocate(int(s.cur.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, s.off, s.allocated-s.off)
		if err == nil {
			err = unix.Fallocate(int(s.cur.Fd()), 0, s.off, s.allocated-s.off)
			if errors.Is(err, syscall.ENOSPC) {
				err = nil // the hole reads as zeros; appends will grow it
			}
		}
	} else {
		err = s.cur.Truncate(s.off)
	}
	s.zeroed = s.off
	if err != nil {
		s.broken = fmt.Errorf("recording: segment %s is unusable after a failed write (%v) could not be rolled back: %w", s.curName, cause, err)
		s.cfg.Log.Error(s.broken.Error())
	}
}

func hint(err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("%w (the recording filesystem is full: free space or lower recording.retention_size)", err)
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("%w (the recording filesystem is read-only)", err)
	}
	return err
}

func (s *Files) needsRotation(n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.off > 0 && s.off+int64(n) > s.cfg.SegmentSize
}

func (s *Files) rotate(ctx context.Context, checkpoint *Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken != nil {
		return s.broken
	}
	if s.deferred() {
		// The records written since the last sync are made durable before
		// the next segment's file is: after a power loss, a new file must
		// never stand after records that were lost (the chain would go on
		// in it from an earlier seq than its name, and a later rotation
		// would create a file that sorts before it, or the same name).
		if err := unix.Fdatasync(int(s.cur.Fd())); err != nil {
			s.breakOnSync(s.curName, err)
			return s.broken
		}
	}
	f, name, alloc, err := s.createSegment(checkpoint.Seq + 1)
	if err != nil {
		return err
	}
	err = s.appendLocked([]*Record{checkpoint})
	if err == nil && s.deferred() {
		// Sync only ever covers the current segment: the one being
		// sealed is made durable now, before the chain moves on (and
		// before the Recorder signs a head that covers it).
		if serr := unix.Fdatasync(int(s.cur.Fd())); serr != nil {
			s.breakOnSync(s.curName, serr)
			err = s.broken
		}
	}
	if err != nil {
		f.Close()
		os.Remove(filepath.Join(s.cfg.Dir, name))
		syncDir(s.cfg.Dir)
		return err
	}
	// Sealed: cut the preallocated tail. Failures here lose nothing
	// (readers stop at the NUL padding).
	old := s.cur
	if err := old.Truncate(s.off); err == nil {
		old.Sync()
	}
	old.Close()
	s.cur, s.curName, s.curFirst, s.off, s.allocated, s.zeroed = f, name, checkpoint.Seq+1, 0, alloc, 0
	s.segs = append(s.segs, segment{name: name, first: checkpoint.Seq + 1})
	return nil
}

func (s *Files) retention(now time.Time, pub ed25519.PublicKey) ([]string, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.RetentionAge <= 0 && s.cfg.RetentionSize <= 0 {
		return nil, 0
	}
	// Only segments whose own sealing checkpoint verifies count, and
	// retention stops at the first that does not: a file someone added
	// (even all NULs under a proper name) or a segment a crash left
	// unsealed. Ages come from the seals' signed times, never from the
	// files' metadata, which whoever can write the directory can change
	// to make the daemon remove recent records and sign it; a sealed
	// segment counts at most a segment's size, so padding one gains
	// nothing.
	n := len(s.segs)
	sizes := make([]int64, n)
	// The current segment counts at most a segment's size: it may hold a
	// tail adopted at start, which nobody signed.
	total := min(s.off, s.cfg.SegmentSize)
	run := true // still in the unbroken run of sealed segments from the first
	for i := range s.segs[:n-1] {
		sg := &s.segs[i]
		s.sealInfo(sg, s.segs[i+1].first, pub)
		run = run && sg.sealOK
		if !run {
			// Nothing after a break counts: it cannot go, and copies of
			// real checkpoints in added files would otherwise add to
			// the total and make the segments before them go.
			continue
		}
		sizes[i] = min(sg.sealSize, s.cfg.SegmentSize)
		total += sizes[i]
	}
	// A first-version seal signed no time: such a segment ages with the
	// first later one whose seal did.
	ages := make([]time.Time, n)
	var next time.Time
	for i := n - 2; i >= 0; i-- {
		if s.segs[i].sealOK && !s.segs[i].sealTime.IsZero() {
			next = s.segs[i].sealTime
		}
		ages[i] = next
	}
	var victims []string
	var first uint64
	for i, sg := range s.segs[:n-1] { // never the current segment
		if !sg.sealOK {
			if s.cfg.RetentionAge > 0 && !ages[i].IsZero() && now.Sub(ages[i]) > s.cfg.RetentionAge ||
				s.cfg.RetentionSize > 0 && total > s.cfg.RetentionSize {
				s.cfg.Log.Warn("recording: retention stops at a segment whose sealing checkpoint does not verify (a crash during its rotation, or a file someone added); run `interlock audit verify`", "segment", sg.name)
			}
			break
		}
		old := s.cfg.RetentionAge > 0 && !ages[i].IsZero() && now.Sub(ages[i]) > s.cfg.RetentionAge
		big := s.cfg.RetentionSize > 0 && total > s.cfg.RetentionSize
		if !old && !big {
			break
		}
		victims = append(victims, sg.name)
		total -= sizes[i]
		first = s.segs[i+1].first
	}
	return victims, first
}

// sealInfo finds, once, the time of a sealed segment's own sealing
// checkpoint: its last record, which must be a checkpoint of the record
// before it, the last before the next segment's first seq (next), signed
// by pub, whose signed time is its record's. Anything else leaves the time
// unknown.
func (s *Files) sealInfo(sg *segment, next uint64, pub ed25519.PublicKey) {
	if sg.sealKnown {
		return
	}
	sg.sealKnown = true
	f, err := os.Open(filepath.Join(s.cfg.Dir, sg.name))
	if err != nil {
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return
	}
	// It begins with the record its name says (an added file holding a
	// copy of a real checkpoint does not).
	// (A first record may be longer than a segment: a batch of one large
	// statement starts a segment of its own.)
	line, err := bufio.NewReader(io.NewSectionReader(f, 0, min(st.Size(), max(s.cfg.SegmentSize, 16<<20)))).ReadBytes('\n')
	if err != nil || bytes.IndexByte(line, 0) >= 0 {
		return
	}
	if r0, err := ParseRecord(bytes.TrimSuffix(line, []byte("\n"))); err != nil || r0.Seq != sg.first {
		return
	}
	// Sealed segments are cut to their data; one whose cut failed ends in
	// NUL padding, which the last 64 KiB show unless it is larger.
	tailAt := st.Size() - min(st.Size(), 64<<10)
	tail := make([]byte, st.Size()-tailAt)
	if _, err := f.ReadAt(tail, tailAt); err != nil {
		return
	}
	tail = bytes.TrimRight(tail, "\x00")
	tail = bytes.TrimSuffix(tail, []byte("\n"))
	i := bytes.LastIndexByte(tail, '\n')
	if i < 0 && tailAt > 0 {
		return // the line's start is not in the window
	}
	sealAt := tailAt + int64(i) + 1
	rec, err := ParseRecord(tail[i+1:])
	if err != nil || rec.Type != TypeCheckpoint || rec.Seq+1 != next {
		return
	}
	var c Checkpoint
	if rec.Decode(&c) != nil || c.Seq+1 != rec.Seq || c.Hash != rec.Prev || !c.verify(pub, rec.Host) {
		return
	}
	switch {
	case c.TimeNS == 0 && c.Sealed == 0:
		// An earlier version's checkpoint: it signed neither a time nor
		// the segment's length, and cannot be told from an interior one
		// (a segment split at them gives pieces that all pass). The
		// segment may go, counting nothing towards retention_size, and
		// ages with the next seal that signed a time.
		sg.sealOK = true
	case c.Sealed > 0 && c.Sealed == sealAt && c.TimeNS == rec.Time.UnixNano():
		// The seal signed where it starts: nothing was cut out of the
		// segment or put into it before the seal, and the segment counts
		// at its signed length.
		sg.sealOK, sg.sealSize = true, sealAt+int64(len(tail)-i)
		sg.sealTime = time.Unix(0, c.TimeNS)
	}
}

func (s *Files) remove(victims []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, v := range victims {
		if err := os.Remove(filepath.Join(s.cfg.Dir, v)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	syncDir(s.cfg.Dir)
	s.list()
	return errors.Join(errs...)
}

func (s *Files) dataLen() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.off
}

func (s *Files) tailFirst() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.segs) == 0 {
		return 1
	}
	return s.segs[len(s.segs)-1].first
}

func (s *Files) firstSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.segs) == 0 {
		return 1
	}
	return s.segs[0].first
}

// Scan implements Store. Segments are read in order of their first seq;
// each line's location is "<segment>:<line>".
func (s *Files) Scan(ctx context.Context, f Filter, fn func(*Record, string, error) error) error {
	s.mu.Lock()
	if s.ro {
		s.list()
	}
	segs := append([]segment(nil), s.segs...)
	s.mu.Unlock()
	var sessNeedle, typeNeedles [][]byte
	if f.Session != "" {
		q, _ := json.Marshal(f.Session)
		sessNeedle = [][]byte{append([]byte(`"session":`), q...)}
	}
	for _, t := range f.Types {
		typeNeedles = append(typeNeedles, []byte(`"type":"`+string(t)+`"`))
	}
	for i, sg := range segs {
		if f.From > 0 && i+1 < len(segs) && segs[i+1].first <= f.From {
			continue // everything in it is older
		}
		err := s.scanSegment(sg.name, func(line []byte, n int) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			if n == 1 {
				// The names place segments in the chain (and let a scan
				// from a seq skip the ones before it): a segment whose
				// name is not its first record's seq was renamed.
				// (A name past its first record is what a crash during
				// rotation leaves: the new, empty segment was created
				// before the old one got its sealing checkpoint. It
				// hides nothing from a scan.)
				if rec, err := decodeRecord(append([]byte(nil), line...)); err == nil && rec.Seq > sg.first {
					return fn(nil, fmt.Sprintf("%s:%d", sg.name, n), fmt.Errorf("segment %s is named for seq %d but begins with seq %d (renamed: a scan from a seq would skip records)", sg.name, sg.first, rec.Seq))
				}
			}
			// Cheap pre-filters before decoding (the needles cannot
			// occur inside the data's escaped strings unquoted).
			if !containsAny(line, sessNeedle) || !containsAny(line, typeNeedles) {
				return nil
			}
			loc := fmt.Sprintf("%s:%d", sg.name, n)
			rec, err := decodeRecord(append([]byte(nil), line...))
			if err != nil {
				return fn(nil, loc, err)
			}
			if !f.match(rec) {
				return nil
			}
			return fn(rec, loc, nil)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func containsAny(line []byte, needles [][]byte) bool {
	if len(needles) == 0 {
		return true
	}
	for _, n := range needles {
		if bytes.Contains(line, n) {
			return true
		}
	}
	return false
}

// scanSegment calls fn for each complete line (without its newline) and
// its 1-based line number, up to the NUL padding. A torn last line is
// skipped: the writer cuts it at its next start.
func (s *Files) scanSegment(name string, fn func(line []byte, n int) error) error {
	f, err := os.Open(filepath.Join(s.cfg.Dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil // removed by retention meanwhile
	}
	if err != nil {
		return fmt.Errorf("recording: open %s: %w", name, err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 256<<10)
	for n := 1; ; n++ {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) && bytes.IndexByte(line, 0) < 0 {
				line, err = r.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if bytes.IndexByte(line, 0) >= 0 {
			return nil // the preallocated tail, or a torn line before it
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("recording: read %s: %w", name, err)
		}
		if err := fn(line[:len(line)-1], n); err != nil {
			return err
		}
	}
}

// PutHead implements Store: head.json is replaced atomically.
func (s *Files) PutHead(ctx context.Context, h *Head) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.cfg.Dir, headFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("recording: write head: %w", hint(err))
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil && !s.cfg.noSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.cfg.Dir, headFile))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("recording: write head: %w", hint(err))
	}
	if !s.cfg.noSync {
		syncDir(s.cfg.Dir)
	}
	return nil
}

// Head implements Store.
func (s *Files) Head(ctx context.Context, _ string) (*Head, error) {
	b, err := os.ReadFile(filepath.Join(s.cfg.Dir, headFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("recording: read head: %w", err)
	}
	var h Head
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("recording: %s is damaged: %w", headFile, err)
	}
	return &h, nil
}

// Hosts implements Store: the host of the last record.
func (s *Files) Hosts(ctx context.Context) ([]string, error) {
	last, err := s.Last(ctx, "")
	if err != nil || last == nil {
		return nil, err
	}
	return []string{last.Host}, nil
}

// Close implements Store; with DeferSync it syncs the current segment
// first.
func (s *Files) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return nil
	}
	var err error
	if s.deferred() && s.broken == nil {
		if err = unix.Fdatasync(int(s.cur.Fd())); err != nil {
			s.breakOnSync(s.curName, err)
			err = s.broken
		}
	}
	if cerr := s.cur.Close(); err == nil {
		err = cerr
	}
	s.cur = nil
	return err
}
