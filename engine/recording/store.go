package recording

import (
	"context"
	"crypto/ed25519"
	"time"
)

// Store keeps the chain. The Recorder is its only writer (one goroutine);
// readers (the CLI) open their own Store.
type Store interface {
	// Last returns the last record of host's chain, nil when it is empty.
	Last(ctx context.Context, host string) (*Record, error)
	// Append writes a batch of encoded records, in order, and makes them
	// durable before returning, unless the store defers syncs (see
	// syncer): then they are written (they survive a crash of the daemon)
	// and Sync makes them durable. On error none of them may be taken as
	// written, and the store is back where it was (or reports every later
	// append as failed).
	Append(ctx context.Context, recs []*Record) error
	// Scan calls fn for every stored record matching f, in chain order
	// (host, then seq). A stored line that cannot be decoded is passed as
	// rec == nil with err set (Verify reports it); loc says where it is.
	Scan(ctx context.Context, f Filter, fn func(rec *Record, loc string, err error) error) error
	// PutHead durably records a new signed head; Head returns host's
	// latest (nil when none was written yet).
	PutHead(ctx context.Context, h *Head) error
	Head(ctx context.Context, host string) (*Head, error)
	// Hosts lists the hosts with a chain in the store.
	Hosts(ctx context.Context) ([]string, error)
	Close() error
}

// Filter narrows a Scan. Zero fields match everything.
type Filter struct {
	Host    string
	From    uint64 // records with seq >= From
	Session string
	Types   []Type
	Since   time.Time // records at or after this time
}

func (f *Filter) match(rec *Record) bool {
	if f.Host != "" && rec.Host != f.Host {
		return false
	}
	if rec.Seq < f.From {
		return false
	}
	if f.Session != "" && rec.Session != f.Session {
		return false
	}
	if len(f.Types) > 0 {
		ok := false
		for _, t := range f.Types {
			ok = ok || rec.Type == t
		}
		if !ok {
			return false
		}
	}
	return f.Since.IsZero() || !rec.Time.Before(f.Since)
}

// rotator is implemented by stores that keep the chain in segments (Files):
// the Recorder seals a segment with a signed checkpoint and applies
// retention through it.
type rotator interface {
	// needsRotation reports whether n more bytes would overflow the
	// current segment.
	needsRotation(n int) bool
	// rotate writes the checkpoint as the current segment's last record,
	// then starts a new segment; on error nothing was written.
	rotate(ctx context.Context, checkpoint *Record) error
	// retention returns the segments that retention would remove now
	// and the first seq of what stays (0: nothing to remove). A sealed
	// segment's age is that of its sealing checkpoint, signed by pub.
	retention(now time.Time, pub ed25519.PublicKey) (victims []string, firstSeq uint64)
	remove(victims []string) error
	// firstSeq is the first seq still stored; tailFirst the first seq of
	// the last segment.
	firstSeq() uint64
	tailFirst() uint64
	// dataLen is the length of the current segment's data: where its
	// sealing checkpoint will start.
	dataLen() int64
}

// syncer is implemented by stores that can defer syncs (Files and Postgres
// opened with DeferSync, for Config.SyncInterval): their Append returns once
// the records are written, and the Recorder calls Sync every SyncInterval,
// before each signed head and at close.
type syncer interface {
	// Sync makes every record appended so far durable.
	Sync(ctx context.Context) error
	// deferred reports whether Append returns before the records are
	// durable, so that a Recorder without SyncInterval refuses the store
	// rather than never syncing it.
	deferred() bool
}
