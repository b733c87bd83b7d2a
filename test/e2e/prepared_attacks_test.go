package e2e

// Attacks on the relay's prepared statement and portal bookkeeping, found
// in a review: each tries to make the server run another statement (or
// cursor) than the one Interlock decided and masked. A scenario runs as a
// raw protocol client (pgconn for the startup, then hand-made messages)
// from a process in the masked agent's cgroup; the tests fail when raw
// values of masked columns reach the agent.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/interlockhq/interlock/test/harness"
)

const attackEnv = "INTERLOCK_E2E_ATTACK"

const attackQ = "select id, email, card, ssn, iban, phone, token, note from customers order by id"

type attackJob struct {
	DSN      string `json:"dsn"`
	Scenario string `json:"scenario"`
}

// rawClient speaks the protocol by hand over a pgconn connection.
type rawClient struct {
	fe  *pgproto3.Frontend
	log []string
}

func (c *rawClient) send(msgs ...pgproto3.FrontendMessage) {
	for _, m := range msgs {
		c.fe.Send(m)
	}
	if err := c.fe.Flush(); err != nil {
		c.log = append(c.log, "send error: "+err.Error())
	}
}

// until reads server messages until n ReadyForQuery (or stop returns
// true), logging each, and returns the rows.
func (c *rawClient) until(n int, stop func(pgproto3.BackendMessage) bool) [][]string {
	var rows [][]string
	for n > 0 {
		m, err := c.fe.Receive()
		if err != nil {
			c.log = append(c.log, "receive error: "+err.Error())
			return rows
		}
		switch m := m.(type) {
		case *pgproto3.DataRow:
			row := make([]string, len(m.Values))
			for i, v := range m.Values {
				row[i] = string(v)
			}
			rows = append(rows, row)
			c.log = append(c.log, "D "+strings.Join(row, " | "))
		case *pgproto3.ErrorResponse:
			c.log = append(c.log, "E "+m.Code+" "+m.Message)
		case *pgproto3.CommandComplete:
			c.log = append(c.log, "C "+string(m.CommandTag))
		case *pgproto3.ReadyForQuery:
			c.log = append(c.log, "Z "+string(m.TxStatus))
			n--
		default:
			c.log = append(c.log, fmt.Sprintf("%T", m))
		}
		if stop != nil && stop(m) {
			return rows
		}
	}
	return rows
}

var attackNonce = regexp.MustCompile(`interlock_stmt_([0-9a-f]+)_[0-9]+`)

// nonce learns the session's nonce (shared by interlock_stmt_ and
// interlock_blocked_) from pg_prepared_statements after a named Parse.
func (c *rawClient) nonce() string {
	c.send(&pgproto3.Parse{Name: "n0", Query: "select 1"}, &pgproto3.Sync{})
	c.until(1, nil)
	c.send(&pgproto3.Query{String: "select name from pg_prepared_statements"})
	rows := c.until(1, nil)
	for _, r := range rows {
		if m := attackNonce.FindStringSubmatch(strings.Join(r, " ")); m != nil {
			return m[1]
		}
	}
	return ""
}

// uName is name written as a U&"…" identifier whose first letter is
// escaped, so that the statement text never holds "interlock_".
func uName(name string) string {
	return `U&"\0069` + name[1:] + `"`
}

func attackScenario(c *rawClient, scenario string) {
	q := func(s string) { c.send(&pgproto3.Query{String: s}); c.until(1, nil) }
	switch scenario {
	case "stmt-hijack-deallocate":
		// The server-side name of the agent's statement "s1" is
		// interlock_stmt_<nonce>_1; SQL DEALLOCATE and PREPARE can reach it.
		c.send(&pgproto3.Parse{Name: "s1", Query: "select 1, 2, 3, 4, 5, 6, 7, 8"}, &pgproto3.Sync{})
		c.until(1, nil)
		nonce := c.nonce()
		c.log = append(c.log, "nonce "+nonce)
		name := "interlock_stmt_" + nonce + "_1"
		q("deallocate " + uName(name))
		q("prepare " + uName(name) + " as " + attackQ)
		c.send(&pgproto3.Bind{PreparedStatement: "s1"}, &pgproto3.Execute{}, &pgproto3.Sync{})
		c.until(1, nil)
	case "stmt-hijack-next":
		// The next Parse's server-side name is taken by a SQL PREPARE:
		// that Parse fails, and a Bind of its name reaches the PREPAREd
		// statement with the failed Parse's (empty) mask.
		nonce := c.nonce() // n0 is interlock_stmt_<nonce>_1
		q("prepare " + uName("interlock_stmt_"+nonce+"_2") + " as " + attackQ)
		c.send(&pgproto3.Parse{Name: "s2", Query: "select 1, 2, 3, 4, 5, 6, 7, 8"}, &pgproto3.Sync{})
		c.until(1, nil)
		c.send(&pgproto3.Bind{PreparedStatement: "s2"}, &pgproto3.Execute{}, &pgproto3.Sync{})
		c.until(1, nil)
	case "sentinel-hijack":
		// A refused Bind is replaced by a Bind of the statement
		// interlock_blocked_<nonce>_<seq>, which SQL PREPARE can create.
		nonce := c.nonce()
		// The unnamed portal gets an entry without a mask.
		c.send(&pgproto3.Parse{Query: "select 1"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
		c.until(1, nil)
		q("prepare " + uName("interlock_blocked_"+nonce+"_1") + " as " + attackQ)
		// Refused by Interlock (name unknown): the sentinel Bind runs.
		c.send(&pgproto3.Bind{PreparedStatement: "nosuch"}, &pgproto3.Execute{}, &pgproto3.Sync{})
		c.until(1, nil)
	case "cursor-stale-portal":
		// A portal name Interlock remembers without a mask (its portal
		// ended with its transaction) is reused by DECLARE CURSOR; a
		// protocol Execute of it returns the cursor's rows unmasked.
		c.send(&pgproto3.Parse{Query: "select 1"}, &pgproto3.Bind{DestinationPortal: "c"}, &pgproto3.Execute{Portal: "c"}, &pgproto3.Sync{})
		c.until(1, nil)
		q("declare c cursor with hold for " + attackQ)
		c.send(&pgproto3.Execute{Portal: "c"}, &pgproto3.Sync{})
		c.until(1, nil)
	case "cursor-failed-bind":
		// A Bind to a portal name a held cursor already has fails on the
		// server, but Interlock has already recorded the portal's mask.
		q("declare c cursor with hold for " + attackQ)
		c.send(&pgproto3.Parse{Query: "select 1"}, &pgproto3.Bind{DestinationPortal: "c"}, &pgproto3.Sync{})
		c.until(1, nil)
		c.send(&pgproto3.Execute{Portal: "c"}, &pgproto3.Sync{})
		c.until(1, nil)
	case "cursor-execute-direct":
		// A protocol Execute of a SQL cursor Interlock never bound: it
		// gets every mask the session can get, like FETCH.
		q("declare c cursor with hold for " + attackQ)
		c.send(&pgproto3.Execute{Portal: "c"}, &pgproto3.Sync{})
		c.until(1, nil)
	case "cursor-stale-plans", "cursor-stale-plans-text", "cursor-stale-plans-json":
		// A cursor executed through the protocol, then a cursor of the
		// same name over the masked query: it must be described again, not
		// masked by the first cursor's plans (binary int4, which passes;
		// text columns with other names, which no column rule matches;
		// json, where only string and number tokens are scanned).
		first := map[string]string{
			"cursor-stale-plans":      "declare c binary cursor for select 1, 2, 3, 4, 5, 6, 7, 8",
			"cursor-stale-plans-text": "declare c cursor for select 1 as a, 'x' as b, 'x' as c, 'x' as d, 'x' as e, 'x' as f, 'x' as g, 'x' as h",
			"cursor-stale-plans-json": "declare c cursor for select 1, '{}'::json, '{}'::json, '{}'::json, '{}'::json, '{}'::json, '{}'::json, '{}'::json",
		}[scenario]
		for _, declare := range []string{first, "declare c cursor for " + attackQ} {
			q("begin")
			q(declare)
			c.send(&pgproto3.Execute{Portal: "c"}, &pgproto3.Sync{})
			c.until(1, nil)
			q("commit")
		}
	case "extended-execute":
		// A protocol statement "EXECUTE foo" is decided at Parse with the
		// foo of that time; it runs whatever foo is at Execute.
		q("prepare foo as select 1, 2, 3, 4, 5, 6, 7, 8")
		c.send(&pgproto3.Parse{Name: "e", Query: "execute foo"}, &pgproto3.Sync{})
		c.until(1, nil)
		q("deallocate foo")
		q("prepare foo as " + attackQ)
		c.send(&pgproto3.Bind{PreparedStatement: "e"}, &pgproto3.Execute{}, &pgproto3.Sync{})
		c.until(1, nil)
	case "copy-swallowed-query":
		// A Query sent during COPY FROM STDIN is consumed by the server
		// (protocol violation error, one ReadyForQuery) but Interlock
		// queued an answer for it: every later answer is taken for the
		// request before it.
		c.send(&pgproto3.Query{String: "copy customers (id, email) from stdin"})
		c.until(1, func(m pgproto3.BackendMessage) bool { _, ok := m.(*pgproto3.CopyInResponse); return ok })
		c.send(&pgproto3.Query{String: "select 1, 2, 3, 4, 5, 6, 7, 8"})
		c.until(1, nil)
		c.send(&pgproto3.Query{String: attackQ})
		c.until(1, nil)
	case "deallocate-skipped-extended":
		// A Query sent after a failing Parse, before the Sync, is
		// discarded by the server (it ignores everything until Sync), but
		// Interlock counts only Query/Sync/FunctionCall as outstanding and
		// takes the DEALLOCATE as certain: the name leaves its table while
		// the server still holds it.
		q("prepare foo as " + attackQ)
		c.send(&pgproto3.Parse{Query: "select * from no_such_table"}, &pgproto3.Query{String: "deallocate foo"}, &pgproto3.Sync{})
		c.until(1, nil)
		q("prepare foo as select 1, 2, 3, 4, 5, 6, 7, 8")
		q("execute foo")
	case "deallocate-version-skew":
		// Interlock parses with PostgreSQL 17's grammar (pg_query_go v6);
		// a later statement of the query that an older server cannot
		// parse makes the server reject the whole string, so the
		// "certain" first-statement DEALLOCATE never runs.
		q("prepare foo as " + attackQ)
		q("deallocate foo; select json_object('a': 1)")
		q("prepare foo as select 1, 2, 3, 4, 5, 6, 7, 8")
		q("execute foo")
	case "regression-sql-deallocate-of-parsed":
		// psycopg 3 and Rails drop the statements they Parse'd with SQL
		// DEALLOCATE <name>; renamed on the server, the name is not there.
		c.send(&pgproto3.Parse{Name: "_pg3_0", Query: "select 1"}, &pgproto3.Sync{})
		c.until(1, nil)
		q("begin")
		q("deallocate _pg3_0")
		q("select 42")
		q("commit")
	default:
		c.log = append(c.log, "unknown scenario "+scenario)
	}
}

// maybeAttackChild runs a scenario and exits when this process is the
// child runAttack starts (TestMain calls it first).
func maybeAttackChild() {
	spec := os.Getenv(attackEnv)
	if spec == "" {
		return
	}
	var job attackJob
	if err := json.Unmarshal([]byte(spec), &job); err != nil {
		fmt.Println(`["bad job"]`)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, job.DSN)
	if err != nil {
		json.NewEncoder(os.Stdout).Encode([]string{"connect: " + err.Error()})
		os.Exit(0)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.Conn().SetDeadline(dl)
	}
	c := &rawClient{fe: conn.Frontend()}
	attackScenario(c, job.Scenario)
	c.send(&pgproto3.Terminate{})
	json.NewEncoder(os.Stdout).Encode(c.log)
	os.Exit(0)
}

func runAttack(t *testing.T, e *maskEnv, scenario string) []string {
	t.Helper()
	spec, _ := json.Marshal(attackJob{DSN: e.agentDSN(), Scenario: scenario})
	cmd := harness.Command(t, e.analyst, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), attackEnv+"="+string(spec))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var log []string
	if err := json.Unmarshal(out, &log); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	return log
}

func attackCheck(t *testing.T, e *maskEnv, scenario string) {
	t.Helper()
	log := runAttack(t, e, scenario)
	all := strings.Join(log, "\n")
	t.Logf("%s:\n%s", scenario, all)
	for _, raw := range maskRaw {
		if strings.Contains(all, raw) {
			t.Errorf("%s: the agent saw the raw value %q", scenario, raw)
		}
	}
}

func TestPreparedAttackStmtHijackDeallocate(t *testing.T) {
	attackCheck(t, setupMaskPG(t), "stmt-hijack-deallocate")
}

func TestPreparedAttackStmtHijackNext(t *testing.T) {
	attackCheck(t, setupMaskPG(t), "stmt-hijack-next")
}

func TestPreparedAttackSentinelHijack(t *testing.T) {
	attackCheck(t, setupMaskPG(t), "sentinel-hijack")
}

func TestPreparedAttackCursorStalePortal(t *testing.T) {
	attackCheck(t, setupMaskPG(t), "cursor-stale-portal")
}

func TestPreparedAttackCursorFailedBind(t *testing.T) {
	attackCheck(t, setupMaskPG(t), "cursor-failed-bind")
}

func TestPreparedAttackCursorExecuteDirect(t *testing.T) {
	log := runAttack(t, setupMaskPG(t), "cursor-execute-direct")
	all := strings.Join(log, "\n")
	t.Logf("\n%s", all)
	for _, raw := range maskRaw {
		if strings.Contains(all, raw) {
			t.Errorf("the agent saw the raw value %q", raw)
		}
	}
	if !strings.Contains(all, "[REDACTED:") {
		t.Errorf("no masked rows: the scenario did not run")
	}
}

func TestPreparedAttackExtendedExecute(t *testing.T) {
	attackCheck(t, setupMaskPG(t), "extended-execute")
}

func TestPreparedAttackCopySwallowedQuery(t *testing.T) {
	attackCheck(t, setupMaskPG(t), "copy-swallowed-query")
}

func TestPreparedAttackDeallocateSkippedExtended(t *testing.T) {
	attackCheck(t, setupMaskPG(t), "deallocate-skipped-extended")
}

// TestPreparedAttackRegressionSQLDeallocateOfParsed: a client that drops its
// protocol-level statement with SQL DEALLOCATE (psycopg 3's cache
// eviction, Rails' statement pool) keeps working although the server knows
// the statement by Interlock's name: the DEALLOCATE is rewritten to it.
func TestPreparedAttackRegressionSQLDeallocateOfParsed(t *testing.T) {
	log := runAttack(t, setupMaskPG(t), "regression-sql-deallocate-of-parsed")
	all := strings.Join(log, "\n")
	t.Logf("\n%s", all)
	if strings.Contains(all, "\nE ") {
		t.Errorf("SQL DEALLOCATE of a Parse'd statement failed")
	}
}

// TestPreparedAttackDeallocateVersionSkew: a DEALLOCATE followed by a
// statement only the classifier's newer grammar accepts (the server
// rejects the whole string; the e2e server is PostgreSQL 15).
func TestPreparedAttackDeallocateVersionSkew(t *testing.T) {
	attackCheck(t, setupMaskPG(t), "deallocate-version-skew")
}

// A cursor executed through the protocol is described again at every
// Execute: a later cursor of the same name over a masked query must not be
// masked by the first one's columns (binary int4, text, json).
func TestPreparedAttackCursorStalePlans(t *testing.T) {
	attackCheck(t, setupMaskPG(t), "cursor-stale-plans")
}

func TestPreparedAttackCursorStalePlansText(t *testing.T) {
	attackCheck(t, setupMaskPG(t), "cursor-stale-plans-text")
}

func TestPreparedAttackCursorStalePlansJSON(t *testing.T) {
	attackCheck(t, setupMaskPG(t), "cursor-stale-plans-json")
}
