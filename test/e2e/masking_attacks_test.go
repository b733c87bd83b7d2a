package e2e

import (
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/interlockhq/interlock/test/harness"
)

// Attacks on result masking found in a review, each of which returned raw
// values of masked columns before its fix. The policy is setupMaskPG's:
// customers.phone partial, public.customers.nickname hash, *.ssn redact;
// detectors email, card, iban, api_token, ssn (no phone detector).

// TestMaskingAttackBinaryArraysAndRecords: values of non-text types in
// binary format are never scanned by the detectors (engine/masking
// KindBinary: Plan.Detect is false), and an expression has no column
// rule. pgx's default mode (cached statements) asks for binary results of
// every type it knows, text[] and record included, so one ordinary query
// reads every masked value of the table in clear, SSN column rule and
// detectors alike. psql (text format) gets NULL for the same query.
func TestMaskingAttackBinaryArraysAndRecords(t *testing.T) {
	e := setupMaskPG(t)
	for _, q := range []string{
		"select array[email, card, ssn, iban, token, phone, nickname] from customers order by id",
		"select row(email, card, ssn, iban, token, phone, nickname) from customers order by id",
		"select array_agg(email) from customers",
	} {
		connErr, res := harness.RunPgx(t, e.analyst, e.agentDSN(), harness.PgxStep{SQL: q, Mode: "cache"})
		if connErr != "" {
			t.Fatalf("pgx connect: %s", connErr)
		}
		got := fmt.Sprintf("%+v", res)
		for _, raw := range append(maskRaw, "+1 (555) 123-4567") {
			if strings.Contains(got, raw) {
				t.Errorf("pgx (binary) %s: the agent read %q\n%s", q, raw, got)
				break
			}
		}
	}
}

// TestMaskingAttackCommaJoinedValues: the numeric detectors skip a
// candidate next to ",<digit>" (a "longer number"), and PostgreSQL joins
// values with bare commas in array and composite literals. A whole row
// cast to text, an array or a comma-joined aggregate of the SSN column
// (which the docs say to pair with the ssn detector for derived values)
// comes back in clear through psql, text format.
func TestMaskingAttackCommaJoinedValues(t *testing.T) {
	e := setupMaskPG(t)
	for _, q := range []string{
		"select c::text from customers c where id = 2",     // (2,…,5500-0000-0000-0004,234-56-7890,…)
		"select array_agg(ssn order by id) from customers", // {123-45-6789,234-56-7890}
		"select string_agg(ssn, ',' order by id) from customers",
		"select string_agg(card, ',' order by id) from customers",
	} {
		out, err := psqlIn(t, e.analyst, e.agentDSN(), "-At", "-c", q)
		if err != nil {
			t.Fatalf("%s: %v\n%s", q, err, out)
		}
		for _, raw := range []string{"123-45-6789", "234-56-7890", "5500-0000-0000-0004", "4111 1111 1111 1111"} {
			if strings.Contains(out, raw) {
				t.Errorf("%s: the agent read %q\n%s", q, raw, out)
			}
		}
	}
}

// TestMaskingAttackCatalogExhaustion: column rules that name a table
// (customers.phone, public.customers.nickname) need the catalog connection
// the engine opens at the first masked result of a session. The agent can
// make that connection fail: its own sessions use the injected (here
// superuser) credentials, so it can hold every server connection slot,
// reserved ones included, while its attack session reads its first masked
// result. Columns the relay cannot name must then be NULL, not raw.
func TestMaskingAttackCatalogExhaustion(t *testing.T) {
	e := setupMaskPG(t)
	attack := harness.Command(t, e.analyst, "psql", "-X", "-At", "-d", e.agentDSN())
	stdin, err := attack.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out harness.SyncBuffer
	attack.Stdout, attack.Stderr = &out, &out
	if err := attack.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { attack.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			attack.Process.Kill()
		}
	}()
	waitOut := func(what string) bool {
		return harness.WaitFor(30*time.Second, func() bool { return strings.Contains(out.String(), what) })
	}
	io.WriteString(stdin, "select 'connected';\n")
	if !waitOut("connected") {
		t.Fatalf("attack session:\n%s", out.String())
	}

	// Hold every other connection slot from the agent's cgroup.
	// Idle sessions whose psql waits on stdin: closing it ends them.
	var fillers []*exec.Cmd
	var fillerIn []io.Closer
	defer func() {
		for _, in := range fillerIn {
			in.Close()
		}
		for _, f := range fillers {
			f.Wait()
		}
	}()
	for range 210 {
		f := harness.Command(t, e.analyst, "psql", "-X", "-q", "-d", e.agentDSN())
		in, err := f.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Start(); err != nil {
			t.Fatal(err)
		}
		fillers, fillerIn = append(fillers, f), append(fillerIn, in)
	}
	full := harness.WaitFor(60*time.Second, func() bool {
		o, err := exec.Command("psql", "-X", "-At", "-d", e.pg.DSN("127.0.0.1"), "-c", "select 1").CombinedOutput()
		return err != nil && strings.Contains(string(o), "too many clients")
	})
	if !full {
		t.Fatalf("could not fill the server's connection slots")
	}

	io.WriteString(stdin, "select 'q1', phone, nickname from customers where id = 1;\n")
	if !waitOut("q1|") {
		t.Fatalf("masked read:\n%s", out.String())
	}
	// COPY with a column list names its columns from the catalog too:
	// the session ends rather than the relay sending them by output name
	// (which is why it comes last).
	io.WriteString(stdin, "copy customers (phone, nickname) to stdout;\n")
	if !waitOut("connection to server was lost") {
		t.Errorf("COPY with the catalog unavailable: want the session ended\n%s", out.String())
	}
	for _, in := range fillerIn {
		in.Close()
	}
	for _, f := range fillers {
		f.Wait()
	}
	fillers, fillerIn = nil, nil
	got := out.String()
	for _, raw := range []string{"+1 (555) 123-4567", "+44 20 7946 0958", "|ali"} {
		if strings.Contains(got, raw) {
			t.Errorf("with the catalog connection refused, the agent read %q:\n%s", raw, got)
		}
	}
}
