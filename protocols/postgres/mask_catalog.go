package postgres

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/interlockhq/interlock/engine/policy"
)

// catalog names result columns "schema.table.column" from a
// RowDescription's table OID and attribute number, so that column rules
// naming a table apply. It asks the target's catalog through its own
// connection (the engine's credentials for the session, opened at the first
// masked result that needs it) and caches each table for the session.
//
// With passthrough authentication it has no credentials, and columns go by
// their output names (documented). A failed connection or query is another
// matter: an agent can cause one (using up the server's connections), so
// the columns it could not name are unresolved, which the masker turns to
// NULL when column rules apply, and the catalog is tried again after
// catalogRetry. Only the server loop uses it.
type catalog struct {
	ss      *session
	conn    *pgconn.PgConn
	retryAt time.Time            // after a failure, lookups fail at once until then
	tables  map[uint32]*catTable // nil entry: no such table
}

// catalogRetry is how long after a failure the catalog is tried again.
const catalogRetry = 2 * time.Second

var errCatalogDown = errors.New("masking: the catalog connection failed recently")

type catTable struct {
	schema, name string
	cols         map[int16]string
}

// column returns the qualified name of a table column, or false; unresolved
// says the column comes from a table the catalog could not be asked about.
func (c *catalog) column(oid uint32, attnum int16) (name string, ok, unresolved bool) {
	if c == nil || oid == 0 || attnum <= 0 {
		return "", false, false
	}
	t, cached := c.tables[oid]
	if !cached {
		var err error
		if t, err = c.lookup(oid); err != nil {
			return "", false, !c.passthrough()
		}
		c.tables[oid] = t
	}
	if t == nil {
		return "", false, false
	}
	if name, ok = t.cols[attnum]; !ok {
		return "", false, false
	}
	return t.schema + "." + t.name + "." + name, true, false
}

func (c *catalog) passthrough() bool { return authMode(c.ss.target) == policy.AuthPassthrough }

// relation returns "schema.table" and the column names, in order, of the
// table rel (a quoted regclass literal), or false.
func (c *catalog) relation(rel string) (string, []string, bool) {
	if c == nil {
		return "", nil, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.ss.h.cfg.HandshakeTimeout)
	defer cancel()
	if c.open(ctx) != nil {
		return "", nil, false
	}
	rr := c.conn.ExecParams(ctx, relationQuery, [][]byte{[]byte(rel)}, nil, nil, nil)
	var (
		tbl  string
		cols []string
	)
	for rr.NextRow() {
		v := rr.Values()
		tbl = string(v[0]) + "." + string(v[1])
		cols = append(cols, string(v[2]))
	}
	if _, err := rr.Close(); err != nil {
		c.fail("masking: catalog lookup failed", "relation", rel, "error", err)
		return "", nil, false
	}
	return tbl, cols, cols != nil
}

const relationQuery = `select n.nspname, c.relname, a.attname
from pg_catalog.pg_class c
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
join pg_catalog.pg_attribute a on a.attrelid = c.oid
where c.oid = pg_catalog.to_regclass($1) and a.attnum > 0 and not a.attisdropped
order by a.attnum`

func (c *catalog) open(ctx context.Context) error {
	if c.conn != nil {
		return nil
	}
	if time.Now().Before(c.retryAt) {
		return errCatalogDown
	}
	conn, err := c.connect(ctx)
	if err != nil {
		c.retryAt = time.Now().Add(catalogRetry)
		if c.passthrough() {
			c.retryAt = time.Now().Add(24 * time.Hour) // it will not change
			c.ss.s.Log.Info("masking: no catalog connection with passthrough authentication; column rules match output column names only")
		} else {
			c.ss.s.Log.Warn("masking: cannot open the catalog connection; columns of tables it cannot name are NULL under column rules until it works", "error", err)
		}
		return err
	}
	c.conn = conn
	return nil
}

func (c *catalog) fail(msg string, args ...any) {
	c.retryAt = time.Now().Add(catalogRetry)
	c.conn.Close(context.Background())
	c.conn = nil
	c.ss.s.Log.Warn(msg, args...)
}

const catalogQuery = `select n.nspname, c.relname, a.attnum::text, a.attname
from pg_catalog.pg_class c
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
join pg_catalog.pg_attribute a on a.attrelid = c.oid
where c.oid = $1::oid and a.attnum > 0 and not a.attisdropped`

func (c *catalog) lookup(oid uint32) (*catTable, error) {
	timeout := c.ss.h.cfg.HandshakeTimeout
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.open(ctx); err != nil {
		return nil, err
	}
	rr := c.conn.ExecParams(ctx, catalogQuery, [][]byte{[]byte(strconv.FormatUint(uint64(oid), 10))}, nil, nil, nil)
	var t *catTable
	for rr.NextRow() {
		v := rr.Values()
		if t == nil {
			t = &catTable{schema: string(v[0]), name: string(v[1]), cols: map[int16]string{}}
		}
		n, err := strconv.ParseInt(string(v[2]), 10, 16)
		if err == nil {
			t.cols[int16(n)] = string(v[3])
		}
	}
	if _, err := rr.Close(); err != nil {
		c.fail("masking: catalog lookup failed", "table_oid", oid, "error", err)
		return nil, err
	}
	return t, nil
}

func (c *catalog) connect(ctx context.Context) (*pgconn.PgConn, error) {
	t := c.ss.target
	if authMode(t) == policy.AuthPassthrough {
		return nil, errors.New("passthrough authentication: the engine has no credentials of its own")
	}
	creds := t.CredentialsFor(c.ss.s.Identity.Roles)
	password, err := creds.Password()
	if err != nil {
		return nil, err
	}
	dst := c.ss.s.Identity.OrigDst
	cfg, err := pgconn.ParseConfig(connString(dst.Addr().String(), dst.Port(), creds.User, c.ss.up.database, t.TLS.Mode))
	if err != nil {
		return nil, err
	}
	cfg.Password = password
	cfg.DialFunc = c.ss.s.DialContext
	cfg.RuntimeParams = map[string]string{"application_name": "interlock-catalog"}
	cfg.ConnectTimeout = c.ss.h.cfg.HandshakeTimeout
	if err := applyTLS(cfg, t); err != nil {
		return nil, err
	}
	return pgconn.ConnectConfig(ctx, cfg)
}

func (c *catalog) close() {
	if c != nil && c.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c.conn.Close(ctx)
	}
}
