package masking

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"testing"

	"github.com/interlockhq/interlock/engine/policy"
)

var (
	firstNames = []string{"Jane", "John", "María", "Wei", "Olivia", "Ahmed", "Sofia", "Liam", "Chloé", "Noah", "Aiko", "Lukas"}
	lastNames  = []string{"Miller", "Smith", "García", "Chen", "Johnson", "Khan", "Rossi", "Brown", "Dubois", "Müller", "Tanaka", "Novak"}
	streets    = []string{"Evergreen Terrace", "Main Street", "Oak Avenue", "Rue de Rivoli", "Baker Street", "Hauptstraße", "Elm Road"}
	cities     = []string{"Springfield, IL 62704", "London SW1A 1AA", "75001 Paris", "10115 Berlin", "Austin, TX 78701", "Toronto, ON M5V 2T6"}
	prose      = []string{
		"Customer asked to reschedule the delivery to next week because of travel.",
		"Please leave the parcel at the back door; the bell is broken.",
		"Refund of the second item approved after review by the support team.",
		"Order shipped in two boxes, tracking numbers sent by mail.",
		"Account upgraded to the premium plan, invoice 2024-0315 attached.",
		"Called twice at 10:30 and 14:45, no answer, will try again tomorrow.",
		"Item arrived damaged (corner crushed), replacement v2.1.4 sent on 2024-03-18.",
		"The customer prefers e-mail over phone and asked for a paper receipt.",
	}
	pii = []string{
		"jane.miller@example.com", "w.chen+orders@mail.example.co.uk", "4111 1111 1111 1111", "5555555555554444",
		"123-45-6789", "DE89 3704 0044 0532 0130 00", "GB29NWBK60161331926819", "+1 (555) 123-4567", "+44 20 7946 0958",
		"020 7946 0958", "10.0.12.7", "2001:db8::8a2e:370:7334", testJWT, "AKIAIOSFODNN7EXAMPLE",
		"ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
	}
)

// mixedText returns about n bytes of customer-record text, one record per
// line; with pii, half of the records carry a sensitive value.
func mixedText(n int, withPII bool) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	pick := func(l []string) string { return l[r.IntN(len(l))] }
	var b bytes.Buffer
	for b.Len() < n {
		fmt.Fprintf(&b, "%d,%s %s,%d %s,%s,%d items,$%d.%02d,%s %s",
			r.IntN(1e6), pick(firstNames), pick(lastNames), 1+r.IntN(999), pick(streets), pick(cities),
			1+r.IntN(9), r.IntN(500), r.IntN(100), pick(prose), pick(prose))
		if withPII && r.IntN(2) == 0 {
			fmt.Fprintf(&b, " Contact: %s.", pick(pii))
		}
		b.WriteByte('\n')
	}
	return b.Bytes()[:n]
}

func BenchmarkDetectors(b *testing.B) {
	mixed := mixedText(1<<20, true)
	clean := mixedText(1<<20, false)
	rows := bytes.SplitAfter(mixed, []byte("\n"))
	m := newMasker(b, detectorSpec(policy.MaskerRedact))
	b.Logf("%d hits in %d rows", len(find(allDetectors, string(mixed))), len(rows))

	run := func(name string, text []byte, fn func([]byte)) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				fn(text)
			}
		})
	}
	var dst []byte
	run("all/1MiB-value", mixed, func(t []byte) { dst, _ = m.MaskText(dst[:0], t) })
	run("all/per-row", mixed, func([]byte) {
		for _, row := range rows {
			dst, _ = m.MaskText(dst[:0], row)
		}
	})
	run("no-match", clean, func(t []byte) { m.MaskText(nil, t) })
	hash := newMasker(b, detectorSpec(policy.MaskerHash))
	run("all/hash", mixed, func(t []byte) { dst, _ = hash.MaskText(dst[:0], t) })
	for d := range policy.Detector(NumDetectors) {
		sc := detSet(1 << d)
		run("one/"+d.String(), mixed, func(t []byte) {
			s := newScanner(t, 0, sc)
			for _, ok := s.next(); ok; _, ok = s.next() {
			}
		})
	}
	// For comparison: one regexp per detector over the value, the way a
	// straightforward implementation would (without the checksum and
	// context checks the scanner also does).
	res := []*regexp.Regexp{
		regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}`),
		regexp.MustCompile(`\b(?:\d[ -]?){12,18}\d\b`),
		regexp.MustCompile(`\b\d{3}-\d{2}-\d{4}\b`),
		regexp.MustCompile(`\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b`),
		regexp.MustCompile(`\+\d[\d ().-]{7,18}\d|\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b`),
		regexp.MustCompile(`\b(?:\d{1,3}\.){3}\d{1,3}\b|\b[0-9a-fA-F:]*::[0-9a-fA-F:]*\b`),
		regexp.MustCompile(`\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*`),
		regexp.MustCompile(`\b(?:AKIA|ASIA)[A-Z0-9]{16}\b`),
		regexp.MustCompile(`\b(?:gh[pousr]_|github_pat_|xox[abprse]-|[sr]k_live_)[A-Za-z0-9_-]{10,}`),
		regexp.MustCompile(`-----BEGIN [A-Z ]*PRIVATE KEY-----`),
	}
	run("regexp-per-detector", mixed, func(t []byte) {
		for _, re := range res {
			re.FindAllIndex(t, -1)
		}
	})
}

func BenchmarkMaskCopyLine(b *testing.B) {
	m := newMasker(b, specFromPolicy(b, testColumns, "[email, card, phone, ssn, ip]", "redact"))
	plans := m.Plan([]Column{
		{Name: "public.customers.id", TypeOID: 23},
		{Name: "public.customers.email", TypeOID: OIDText},
		{Name: "public.customers.notes", TypeOID: OIDText},
		{Name: "public.customers.secret", TypeOID: OIDText},
	})
	f := TextCopy()
	line := []byte("12345\talice@example.com\tCustomer asked to reschedule; call 555-123-4567 after 10:30.\ts3cr3t\n")
	var dst []byte
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		dst, _, _ = m.MaskCopyLine(dst[:0], &f, plans, line)
	}
}

// TestMixedText checks precision and recall on the benchmark's text: no hit
// in records without sensitive values, and exactly the inserted values in
// the others.
func TestMixedText(t *testing.T) {
	clean := mixedText(1<<18, false)
	if hits := find(allDetectors, string(clean)); len(hits) != 0 {
		h := hits[0]
		t.Errorf("%d hits in clean text, first %s %q", len(hits), h.det, clean[h.start:h.end])
	}
	mixed := string(mixedText(1<<18, true))
	want := 0
	for _, line := range bytes.Split([]byte(mixed), []byte("\n")) {
		if bytes.Contains(line, []byte(" Contact: ")) {
			want++
		}
	}
	hits := find(allDetectors, mixed)
	for _, h := range hits {
		if !slices.Contains(pii, mixed[h.start:h.end]) {
			t.Errorf("unexpected %s hit %q", h.det, mixed[h.start:h.end])
		}
	}
	// The last record may be cut short.
	if len(hits) < want-1 || len(hits) > want {
		t.Errorf("%d hits, %d values inserted", len(hits), want)
	}
}

// BenchmarkNew: a relay may build a Masker per decision.
func BenchmarkNew(b *testing.B) {
	spec := detectorSpec(policy.MaskerRedact)
	for b.Loop() {
		if _, err := New(Config{Spec: spec, Key: testKey}); err != nil {
			b.Fatal(err)
		}
	}
}
