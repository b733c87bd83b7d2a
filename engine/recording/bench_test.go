package recording

import (
	"context"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// BenchmarkAppend measures one statement's record append as a session
// makes it (encode, hand to the writer, chain, hash, write, release),
// without the sync: the store skips fdatasync. Reports the p50.
func BenchmarkAppend(b *testing.B) {
	st, err := OpenFiles(FilesConfig{Dir: b.TempDir(), Log: quietLog(), noSync: true})
	if err != nil {
		b.Fatal(err)
	}
	r := openRecorder(b, st, nil)
	defer r.Close()
	s := testSession("bench")
	r.SessionStarted(s)
	l, _ := r.Session(s)
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		st := &Statement{Path: "simple", Text: "SELECT abalance FROM pgbench_accounts WHERE aid = $1", Redaction: RedactParameters,
			Fingerprint: "0123456789abcdef0123456789abcdef", TextBytes: 55, Action: "select",
			Objects: []Object{{Kind: "table", Name: "public.pgbench_accounts", Action: "select"}},
			Verdict: "allow", Rule: "read", Forwarded: true}
		t0 := time.Now()
		if err := l.Statement(ctx, st, true); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
}

// BenchmarkGroupCommit: 8 sessions append statements as fast as their
// syncs allow (real fdatasync/O_DSYNC on the test's temporary directory).
// Reports the statement latency p50 and records per sync.
func BenchmarkGroupCommit(b *testing.B) {
	dir := os.Getenv("INTERLOCK_RECORDING_BENCH_DIR") // default: the test's temp dir
	if dir == "" {
		dir = b.TempDir()
	} else {
		dir, _ = os.MkdirTemp(dir, "rec-bench-")
		defer os.RemoveAll(dir)
	}
	st, err := OpenFiles(FilesConfig{Dir: dir, Log: quietLog()})
	if err != nil {
		b.Fatal(err)
	}
	m := NewMetrics(nil)
	r := openRecorder(b, st, func(c *Config) { c.Metrics = m })
	defer r.Close()
	const sessions = 8
	per := max(b.N/sessions, 1)
	lats := make([][]time.Duration, sessions)
	var wg sync.WaitGroup
	b.ResetTimer()
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := testSession("bench")
			r.SessionStarted(s)
			l, _ := r.Session(s)
			for range per {
				t0 := time.Now()
				l.Statement(context.Background(), &Statement{Text: "SELECT abalance FROM pgbench_accounts WHERE aid = $1", Verdict: "allow", Forwarded: true}, true)
				lats[i] = append(lats[i], time.Since(t0))
				l.Completed(&Result{Tag: "SELECT 1"})
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	slices.Sort(all)
	var d dto.Metric
	m.Sync.(prometheus.Metric).Write(&d)
	h := d.GetHistogram()
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(len(all))/float64(h.GetSampleCount()), "stmts/sync")
	b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount())*1e6, "sync-µs")
}
