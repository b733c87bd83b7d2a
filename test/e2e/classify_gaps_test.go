package e2e

import (
	"strings"
	"testing"

	"github.com/interlockhq/interlock/test/harness"
)

// TestClassifierGapsRefused: statements a review found getting past the
// policy through gaps in the classifier or the function categories are
// refused, end to end against PostgreSQL 15.
func TestClassifierGapsRefused(t *testing.T) {
	e := setupPG(t, "")
	// A zero-argument function whose name PostgreSQL 17 reserves: on an
	// older server merge_action() calls it.
	e.sql(t, `create function public.merge_action() returns text language sql security definer
	           as 'select v from secrets limit 1'`)
	e.sql(t, "analyze secrets") // planner statistics now hold its values

	run := func(cg string, steps ...harness.PgxStep) []harness.PgxResult {
		t.Helper()
		connErr, res := harness.RunPgx(t, cg, e.dsn("127.0.0.1"), steps...)
		if connErr != "" {
			t.Fatalf("connect: %s", connErr)
		}
		return res
	}
	for _, c := range []struct{ agent, cg, sql, why string }{
		{"writer", e.writer, "select pg_read_file_old('/etc/hostname', 0, 200)", "pg_read_file under its PostgreSQL 15 name"},
		{"writer", e.writer, "select pg_read_file_old(pg_relation_filepath('secrets'), 8176, 12)", "a table's heap file"},
		{"writer", e.writer, "select * from pg_hba_file_rules", "pg_hba.conf through its view"},
		{"writer", e.writer, "select * from pg_file_settings", "postgresql.conf through its view"},
		{"writer", e.writer, "select pg_switch_wal() is not null", "admin functions (the test policy's rule no longer ORs the category)"},
		{"writer", e.writer, "set session_replication_role = replica", "switches off triggers and foreign keys"},
		{"writer", e.writer, "set log_statement = 'none'", "hides the session from the server's log"},
		{"writer", e.writer, "create unique index on orders (customer)", "an unnamed index is an index"},
		{"analyst", e.analyst, "select merge_action()", "a function call on PostgreSQL 15"},
		{"analyst", e.analyst, "select histogram_bounds::text from pg_stats where tablename = 'secrets'", "planner statistics hold every table's values"},
		{"writer", e.writer, "select rolpassword from pg_authid", "password hashes"},
	} {
		r := run(c.cg, harness.PgxStep{SQL: c.sql, Mode: "simple"})[0]
		if r.Code != "42501" || !strings.Contains(r.Message, "Interlock") {
			t.Errorf("%s: %q (%s): %+v, want Interlock's refusal", c.agent, c.sql, c.why, r)
		}
	}
	// Still allowed: the statistics of a session's own use (pg_stat_user_tables
	// holds counts, not values) and sequences by name.
	if r := run(e.writer, harness.PgxStep{SQL: "select count(*) from pg_stat_user_tables", Mode: "simple"})[0]; r.Err != "" {
		t.Errorf("pg_stat_user_tables: %+v", r)
	}
}
