package postgres

import (
	"strconv"
	"testing"
)

// benchJoin is a typical three-table join of an application query.
const benchJoin = `SELECT o.id, c.name, sum(i.amount) FROM orders o JOIN customers c ON c.id = o.customer_id JOIN items i ON i.order_id = o.id WHERE o.created_at > now() - interval '1 day' AND c.region = 'eu' GROUP BY o.id, c.name ORDER BY 3 DESC LIMIT 10`

// BenchmarkClassifyHit is the per-statement cost once a text is cached.
func BenchmarkClassifyHit(b *testing.B) {
	c := NewClassifier(1024)
	if _, err := c.Classify(benchJoin); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Classify(benchJoin); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClassifyHitParallel is the cache under contention.
func BenchmarkClassifyHitParallel(b *testing.B) {
	c := NewClassifier(1024)
	if _, err := c.Classify(benchJoin); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Classify(benchJoin); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkClassifyMissJoin is a full parse and walk of the join (cache
// disabled).
func BenchmarkClassifyMissJoin(b *testing.B) {
	c := NewClassifier(0)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Classify(benchJoin); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClassifyMissVaried misses a live cache with a new text each time,
// as simple-protocol queries with inline string literals do.
func BenchmarkClassifyMissVaried(b *testing.B) {
	c := NewClassifier(1024)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := c.Classify("SELECT abalance FROM pgbench_accounts WHERE filler = '" + strconv.Itoa(i) + "'"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClassifyNormalizedHit is pgbench -S on the simple protocol: a
// new integer each time, found under the normalized key.
func BenchmarkClassifyNormalizedHit(b *testing.B) {
	c := NewClassifier(1024)
	texts := make([]string, 4096)
	for i := range texts {
		texts[i] = "SELECT abalance FROM pgbench_accounts WHERE aid = " + strconv.Itoa(i*7919%100000+1) + ";"
	}
	if _, err := c.Classify(texts[0]); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		cl, err := c.Classify(texts[i%len(texts)])
		if err != nil {
			b.Fatal(err)
		}
		if len(cl.Statements) != 1 {
			b.Fatal("want one statement")
		}
	}
	if n := c.cache.len(); n > 2 {
		b.Fatalf("%d cache entries, want the normalized one and texts[0]", n)
	}
}

// BenchmarkLiteralKey is the scan a normalized lookup pays.
func BenchmarkLiteralKey(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := literalKey(benchJoin); !ok {
			b.Fatal("not normalized")
		}
	}
}
