package masking

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/interlockhq/interlock/engine/policy"
)

// detCase is one detector test: the substrings of in the detector must find
// (none for a negative case).
type detCase struct {
	in   string
	want []string
}

// find returns the matches of the detectors in on.
func find(on detSet, s string) []hit {
	sc := newScanner([]byte(s), 0, on)
	var hits []hit
	for h, ok := sc.next(); ok; h, ok = sc.next() {
		hits = append(hits, h)
	}
	return hits
}

// texts returns what the hits of detector d matched.
func texts(s string, hits []hit, d policy.Detector) []string {
	var out []string
	for _, h := range hits {
		if h.det == d {
			out = append(out, s[h.start:h.end])
		}
	}
	return out
}

// testDetector runs the cases with only detector d on, then with every
// detector on (another detector must not take d's matches).
func testDetector(t *testing.T, d policy.Detector, pos, neg []detCase) {
	t.Helper()
	if len(pos) < 10 || len(neg) < 10 {
		t.Errorf("%s: %d positive and %d negative cases, want at least 10 each", d, len(pos), len(neg))
	}
	run := func(name string, cases []detCase) {
		for _, c := range cases {
			alone := texts(c.in, find(1<<d, c.in), d)
			all := texts(c.in, find(allDetectors, c.in), d)
			if !slices.Equal(alone, c.want) {
				t.Errorf("%s %s: %q: found %q, want %q", d, name, c.in, alone, c.want)
			}
			if !slices.Equal(all, c.want) {
				t.Errorf("%s %s with all detectors: %q: found %q, want %q", d, name, c.in, all, c.want)
			}
		}
	}
	run("positive", pos)
	run("negative", neg)
}

// one is a positive case whose whole input is the match.
func one(s string) detCase { return detCase{s, []string{s}} }

// in is a positive case matching m inside s.
func in(s string, m ...string) detCase { return detCase{s, m} }

// none is a negative case.
func none(s string) detCase { return detCase{s, nil} }

func TestScannerLinear(t *testing.T) {
	// Inputs built to make a naive scanner quadratic must still scan fast:
	// each costs a bounded amount of work per byte.
	for _, s := range []string{
		strings.Repeat("a.", 1<<16) + "@",
		strings.Repeat("a@b", 1<<15),
		strings.Repeat("1 ", 1<<16),
		strings.Repeat("0 1", 1<<15),
		strings.Repeat("eyJ.", 1<<15),
		strings.Repeat("-----BEGIN RSA PRIVATE KEY-----", 1<<12),
		strings.Repeat("ghp_", 1<<15),
		strings.Repeat("1:", 1<<16),
		strings.Repeat("A", 1<<17),
		strings.Repeat("4111 ", 1<<15),
		strings.Repeat("+1", 1<<16),
	} {
		start := time.Now()
		sc := newScanner([]byte(s), 0, allDetectors)
		for _, ok := sc.next(); ok; _, ok = sc.next() {
		}
		// Linear: milliseconds. Quadratic: minutes.
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%q…: %v for %d bytes", s[:min(len(s), 16)], d, len(s))
		}
	}
}

func TestNoOverlaps(t *testing.T) {
	s := "alice@example.com 4111 1111 1111 1111 123-45-6789 +1 (555) 123-4567 10.0.0.1 fe80::1 " +
		"DE89 3704 0044 0532 0130 00 AKIAIOSFODNN7EXAMPLE ghp_" + strings.Repeat("aB3", 12)
	hits := find(allDetectors, s)
	want := []policy.Detector{
		policy.DetectorEmail, policy.DetectorCard, policy.DetectorSSN, policy.DetectorPhone,
		policy.DetectorIP, policy.DetectorIP, policy.DetectorIBAN, policy.DetectorAWSKey, policy.DetectorAPIToken,
	}
	var got []policy.Detector
	for k, h := range hits {
		got = append(got, h.det)
		if k > 0 && h.start < hits[k-1].end {
			t.Errorf("hit %d overlaps the previous one", k)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("detectors = %v, want %v", got, want)
	}
}

// TestPrecisionCorpus: ordinary values of logs and tables that look a bit
// like sensitive ones are left alone.
func TestPrecisionCorpus(t *testing.T) {
	for _, s := range []string{
		"2024-03-15T10:30:00.123Z",
		"epoch 1710498600, in ms 1710498600123, in ns 1710498600123456789",
		"id 550e8400-e29b-41d4-a716-446655440000",
		"commit 3f9a2c1e7b5d4a6f8e9c0b1a2d3e4f5a6b7c8d9e, secret rotation",
		"version 1.12.3-rc.1+build.5",
		"amount 1234567.89 EUR, 1,234,567.89 USD",
		"ISBN 978-3-16-148410-0",
		"ORD-2024-000123",
		"tracking 1Z999AA10123456784",
		"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		"ZIP 94105-1234",
		"lat 37.7749, lon -122.4194",
		"2024/03/15 10:30:45",
		"Mon, 15 Mar 2024 10:30:45 +0000",
		"+5 points, -3 penalty",
		"x := a::b; std::vector<int>",
		"mac 00:1a:2b:3c:4d:5e",
		"12:34:56.789",
		"bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
		"key-value pairs, e-mail me, re-try",
		"AKIA is the prefix of access key ids",
		"Authorization: Bearer <token>",
		"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
		"SELECT count(*) FROM orders WHERE id > 100000000 AND total < 999999999",
		"phone: 555-1234 (ext. 12)",
		"items: 100 200 300 400 500",
		"postgres://user@db.internal:5432/app",
		"dead::beef",
		"Order #123456789 shipped",
		"user@host:~$ ls",
	} {
		if hits := find(allDetectors, s); len(hits) != 0 {
			h := hits[0]
			t.Errorf("%q: %s hit %q", s, h.det, s[h.start:h.end])
		}
	}
}

// TestCommaJoinedNumbers: PostgreSQL's own output joins values with a bare
// comma (array literals {a,b}, composite literals (a,b), string_agg(x,
// ',')): two SSNs or card numbers side by side are each found, not taken
// for parts of one longer number.
func TestCommaJoinedNumbers(t *testing.T) {
	spec := &policy.MaskSpec{}
	for _, d := range []policy.Detector{policy.DetectorSSN, policy.DetectorCard, policy.DetectorPhone} {
		spec.Detectors[d] = policy.MaskerRedact
	}
	m, err := New(Config{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ in, raw string }{
		{"123-45-6789", "123-45-6789"},                             // control: masked
		{"{123-45-6789,234-56-7890}", "123-45-6789"},               // array_agg(ssn)
		{"123-45-6789,234-56-7890", "234-56-7890"},                 // string_agg(ssn, ',')
		{"(2,x,5500-0000-0000-0004,234-56-7890,y)", "234-56-7890"}, // c::text, ssn after card
		{"(2,x,5500-0000-0000-0004,234-56-7890,y)", "5500-0000-0000-0004"},
		{"4111 1111 1111 1111,5500-0000-0000-0004", "5500-0000-0000-0004"},
		{"SSNs: 123-45-6789,234-56-7890", "123-45-6789"}, // free text
		{"123-45-6789:1", "123-45-6789"},
	} {
		out, _ := m.MaskText(nil, []byte(tc.in))
		if strings.Contains(string(out), tc.raw) {
			t.Errorf("MaskText(%q) = %q: %s left in clear", tc.in, out, tc.raw)
		}
	}
}
