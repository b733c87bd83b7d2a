package recording

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
)

// VerifyOptions says what to verify.
type VerifyOptions struct {
	// Host is the chain to verify (the PostgreSQL store keeps one per
	// host; a Files store has one and ignores it).
	Host string
	// From starts at this sequence number instead of the first record
	// kept; its link to the record before is taken on trust.
	From uint64
	// PublicKey checks the checkpoints and the head.
	PublicKey ed25519.PublicKey
	// LegacyHead accepts a head signed as earlier versions signed them
	// (like a checkpoint), or no head: what `interlock audit migrate`
	// checks before it signs a head of this version.
	LegacyHead bool
}

// VerifyReport is what a successful verification covered.
type VerifyReport struct {
	Host        string
	First, Last uint64 // sequence numbers checked
	Records     int
	Checkpoints int
	// Signed is the last record covered by a valid checkpoint; records
	// after it are protected by the hash chain alone (Unsigned of them).
	Signed   uint64
	Unsigned int
	// Unwitnessed are the ranges of records (first, last) that a restarted
	// daemon found after the last checkpoint and signed as found: written
	// before a crash, or appended by someone else while it was down.
	Unwitnessed [][2]uint64
	Head        *Head
}

// Verify walks a chain and returns the first record that breaks it as a
// *BadRecordError: a record whose hash does not match its bytes (edited),
// whose sequence number is not the next one (deleted, reordered, inserted),
// whose prev is not the previous record's hash (inserted, replaced), a
// checkpoint whose signature or coverage is wrong, a chain that starts
// after the first record the signed head promises (deleted from the
// front), ends before the signed head (truncated), or has checkpoints but
// no head (removed, which would hide a truncation). Records of another
// host than the first record's, or than opts.Host, are bad too.
func Verify(ctx context.Context, st Store, opts VerifyOptions) (*VerifyReport, error) {
	rep := &VerifyReport{Host: opts.Host}
	head, err := st.Head(ctx, opts.Host)
	if err != nil {
		return nil, err
	}
	if head != nil {
		rep.Head = head
		if !head.verify(opts.PublicKey) && !(opts.LegacyHead && head.legacy(opts.PublicKey)) {
			if head.legacy(opts.PublicKey) {
				return nil, &BadRecordError{Seq: head.Seq, Location: "signed head", Reason: "the head is signed as earlier versions signed it (with a checkpoint's signature, which any checkpoint in the chain could supply, so it cannot prove the tail complete); start the daemon once to sign a new head, then verify again"}
			}
			return nil, &BadRecordError{Seq: head.Seq, Location: "signed head", Reason: "the head's signature does not verify (edited, or signed by another key: key " + head.Key + ", expected " + KeyID(opts.PublicKey) + ")"}
		}
	}
	var (
		started  bool
		prevSeq  uint64
		prevHash string
		headSeen bool
		lastCP   uint64 // seq of the last checkpoint record seen (0: none)
		// A chain starting after seq 1 is retention when the head or a
		// checkpoint announced it (a checkpoint's may outlive a head
		// that could not be written); decided at the end.
		lateStart, maxFirst uint64
		lateLoc             string
	)
	bad := func(seq uint64, loc, format string, args ...any) error {
		return &BadRecordError{Seq: seq, Location: loc, Reason: fmt.Sprintf(format, args...)}
	}
	err = st.Scan(ctx, Filter{Host: opts.Host}, func(rec *Record, loc string, derr error) error {
		if rec == nil {
			if !started && opts.From > 0 {
				return nil // before the range asked for
			}
			return bad(prevSeq+1, loc, "cannot be read: %v", derr)
		}
		if !started && opts.From > 0 && rec.Seq < opts.From {
			prevSeq, prevHash = rec.Seq, rec.Hash
			return nil
		}
		if err := rec.checkHash(); err != nil {
			return bad(rec.Seq, loc, "%v", err)
		}
		if rec.V != Version {
			return bad(rec.Seq, loc, "unknown record version %d", rec.V)
		}
		if !started {
			started = true
			rep.First = rec.Seq
			switch {
			case opts.From > 0 && rec.Seq != opts.From:
				return bad(opts.From, loc, "the chain has no record %d (found %d there)", opts.From, rec.Seq)
			case opts.From > 0:
				// Trusted start.
			case rec.Seq == 1 && rec.Prev != "":
				return bad(rec.Seq, loc, "the first record links to a previous one (records before it were removed)")
			case rec.Seq != 1 && (head == nil || rec.Seq > head.FirstSeq):
				lateStart, lateLoc = rec.Seq, loc
			}
		} else {
			switch {
			case rec.Seq > prevSeq+1:
				return bad(prevSeq+1, loc, "seq %d is missing here (deleted or moved): found seq %d after seq %d", prevSeq+1, rec.Seq, prevSeq)
			case rec.Seq != prevSeq+1:
				return bad(rec.Seq, loc, "seq %d follows seq %d (reordered or inserted)", rec.Seq, prevSeq)
			case rec.Prev != prevHash:
				return bad(rec.Seq, loc, "does not link to record %d (its prev hash differs: inserted, or replaced together with what precedes it)", prevSeq)
			}
		}
		if rep.Host == "" {
			// A files store holds one host's chain: the first record
			// names it, and the report says whose chain was checked.
			rep.Host = rec.Host
		}
		if rec.Host != rep.Host {
			return bad(rec.Seq, loc, "belongs to host %q, not %q", rec.Host, rep.Host)
		}
		if head != nil && head.Host != rep.Host {
			return bad(head.Seq, "signed head", "the head is host %q's, the chain host %q's", head.Host, rep.Host)
		}
		if rec.Type == TypeCheckpoint {
			var c Checkpoint
			if err := rec.Decode(&c); err != nil {
				return bad(rec.Seq, loc, "%v", err)
			}
			if c.Seq+1 != rec.Seq || c.Hash != rec.Prev {
				return bad(rec.Seq, loc, "checkpoint covers seq %d, not the record before it", c.Seq)
			}
			if c.TimeNS != 0 && c.TimeNS != rec.Time.UnixNano() {
				return bad(rec.Seq, loc, "checkpoint's signed time differs from its record's time")
			}
			if !c.verify(opts.PublicKey, rec.Host) {
				return bad(rec.Seq, loc, "checkpoint signature does not verify (forged, or signed by key %s, expected %s)", c.Key, KeyID(opts.PublicKey))
			}
			if c.Adopted > 0 {
				lo := lastCP + 1
				if lastCP == 0 {
					lo = rep.First
				}
				switch {
				case c.Adopted > c.Seq:
					return bad(rec.Seq, loc, "checkpoint says it adopted records up to seq %d, after the seq %d it covers", c.Adopted, c.Seq)
				case c.Adopted >= lo:
					rep.Unwitnessed = append(rep.Unwitnessed, [2]uint64{lo, c.Adopted})
				case lastCP != 0:
					return bad(rec.Seq, loc, "checkpoint says it adopted records up to seq %d, before the checkpoint at seq %d", c.Adopted, lastCP)
				}
				// Else the adopted records precede the range checked
				// (--from, or retired by retention).
			}
			maxFirst = max(maxFirst, c.FirstSeq)
			lastCP = rec.Seq
			rep.Checkpoints++
			rep.Signed = c.Seq
			rep.Unsigned = 0
		} else {
			rep.Unsigned++
		}
		if head != nil && rec.Seq == head.Seq {
			if rec.Hash != head.Hash {
				return bad(rec.Seq, loc, "differs from the record the signed head covers")
			}
			headSeen = true
		}
		rep.Records++
		rep.Last = rec.Seq
		prevSeq, prevHash = rec.Seq, rec.Hash
		return nil
	})
	if err != nil {
		return nil, err
	}
	if lateStart > 0 && (head == nil || lateStart > head.FirstSeq) && lateStart > maxFirst {
		if head == nil {
			return nil, bad(1, lateLoc, "the chain starts at seq %d and no signed head or checkpoint says records before it were retired: records 1..%d are missing", lateStart, lateStart-1)
		}
		from := max(head.FirstSeq, maxFirst)
		return nil, bad(from, lateLoc, "the chain starts at seq %d but the signed head keeps records from seq %d: records %d..%d were deleted", lateStart, from, from, lateStart-1)
	}
	if head != nil && head.Seq > 0 && !headSeen && head.Seq >= opts.From {
		return nil, bad(prevSeq+1, "end of the chain", "the chain ends at seq %d but the signed head covers it up to seq %d: records %d..%d were truncated", prevSeq, head.Seq, prevSeq+1, head.Seq)
	}
	if !started && opts.From > 0 {
		return nil, bad(opts.From, "end of the chain", "the chain has no record %d", opts.From)
	}
	if head == nil && rep.Records > 0 && !opts.LegacyHead {
		// A chain gets a head (for seq 0) before its first record, and
		// heads are only ever replaced: without one, a tail cut anywhere
		// after the last checkpoint would go unnoticed.
		return nil, bad(prevSeq+1, "signed head", "the chain has records but no signed head: the head was removed (or an earlier version never wrote one: see `interlock audit migrate`), so a truncated tail cannot be ruled out")
	}
	return rep, nil
}

// IsBadRecord reports whether err names a bad record (as opposed to a
// store that could not be read).
func IsBadRecord(err error) bool {
	var b *BadRecordError
	return errors.As(err, &b)
}
