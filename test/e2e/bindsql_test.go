package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/interlockhq/interlock/test/harness"
)

// TestMaskingBindOfReusedName: a statement name the server still holds
// must not be bound or executed with the mask of a later statement of that
// name. Either the rows come masked, or (named protocol statements, which
// Interlock renames on the server) the later statement is the one that
// runs, or the name is refused.
func TestMaskingBindOfReusedName(t *testing.T) {
	e := setupMaskPG(t)
	const q = "select id, email, card, ssn, iban, phone, token, note from customers order by id"
	laterRuns := map[string]bool{"parse twice": true, "parse, then sql prepare, sql execute": true}
	refused := map[string]bool{"deallocate skipped in a failed transaction, then prepare": true}
	for name, steps := range map[string][]harness.PgxStep{
		"sql prepare": {
			{SQL: "prepare leak as " + q, Mode: "simple"},
			{Prepared: "leak"},
		},
		"parse twice": {
			{Parse: "leak", SQL: q},
			{Parse: "leak", SQL: "select 1, 2, 3, 4, 5, 6, 7, 8"},
			{Prepared: "leak"},
		},
		"skipped unnamed parse": {
			{Parse: "-", SQL: q},
			{SkipParse: true, SQL: "select 1, 2, 3, 4, 5, 6, 7, 8"},
			{Prepared: "-"},
		},
		"sql prepare twice, sql execute": {
			{SQL: "prepare leak as " + q, Mode: "simple"},
			{SQL: "prepare leak as select 1, 2, 3, 4, 5, 6, 7, 8", Mode: "simple"},
			{SQL: "execute leak", Mode: "simple"},
		},
		"parse, then sql prepare, sql execute": {
			{Parse: "leak", SQL: q},
			{SQL: "prepare leak as select 1, 2, 3, 4, 5, 6, 7, 8", Mode: "simple"},
			{SQL: "execute leak", Mode: "simple"},
		},
		"deallocate skipped in a failed transaction, then prepare": {
			{SQL: "prepare leak as " + q, Mode: "simple"},
			{SQL: "begin", Mode: "simple"},
			{SQL: "select 1/0", Mode: "simple"},
			{SQL: "deallocate leak", Mode: "simple"},
			{SQL: "rollback", Mode: "simple"},
			{SQL: "prepare leak as select 1, 2, 3, 4, 5, 6, 7, 8", Mode: "simple"},
			{SQL: "execute leak", Mode: "simple"},
		},
		"deallocate and prepare": {
			{Parse: "leak", SQL: "select 1, 2, 3, 4, 5, 6, 7, 8"},
			{SQL: "deallocate leak", Mode: "simple"},
			{SQL: "prepare leak as " + q, Mode: "simple"},
			{Prepared: "leak"},
		},
	} {
		connErr, res := harness.RunPgx(t, e.analyst, e.agentDSN(), steps...)
		if connErr != "" {
			t.Fatalf("connect: %s", connErr)
		}
		for i, r := range res {
			t.Logf("%s: step %d: %+v", name, i, r)
		}
		last := res[len(res)-1]
		if refused[name] {
			if last.Code != "42501" || len(last.Rows) != 0 {
				t.Errorf("%s: got %+v, want Interlock's refusal", name, last)
			}
			continue
		}
		if laterRuns[name] {
			if got := fmt.Sprint(last.Rows); got != "[[1 2 3 4 5 6 7 8]]" {
				t.Errorf("%s: got %s, want the later statement's row", name, got)
			}
			continue
		}
		checkMasked(t, name, fmt.Sprint(last.Rows))
	}
}

// TestBindOfUnknownNameRefused: a Bind of a name Interlock does not know
// (here deallocated) is refused by Interlock itself, with the server's
// "does not exist" code (clients prepare again), and the session goes on.
func TestBindOfUnknownNameRefused(t *testing.T) {
	e := setupMaskPG(t)
	connErr, res := harness.RunPgx(t, e.analyst, e.agentDSN(),
		harness.PgxStep{Parse: "gone", SQL: "select 1, 2, 3, 4, 5, 6, 7, 8"},
		harness.PgxStep{SQL: "deallocate gone", Mode: "simple"},
		harness.PgxStep{Prepared: "gone"},
		harness.PgxStep{SQL: "select 42", Mode: "simple"})
	if connErr != "" {
		t.Fatalf("connect: %s", connErr)
	}
	if len(res) != 4 || res[2].Code != "26000" || !strings.Contains(res[2].Message, "as far as Interlock knows") {
		t.Fatalf("bind of a deallocated name: %+v", res)
	}
	if res[3].Err != "" || fmt.Sprint(res[3].Rows) != "[[42]]" {
		t.Fatalf("the session is not usable after the refusal: %+v", res[3])
	}
}

// TestSentinelNameRefused: a refused statement is replaced by one naming
// interlock_blocked_<nonce>_<n>; an agent may not create a statement under
// such a name (which a refusal would then run), by SQL PREPARE or by Parse.
func TestSentinelNameRefused(t *testing.T) {
	e := setupMaskPG(t)
	out, err := psqlIn(t, e.analyst, e.agentDSN(), "-c", "prepare Interlock_Blocked_0011_1 as select 1")
	if err == nil || !strings.Contains(out, "which Interlock uses itself") {
		t.Errorf("SQL PREPARE under the sentinel prefix: %v\n%s", err, out)
	}
	connErr, res := harness.RunPgx(t, e.analyst, e.agentDSN(),
		harness.PgxStep{Parse: "interlock_blocked_0011_2", SQL: "select 1"},
		harness.PgxStep{SQL: "select 42", Mode: "simple"})
	if connErr != "" {
		t.Fatalf("connect: %s", connErr)
	}
	if len(res) != 2 || res[0].Code != "42501" || fmt.Sprint(res[1].Rows) != "[[42]]" {
		t.Errorf("Parse under the sentinel prefix: %+v", res)
	}
}
