package approvals

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresSchema creates the shared store's table. The daemon runs it when
// the table is missing; a DBA may run it once instead and grant the
// engines' role SELECT, INSERT, UPDATE and DELETE on it.
const PostgresSchema = `
CREATE TABLE IF NOT EXISTS interlock_approvals (
	id           text        PRIMARY KEY,
	host         text        NOT NULL,
	session      text        NOT NULL,
	digest       text        NOT NULL,
	request      jsonb       NOT NULL, -- the Request as JSON, without its decision
	requested_at timestamptz NOT NULL,
	expires_at   timestamptz NOT NULL,
	outcome      text,                 -- NULL while pending
	decided_by   text,
	decided_at   timestamptz,
	reason       text
);
CREATE INDEX IF NOT EXISTS interlock_approvals_pending ON interlock_approvals (requested_at) WHERE outcome IS NULL;
`

// notifyChannel carries the id of every decided request.
const notifyChannel = "interlock_approvals"

// postgresRetention is how long decided and expired requests stay in the
// shared table (the recording keeps the history).
const postgresRetention = 7 * 24 * time.Hour

// Postgres is the shared store of a fleet: requests and decisions live in
// one table, and every decision is announced with NOTIFY, which each
// host's listener turns into a wake-up of the statement it holds.
type Postgres struct {
	dsn     string
	timeout time.Duration
	log     *slog.Logger

	mu   sync.Mutex // one statement at a time on conn
	conn *pgx.Conn

	smu  sync.Mutex
	subs []func(string)

	creates atomic.Uint64
	cancel  context.CancelFunc
	done    chan struct{}
}

// OpenPostgres connects, creates the table if it is missing and starts the
// listener. timeout bounds each statement (default 5s).
func OpenPostgres(ctx context.Context, dsn string, timeout time.Duration, log *slog.Logger) (*Postgres, error) {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Postgres{dsn: dsn, timeout: timeout, log: log, done: make(chan struct{})}
	err := s.with(ctx, func(ctx context.Context, c *pgx.Conn) error {
		var exists bool
		if err := c.QueryRow(ctx, `SELECT to_regclass('interlock_approvals') IS NOT NULL`).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			if _, err := c.Exec(ctx, PostgresSchema); err != nil {
				return fmt.Errorf("create table (or have a DBA run the schema in docs/approvals.md): %w", err)
			}
		}
		return nil
	})
	if err != nil {
		s.closeConn()
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	ready := make(chan error, 1)
	go s.listen(lctx, ready)
	select {
	case err := <-ready:
		if err != nil {
			cancel()
			<-s.done
			s.closeConn()
			return nil, err
		}
	case <-ctx.Done():
		cancel()
		<-s.done
		s.closeConn()
		return nil, ctx.Err()
	}
	return s, nil
}

// with runs fn on the shared connection (connecting if needed); a failed
// connection is dropped so that the next call reconnects.
func (s *Postgres) with(ctx context.Context, fn func(context.Context, *pgx.Conn) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil || s.conn.IsClosed() {
		c, err := pgx.Connect(ctx, s.dsn)
		if err != nil {
			return fmt.Errorf("approvals: connect to the postgres store: %w", err)
		}
		s.conn = c
	}
	err := fn(ctx, s.conn)
	if err != nil && s.conn.PgConn().IsClosed() {
		s.conn = nil
	}
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("approvals: postgres store: %w", err)
	}
	return err
}

func (s *Postgres) closeConn() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		s.conn.Close(context.Background())
		s.conn = nil
	}
}

// listen holds a LISTEN connection and passes each notification to the
// subscribers. After a reconnect, subscribers get "" (anything may have
// been decided meanwhile).
func (s *Postgres) listen(ctx context.Context, ready chan<- error) {
	defer close(s.done)
	backoff := 200 * time.Millisecond
	first := true
	for ctx.Err() == nil {
		conn, err := s.listenConn(ctx)
		if first {
			ready <- err
			if err != nil {
				return
			}
			first = false
		} else if err == nil {
			s.publish("")
		}
		if err != nil {
			s.log.Warn("approvals: postgres store listener: reconnecting", "error", err, "in", backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		backoff = 200 * time.Millisecond
		for {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("approvals: postgres store listener lost its connection", "error", err)
				}
				break
			}
			s.publish(n.Payload)
		}
		conn.Close(context.Background())
	}
}

func (s *Postgres) listenConn(ctx context.Context) (*pgx.Conn, error) {
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	conn, err := pgx.Connect(cctx, s.dsn)
	if err != nil {
		return nil, fmt.Errorf("approvals: postgres store listener: %w", err)
	}
	if _, err := conn.Exec(cctx, "LISTEN "+notifyChannel); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("approvals: postgres store: LISTEN: %w", err)
	}
	return conn, nil
}

func (s *Postgres) publish(id string) {
	s.smu.Lock()
	subs := s.subs
	s.smu.Unlock()
	for _, fn := range subs {
		fn(id)
	}
}

// Create implements Store.
func (s *Postgres) Create(ctx context.Context, r *Request) error {
	c := clone(r)
	c.Decision = nil
	body, err := json.Marshal(c)
	if err != nil {
		return err
	}
	gc := s.creates.Add(1)%100 == 1
	return s.with(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		if gc {
			if _, err := conn.Exec(ctx, `DELETE FROM interlock_approvals WHERE coalesce(decided_at, expires_at) < now() - make_interval(secs => $1)`, postgresRetention.Seconds()); err != nil {
				return err
			}
		}
		_, err := conn.Exec(ctx, `INSERT INTO interlock_approvals (id, host, session, digest, request, requested_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			r.ID, r.Host, r.Session, r.Digest, body, r.RequestedAt, r.ExpiresAt)
		return err
	})
}

const selectRequest = `SELECT request, outcome, decided_by, decided_at, reason FROM interlock_approvals`

func scanRequest(row pgx.Row) (*Request, error) {
	var (
		body                []byte
		outcome, by, reason *string
		at                  *time.Time
	)
	if err := row.Scan(&body, &outcome, &by, &at, &reason); err != nil {
		return nil, err
	}
	r := &Request{}
	if err := json.Unmarshal(body, r); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	r.Decision = nil
	if outcome != nil {
		d := &Decision{ID: r.ID, Session: r.Session, Digest: r.Digest, Outcome: Outcome(*outcome)}
		if by != nil {
			d.By = *by
		}
		if at != nil {
			d.At = at.UTC()
		}
		if reason != nil {
			d.Reason = *reason
		}
		r.Decision = d
	}
	return r, nil
}

// Get implements Store.
func (s *Postgres) Get(ctx context.Context, id string) (*Request, error) {
	var r *Request
	err := s.with(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		var err error
		r, err = scanRequest(conn.QueryRow(ctx, selectRequest+` WHERE id = $1`, id))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return r, err
}

// List implements Store.
func (s *Postgres) List(ctx context.Context) ([]*Request, error) {
	var out []*Request
	err := s.with(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, selectRequest+` WHERE outcome IS NULL AND expires_at > now() ORDER BY requested_at`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scanRequest(rows)
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return rows.Err()
	})
	return out, err
}

// Decide implements Store: one UPDATE that only a pending, bound (and, for
// approvals and denials, unexpired) row passes, and a NOTIFY sent when it
// commits.
func (s *Postgres) Decide(ctx context.Context, d Decision) (*Request, error) {
	anyTime := d.Outcome != Approved && d.Outcome != Denied
	var won bool
	err := s.with(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		var id string
		err := conn.QueryRow(ctx, `WITH u AS (
	UPDATE interlock_approvals SET outcome = $2, decided_by = $3, decided_at = $4, reason = $5
	WHERE id = $1 AND session = $6 AND digest = $7 AND outcome IS NULL AND ($8 OR expires_at > now())
	RETURNING id)
SELECT id FROM u, pg_notify('`+notifyChannel+`', u.id)`,
			d.ID, string(d.Outcome), d.By, d.At, nullable(d.Reason), d.Session, d.Digest, anyTime).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		won = err == nil
		return err
	})
	if err != nil {
		return nil, err
	}
	r, err := s.Get(ctx, d.ID)
	if err != nil {
		return nil, err
	}
	switch {
	case won:
		return r, nil
	case r.Decision != nil:
		return r, ErrDecided
	case r.Session != d.Session || r.Digest != d.Digest:
		return nil, ErrBinding
	}
	return r, ErrExpired
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Subscribe implements Store.
func (s *Postgres) Subscribe(fn func(string)) {
	s.smu.Lock()
	defer s.smu.Unlock()
	s.subs = append(s.subs, fn)
}

// Shared implements Store.
func (s *Postgres) Shared() bool { return true }

// Close stops the listener and closes the connections.
func (s *Postgres) Close() error {
	s.cancel()
	<-s.done
	s.closeConn()
	return nil
}
