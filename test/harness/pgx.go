package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
)

// pgxEnv makes a test binary act as a pgx client inside a cgroup: the
// steps run in order on one connection and the results come back as JSON.
const pgxEnv = "INTERLOCK_TEST_PGX"

// PgxStep is one thing the pgx client does.
type PgxStep struct {
	SQL  string `json:"sql,omitempty"`
	Args []any  `json:"args,omitempty"`
	// Mode is the pgx query exec mode: "cache" (named prepared statements,
	// binary results; the default), "exec" (unnamed statements), "describe",
	// or "simple" (simple protocol, text).
	Mode string `json:"mode,omitempty"`
	// Batch sends these statements pipelined in one pgx.Batch.
	Batch []string `json:"batch,omitempty"`
	// CopyTable, CopyColumns and CopyRows run COPY FROM STDIN via pgx.
	CopyTable   string   `json:"copy_table,omitempty"`
	CopyColumns []string `json:"copy_columns,omitempty"`
	CopyRows    [][]any  `json:"copy_rows,omitempty"`
	// TimeoutMS cancels the step's context after this long (pgx then sends
	// a CancelRequest).
	TimeoutMS int `json:"timeout_ms,omitempty"`
	// Prepared binds and executes this named prepared statement with Args
	// (as text) without parsing it first: Bind, Describe, Execute, Sync.
	Prepared string `json:"prepared,omitempty"`
	// Parse prepares SQL under this statement name (Parse, Describe,
	// Sync) without executing it.
	Parse string `json:"parse,omitempty"`
	// SkipParse sends, in one pipeline, a Parse that fails and then a
	// Parse of SQL as the unnamed statement (which the server skips).
	SkipParse bool `json:"skip_parse,omitempty"`
}

// PgxResult is what one step returned.
type PgxResult struct {
	Rows    [][]string `json:"rows,omitempty"`
	Tag     string     `json:"tag,omitempty"`
	Code    string     `json:"code,omitempty"` // SQLSTATE of a server error
	Message string     `json:"message,omitempty"`
	Err     string     `json:"err,omitempty"` // any error
	MS      int64      `json:"ms"`
}

type pgxJob struct {
	DSN   string    `json:"dsn"`
	Steps []PgxStep `json:"steps"`
}

// MaybePgx is called first in TestMain; when the process was started by
// RunPgx it runs the steps and exits.
func MaybePgx() {
	spec := os.Getenv(pgxEnv)
	if spec == "" {
		return
	}
	var job pgxJob
	if err := json.Unmarshal([]byte(spec), &job); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var out struct {
		Connect string      `json:"connect"`
		Results []PgxResult `json:"results"`
	}
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(job.DSN)
	if err == nil {
		// A cancelled context sends a real CancelRequest, as libpq does.
		cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
			return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: 3 * time.Second}
		}
	}
	var conn *pgx.Conn
	if err == nil {
		conn, err = pgx.ConnectConfig(ctx, cfg)
	}
	if err != nil {
		out.Connect = err.Error()
	} else {
		for _, s := range job.Steps {
			out.Results = append(out.Results, runStep(ctx, conn, s))
		}
		conn.Close(ctx)
	}
	json.NewEncoder(os.Stdout).Encode(out)
	os.Exit(0)
}

func runStep(ctx context.Context, conn *pgx.Conn, s PgxStep) (res PgxResult) {
	start := time.Now()
	defer func() { res.MS = time.Since(start).Milliseconds() }()
	if s.TimeoutMS > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(s.TimeoutMS)*time.Millisecond)
		defer cancel()
	}
	fail := func(err error) PgxResult {
		res.Err = err.Error()
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			res.Code, res.Message = pe.Code, pe.Message
		}
		return res
	}
	switch {
	case s.SkipParse:
		pl := conn.PgConn().StartPipeline(ctx)
		pl.SendPrepare("bad", "select * from no_such_table", nil)
		pl.SendPrepare("", s.SQL, nil)
		pl.SendPipelineSync()
		pl.Flush()
		for {
			r, err := pl.GetResults()
			if err != nil {
				res.Message += err.Error() + "; "
			}
			if _, ok := r.(*pgconn.PipelineSync); ok {
				break
			}
			if r == nil && err == nil {
				break
			}
		}
		pl.Close()
		return res
	case s.Parse != "":
		if _, err := conn.PgConn().Prepare(ctx, strings.TrimPrefix(s.Parse, "-"), s.SQL, nil); err != nil {
			return fail(err)
		}
		return res
	case s.Prepared != "":
		params := make([][]byte, len(s.Args))
		for i, a := range s.Args {
			params[i] = []byte(fmt.Sprint(a))
		}
		rr := conn.PgConn().ExecPrepared(ctx, strings.TrimPrefix(s.Prepared, "-"), params, nil, nil).Read()
		for _, row := range rr.Rows {
			out := make([]string, len(row))
			for i, v := range row {
				out[i] = string(v)
			}
			res.Rows = append(res.Rows, out)
		}
		if rr.Err != nil {
			return fail(rr.Err)
		}
		res.Tag = rr.CommandTag.String()
		return res
	case s.CopyTable != "":
		n, err := conn.CopyFrom(ctx, pgx.Identifier{s.CopyTable}, s.CopyColumns, pgx.CopyFromRows(s.CopyRows))
		if err != nil {
			return fail(err)
		}
		res.Tag = fmt.Sprintf("COPY %d", n)
		return res
	case len(s.Batch) > 0:
		b := &pgx.Batch{}
		for _, q := range s.Batch {
			b.Queue(q)
		}
		br := conn.SendBatch(ctx, b)
		for range s.Batch {
			rows, err := br.Query()
			if err != nil {
				br.Close()
				return fail(err)
			}
			for rows.Next() {
				res.Rows = append(res.Rows, rowStrings(rows))
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				br.Close()
				return fail(err)
			}
		}
		if err := br.Close(); err != nil {
			return fail(err)
		}
		return res
	}
	args := append([]any{queryMode(s.Mode)}, s.Args...)
	rows, err := conn.Query(ctx, s.SQL, args...)
	if err != nil {
		return fail(err)
	}
	for rows.Next() {
		res.Rows = append(res.Rows, rowStrings(rows))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	res.Tag = rows.CommandTag().String()
	return res
}

func queryMode(m string) pgx.QueryExecMode {
	switch m {
	case "exec":
		return pgx.QueryExecModeExec
	case "describe":
		return pgx.QueryExecModeDescribeExec
	case "simple":
		return pgx.QueryExecModeSimpleProtocol
	}
	return pgx.QueryExecModeCacheStatement
}

func rowStrings(rows pgx.Rows) []string {
	vals, err := rows.Values()
	if err != nil {
		return []string{"<" + err.Error() + ">"}
	}
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = fmt.Sprint(v)
	}
	return out
}

// RunPgx runs steps with pgx from a process inside cgroupPath and returns
// the connect error (if any) and one result per step.
func RunPgx(t testing.TB, cgroupPath, dsn string, steps ...PgxStep) (string, []PgxResult) {
	t.Helper()
	spec, err := json.Marshal(pgxJob{DSN: dsn, Steps: steps})
	if err != nil {
		t.Fatal(err)
	}
	cmd := Command(t, cgroupPath, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), pgxEnv+"="+string(spec))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pgx helper in %s: %v (%s)", cgroupPath, err, errOutput(err))
	}
	var res struct {
		Connect string      `json:"connect"`
		Results []PgxResult `json:"results"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("pgx helper output %q: %v", out, err)
	}
	return res.Connect, res.Results
}
