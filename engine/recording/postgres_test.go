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
		db := fmt.Sprintf("rec_%d", n.Add(1))
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
			t.Fatal(err)
		}
		dsn := fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/%s?sslmode=disable", pg.Password, pg.Port, db)
		open := func() Store {
			st, err := OpenPostgres(ctx, dsn, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}
		return open(), open, &pgTamperer{dsn: dsn}
	}}
	runStoreSuite(t, kind)

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
		ws, err := OpenPostgres(ctx, dsn, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		r := openRecorder(t, ws, nil)
		writeSessions(t, r, 2, 3)
		r.Close()
		ws2, _ := OpenPostgres(ctx, dsn, 5*time.Second)
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
