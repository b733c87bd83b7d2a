package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// TestMaskingCatalogLeaksRefused: the mask policy allows reads of
// pg_catalog.* (clients need them), but the planner statistics hold the
// raw values of masked columns (most_common_vals, histogram_bounds, once
// the table is analyzed, as autovacuum does on its own) and
// pg_stat_activity shows other sessions' statement text with its literals.
// In a session whose results are masked, those reads are refused, and
// the session goes on. (Found by red-teaming: both leaked before.)
func TestMaskingCatalogLeaksRefused(t *testing.T) {
	e := setupMaskPG(t)
	if out, err := exec.Command("psql", "-X", "-d", e.pg.DSN("127.0.0.1"), "-c", "analyze customers").CombinedOutput(); err != nil {
		t.Fatalf("analyze: %v\n%s", err, out)
	}
	for _, q := range []string{
		"select attname, most_common_vals::text, histogram_bounds::text from pg_stats where tablename = 'customers'",
		"select stavalues1::text from pg_catalog.pg_statistic",
		"select query from pg_stat_activity",
		"select * from pg_stat_get_activity(null)",
		"select 1; select most_common_vals::text from pg_stats",
	} {
		out, err := psqlIn(t, e.analyst, e.agentDSN(), "-At", "-c", q)
		// Refused by the masking check, or already by the policy: the
		// statistics read as table "*" (every table's values).
		if err == nil || !(strings.Contains(out, "is not readable in a session whose results are masked") || strings.Contains(out, "on table *")) {
			t.Errorf("%s: want a refusal, got %v\n%s", q, err, out)
		}
		for _, raw := range []string{"123-45-6789", "alice@example.com", "+1 (555) 123-4567"} {
			if strings.Contains(out, raw) {
				t.Errorf("%s: the agent read the masked value %q", q, raw)
			}
		}
	}
	// Other catalog reads still work (psql's \d needs them).
	if out, err := psqlIn(t, e.analyst, e.agentDSN(), "-At", "-c", "select relname from pg_class where relname = 'customers'"); err != nil || strings.TrimSpace(out) != "customers" {
		t.Errorf("pg_class: %v\n%s", err, out)
	}
}
