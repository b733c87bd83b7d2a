package recording

import (
	"context"
	"slices"
	"testing"
	"time"
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
