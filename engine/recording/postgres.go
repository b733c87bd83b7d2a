package recording

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresSchema creates the shared store's tables. The daemon runs it when
// the tables are missing and its role may create them; otherwise a DBA
// runs it once, then grants the writer role INSERT and SELECT only (see
// docs/recording.md): no UPDATE, DELETE or TRUNCATE, so that a host can
// add to its chain but never rewrite what it already sent.
const PostgresSchema = `
CREATE TABLE IF NOT EXISTS interlock_records (
	host    text        NOT NULL,
	seq     bigint      NOT NULL,
	time    timestamptz NOT NULL,
	type    text        NOT NULL,
	session text,
	record  text        NOT NULL, -- the record exactly as hashed (see engine/recording/record.go)
	PRIMARY KEY (host, seq)
);
CREATE INDEX IF NOT EXISTS interlock_records_session ON interlock_records (session, host, seq) WHERE session IS NOT NULL;
CREATE INDEX IF NOT EXISTS interlock_records_type_time ON interlock_records (type, time);
CREATE TABLE IF NOT EXISTS interlock_heads (
	host text   NOT NULL,
	seq  bigint NOT NULL,
	head text   NOT NULL, -- JSON of recording.Head, signed
	PRIMARY KEY (host, seq)
);
`

// Postgres is the shared store: every host appends its own chain to one
// append-only table.
type Postgres struct {
	cfg PostgresConfig

	mu   sync.Mutex
	conn *pgx.Conn
}

// PostgresConfig configures a Postgres store.
type PostgresConfig struct {
	DSN string
	// Timeout bounds each write (a hung server refuses statements instead
	// of holding them; default 5s).
	Timeout time.Duration
	// DeferSync commits batches with synchronous_commit off (set on every
	// connection): the commit returns before the server flushes its WAL,
	// and Sync forces the flush (for recording.Config.SyncInterval; a
	// Recorder without it refuses such a store). The daemon's writer only;
	// readers leave it off.
	DeferSync bool
}

// OpenPostgres connects to the store and creates its tables when they are
// missing.
func OpenPostgres(ctx context.Context, cfg PostgresConfig) (*Postgres, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	s := &Postgres{cfg: cfg}
	conn, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('interlock_records') IS NOT NULL AND to_regclass('interlock_heads') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("recording: postgres store: %w", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, PostgresSchema); err != nil {
			return nil, fmt.Errorf("recording: postgres store: create tables (or have a DBA run the schema in docs/recording.md): %w", err)
		}
	}
	return s, nil
}

func (s *Postgres) connect(ctx context.Context) (*pgx.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil && !s.conn.IsClosed() {
		return s.conn, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("recording: connect to the postgres store: %w", err)
	}
	if s.cfg.DeferSync {
		// This connection only: other users of the server keep theirs.
		if _, err := conn.Exec(ctx, "SET synchronous_commit = off"); err != nil {
			conn.Close(context.Background())
			return nil, fmt.Errorf("recording: postgres store: set synchronous_commit off (recording.sync: interval): %w", err)
		}
	}
	s.conn = conn
	return conn, nil
}

// drop forgets a connection after an error: the next call reconnects.
func (s *Postgres) drop(conn *pgx.Conn) {
	s.mu.Lock()
	if s.conn == conn {
		s.conn = nil
	}
	s.mu.Unlock()
	conn.Close(context.Background())
}

// Last implements Store.
func (s *Postgres) Last(ctx context.Context, host string) (*Record, error) {
	conn, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	var raw string
	err = conn.QueryRow(ctx, `SELECT record FROM interlock_records WHERE host = $1 ORDER BY seq DESC LIMIT 1`, host).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("recording: postgres store: %w", err)
	}
	rec, err := ParseRecord([]byte(raw))
	if err != nil {
		return nil, fmt.Errorf("recording: the last record of host %s is damaged (%v); run `interlock audit verify`", host, err)
	}
	return rec, nil
}

// Append implements Store: one transaction per batch; its commit is the
// sync (with DeferSync, the server's WAL writer or the next Sync flushes
// it).
func (s *Postgres) Append(ctx context.Context, recs []*Record) error {
	conn, err := s.connect(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	hosts := make([]string, len(recs))
	seqs := make([]int64, len(recs))
	times := make([]time.Time, len(recs))
	types := make([]string, len(recs))
	sessions := make([]*string, len(recs))
	raws := make([]string, len(recs))
	for i, r := range recs {
		hosts[i], seqs[i], times[i], types[i], raws[i] = r.Host, int64(r.Seq), r.Time, string(r.Type), string(r.Raw)
		if r.Session != "" {
			sessions[i] = &recs[i].Session
		}
	}
	_, err = conn.Exec(ctx, `INSERT INTO interlock_records (host, seq, time, type, session, record)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::text[], $5::text[], $6::text[])`,
		hosts, seqs, times, types, sessions, raws)
	if err != nil {
		s.drop(conn)
		return fmt.Errorf("recording: append to the postgres store: %w", err)
	}
	return nil
}

// Sync implements syncer: it commits, with the server's own
// synchronous_commit, a transaction that flushes the WAL up to its commit
// record, and so every asynchronous commit before it, whichever connection
// made them. The transaction must write WAL (a commit that wrote none is
// never waited for, even with an xid): a transactional logical decoding
// message does, with no table to write to and no privilege beyond the
// default EXECUTE for PUBLIC (logical decoding consumers that ask for
// messages see it, prefix interlock.recording.sync).
func (s *Postgres) Sync(ctx context.Context) error {
	if !s.cfg.DeferSync {
		return nil
	}
	conn, err := s.connect(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if _, err := conn.Exec(ctx, "BEGIN; SET LOCAL synchronous_commit TO DEFAULT; SELECT pg_logical_emit_message(true, 'interlock.recording.sync', ''); COMMIT"); err != nil {
		s.drop(conn)
		return fmt.Errorf("recording: sync the postgres store: %w", err)
	}
	return nil
}

func (s *Postgres) deferred() bool { return s.cfg.DeferSync }

// Scan implements Store.
func (s *Postgres) Scan(ctx context.Context, f Filter, fn func(*Record, string, error) error) error {
	conn, err := s.connect(ctx)
	if err != nil {
		return err
	}
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Host != "" {
		add("host = $%d", f.Host)
	}
	if f.From > 0 {
		add("seq >= $%d", int64(f.From))
	}
	if f.Session != "" {
		add("session = $%d", f.Session)
	}
	if len(f.Types) > 0 {
		ts := make([]string, len(f.Types))
		for i, t := range f.Types {
			ts[i] = string(t)
		}
		add("type = ANY($%d)", ts)
	}
	if !f.Since.IsZero() {
		add("time >= $%d", f.Since)
	}
	q := `SELECT host, seq, record FROM interlock_records`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	rows, err := conn.Query(ctx, q+" ORDER BY host, seq", args...)
	if err != nil {
		return fmt.Errorf("recording: read the postgres store: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			host string
			seq  int64
			raw  string
		)
		if err := rows.Scan(&host, &seq, &raw); err != nil {
			return fmt.Errorf("recording: read the postgres store: %w", err)
		}
		loc := fmt.Sprintf("interlock_records host=%s seq=%d", host, seq)
		rec, derr := decodeRecord([]byte(raw))
		if derr != nil {
			rec = nil
		}
		if err := fn(rec, loc, derr); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("recording: read the postgres store: %w", err)
	}
	return nil
}

// PutHead implements Store: heads are appended too; the latest is the one
// with the highest seq.
func (s *Postgres) PutHead(ctx context.Context, h *Head) error {
	conn, err := s.connect(ctx)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(h)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	tag, err := conn.Exec(ctx, `INSERT INTO interlock_heads (host, seq, head) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, h.Host, int64(h.Seq), string(b))
	if err != nil {
		s.drop(conn)
		return fmt.Errorf("recording: write head to the postgres store: %w", err)
	}
	if tag.RowsAffected() == 0 {
		// Only this host writes its heads, one per checkpoint: a row
		// already there is this head written before (a retry), or one
		// someone else put there to keep this host's heads out.
		var old string
		if err := conn.QueryRow(ctx, `SELECT head FROM interlock_heads WHERE host = $1 AND seq = $2`, h.Host, int64(h.Seq)).Scan(&old); err != nil {
			s.drop(conn)
			return fmt.Errorf("recording: write head to the postgres store: %w", err)
		}
		if old != string(b) {
			return fmt.Errorf("recording: the postgres store already holds a different head for host %s at seq %d (written by someone else); run `interlock audit verify`", h.Host, h.Seq)
		}
	}
	return nil
}

// Head implements Store.
func (s *Postgres) Head(ctx context.Context, host string) (*Head, error) {
	conn, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	var (
		raw string
		seq int64
	)
	err = conn.QueryRow(ctx, `SELECT seq, head FROM interlock_heads WHERE host = $1 ORDER BY seq DESC LIMIT 1`, host).Scan(&seq, &raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("recording: read head from the postgres store: %w", err)
	}
	var h Head
	if err := json.Unmarshal([]byte(raw), &h); err != nil {
		return nil, fmt.Errorf("recording: head of host %s is damaged: %w", host, err)
	}
	// The row's columns pick the latest head; only the signed JSON says
	// what it covers. A row whose columns disagree with it was not written
	// by the host (a head filed under a higher seq would otherwise hide
	// every later one).
	if h.Host != host || h.Seq != uint64(seq) {
		return nil, fmt.Errorf("recording: the latest head row of host %s (seq %d) holds a head of host %q at seq %d: the heads table was tampered with; run `interlock audit verify`", host, seq, h.Host, h.Seq)
	}
	return &h, nil
}

// Hosts implements Store.
func (s *Postgres) Hosts(ctx context.Context) ([]string, error) {
	conn, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, `SELECT DISTINCT host FROM interlock_records ORDER BY host`)
	if err != nil {
		return nil, fmt.Errorf("recording: read the postgres store: %w", err)
	}
	hosts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("recording: read the postgres store: %w", err)
	}
	return hosts, nil
}

// Close implements Store.
func (s *Postgres) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close(context.Background())
	s.conn = nil
	return err
}
