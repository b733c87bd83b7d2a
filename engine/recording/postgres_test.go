package recording

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/interlockhq/interlock/test/harness"
)

// TestPostgresStore runs the shared suite against a real PostgreSQL
// server (one database per subtest).
func TestPostgresStore(t *testing.T) {
	harness.RequirePrivileged(t)
	pg := harness.StartPostgres(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, pg.DSN("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var n atomic.Int64
	kind := storeKind{name: "postgres", open: func(t *testing.T) (Store, func() Store, tamperer) {
		dsn := pg.CreateDatabase(t, fmt.Sprintf("rec_%d", n.Add(1)))
		open := func() Store {
			st, err := OpenPostgres(ctx, PostgresConfig{DSN: dsn})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}
		return open(), open, &pgTamperer{dsn: dsn}
	}, openDeferred: func(t *testing.T) (Store, func() Store) {
		dsn := pg.CreateDatabase(t, fmt.Sprintf("rec_%d", n.Add(1)))
		open := func(deferSync bool) Store {
			st, err := OpenPostgres(ctx, PostgresConfig{DSN: dsn, DeferSync: deferSync})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}
		return open(true), func() Store { return open(false) }
	}}
	runStoreSuite(t, kind)
	runSyncIntervalSuite(t, kind)

	t.Run("interval: every connection of the writer commits asynchronously, readers do not", func(t *testing.T) {
		st, reader := kind.openDeferred(t)
		w := st.(*Postgres)
		show := func(s *Postgres) string {
			conn, err := s.connect(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var v string
			if err := conn.QueryRow(ctx, "SHOW synchronous_commit").Scan(&v); err != nil {
				t.Fatal(err)
			}
			return v
		}
		if v := show(w); v != "off" {
			t.Errorf("writer: synchronous_commit %s", v)
		}
		// The harness's server runs with synchronous_commit off: set the
		// database's default, which a reader and Sync's commit use.
		if _, err := admin.Exec(ctx, fmt.Sprintf("ALTER DATABASE rec_%d SET synchronous_commit = on", n.Load())); err != nil {
			t.Fatal(err)
		}
		if v := show(reader().(*Postgres)); v != "on" {
			t.Errorf("reader: synchronous_commit %s", v)
		}
		w.drop(w.conn) // as after an error: the next call reconnects
		if v := show(w); v != "off" {
			t.Errorf("writer after a reconnection: synchronous_commit %s", v)
		}
		// An append's commit returns before the WAL is flushed; Sync
		// flushes it. The WAL writer would flush it within 10s.
		for _, q := range []string{"ALTER SYSTEM SET wal_writer_delay = '10s'", "SELECT pg_reload_conf()"} {
			if _, err := admin.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() {
			admin.Exec(ctx, "ALTER SYSTEM RESET wal_writer_delay")
			admin.Exec(ctx, "SELECT pg_reload_conf()")
		})
		time.Sleep(100 * time.Millisecond) // the WAL writer takes the new delay after its current sleep
		lsns := func() (insert, flush uint64) {
			if err := admin.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn() - '0/0', pg_current_wal_flush_lsn() - '0/0'").Scan(&insert, &flush); err != nil {
				t.Fatal(err)
			}
			return insert, flush
		}
		r := openRecorder(t, w, func(c *Config) { c.SyncInterval, c.CheckpointInterval = time.Hour, time.Hour })
		defer r.Close()
		writeSessions(t, r, 1, 20)
		written, flushed := lsns()
		if err := w.Sync(ctx); err != nil {
			t.Fatalf("sync: %v", err)
		}
		_, synced := lsns()
		t.Logf("WAL after the appends: inserted to %d, flushed to %d; after Sync, flushed to %d", written, flushed, synced)
		if synced < written {
			t.Errorf("after Sync the WAL is flushed to %d, not past the appends (%d)", synced, written)
		}
		if v := show(w); v != "off" {
			t.Errorf("writer after a sync: synchronous_commit %s (SET LOCAL leaks)", v)
		}
	})

	t.Run("writer role has INSERT and SELECT only", func(t *testing.T) {
		st, _, _ := kind.open(t)
		st.Close()
		db := fmt.Sprintf("rec_%d", n.Load())
		for _, q := range []string{
			"CREATE ROLE interlock_writer LOGIN PASSWORD 'w'",
			"GRANT CONNECT ON DATABASE " + db + " TO interlock_writer",
		} {
			if _, err := admin.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		owner, _ := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/%s?sslmode=disable", pg.Password, pg.Port, db))
		defer owner.Close(ctx)
		if _, err := owner.Exec(ctx, "GRANT SELECT, INSERT ON interlock_records, interlock_heads TO interlock_writer"); err != nil {
			t.Fatal(err)
		}
		dsn := fmt.Sprintf("postgres://interlock_writer:w@127.0.0.1:%d/%s?sslmode=disable", pg.Port, db)
		ws, err := OpenPostgres(ctx, PostgresConfig{DSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		r := openRecorder(t, ws, nil)
		writeSessions(t, r, 2, 3)
		r.Close()
		ws2, _ := OpenPostgres(ctx, PostgresConfig{DSN: dsn})
		defer ws2.Close()
		mustVerify(t, ws2)
		w, _ := pgx.Connect(ctx, dsn)
		defer w.Close(ctx)
		for _, q := range []string{"UPDATE interlock_records SET record = ''", "DELETE FROM interlock_records", "TRUNCATE interlock_records", "DELETE FROM interlock_heads"} {
			if _, err := w.Exec(ctx, q); err == nil {
				t.Errorf("%s: allowed for the writer role", q)
			}
		}
		admin.Exec(ctx, "DROP OWNED BY interlock_writer")
	})
}

type pgTamperer struct{ dsn string }

func (p *pgTamperer) segments() bool { return false }

func (p *pgTamperer) conn(t *testing.T) *pgx.Conn {
	c, err := pgx.Connect(context.Background(), p.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func (p *pgTamperer) lines(t *testing.T) []line {
	rows, err := p.conn(t).Query(context.Background(), "SELECT seq, record FROM interlock_records WHERE host = 'host-a' ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	var out []line
	for rows.Next() {
		var seq int64
		var raw string
		rows.Scan(&seq, &raw)
		out = append(out, line{slot: strconv.FormatInt(seq, 10), raw: raw})
	}
	return out
}

// write rewrites the host's rows; the row order (seq column) is the order
// of ls, as a DBA rewriting the table would leave it.
func (p *pgTamperer) write(t *testing.T, ls []line) {
	ctx := context.Background()
	c := p.conn(t)
	if _, err := c.Exec(ctx, "DELETE FROM interlock_records WHERE host = 'host-a'"); err != nil {
		t.Fatal(err)
	}
	for i, l := range ls {
		if _, err := c.Exec(ctx, "INSERT INTO interlock_records (host, seq, time, type, record) VALUES ('host-a', $1, now(), 'x', $2)", i+1, l.raw); err != nil {
			t.Fatal(err)
		}
	}
}
