package masking

import (
	"bytes"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/interlockhq/interlock/engine/policy"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// detectorSpec switches every detector on with masker k.
func detectorSpec(k policy.Masker) *policy.MaskSpec {
	spec := &policy.MaskSpec{}
	for d := range spec.Detectors {
		spec.Detectors[d] = k
	}
	return spec
}

func newMasker(t testing.TB, spec *policy.MaskSpec) *Masker {
	t.Helper()
	m, err := New(Config{Spec: spec, Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func maskText(m *Masker, s string) string {
	out, _ := m.MaskText(nil, []byte(s))
	return string(out)
}

func TestMaskTextRedact(t *testing.T) {
	m := newMasker(t, detectorSpec(policy.MaskerRedact))
	in := "Alice <alice@example.com> paid with 4111 1111 1111 1111 from 10.0.0.1; SSN 123-45-6789, call +1 (555) 123-4567."
	want := "Alice <[REDACTED:email]> paid with [REDACTED:card] from [REDACTED:ip]; SSN [REDACTED:ssn], call [REDACTED:phone]."
	out, c := m.MaskText(nil, []byte(in))
	if string(out) != want {
		t.Errorf("MaskText:\n got %s\nwant %s", out, want)
	}
	for d, n := range map[policy.Detector]int{policy.DetectorEmail: 1, policy.DetectorCard: 1, policy.DetectorIP: 1, policy.DetectorSSN: 1, policy.DetectorPhone: 1} {
		if c.Detectors[d] != n {
			t.Errorf("count %s = %d, want %d", d, c.Detectors[d], n)
		}
	}
	if c.Total() != 5 {
		t.Errorf("Total = %d", c.Total())
	}
	// dst is appended to.
	out, _ = m.MaskText([]byte("prefix:"), []byte("a@b.co"))
	if string(out) != "prefix:[REDACTED:email]" {
		t.Errorf("append: %s", out)
	}
}

func TestMaskTextOnlyEnabledDetectors(t *testing.T) {
	spec := &policy.MaskSpec{}
	spec.Detectors[policy.DetectorCard] = policy.MaskerRedact
	m := newMasker(t, spec)
	if got := maskText(m, "a@b.co 4111111111111111"); got != "a@b.co [REDACTED:card]" {
		t.Errorf("got %q", got)
	}
	m = newMasker(t, &policy.MaskSpec{})
	if m.HasDetectors() {
		t.Error("HasDetectors with none on")
	}
	if got := maskText(m, "a@b.co"); got != "a@b.co" {
		t.Errorf("no detectors: %q", got)
	}
}

func TestMaskTextNoMatch(t *testing.T) {
	m := newMasker(t, detectorSpec(policy.MaskerRedact))
	src := []byte(strings.Repeat("The quick brown fox, version 1.2.3, jumps over 12 lazy dogs on 2024-01-15 at 10:30. ", 20))
	out, c := m.MaskText(make([]byte, 0, 16), src)
	if &out[0] != &src[0] || c.Total() != 0 {
		t.Error("no match: output is not the input")
	}
	if n := testing.AllocsPerRun(100, func() { m.MaskText(nil, src) }); n != 0 {
		t.Errorf("no match: %v allocations", n)
	}
	// Near misses that run the detectors' slower paths allocate nothing
	// either.
	near := []byte("eyJhbGciOiJIUzI1NiI.eyJ4.sig fe80::zz 4111111111111112 a@localhost secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEYX -----BEGIN CERTIFICATE-----")
	if n := testing.AllocsPerRun(100, func() { m.MaskText(nil, near) }); n != 0 {
		t.Errorf("near misses: %v allocations", n)
	}
}

func TestMaskTextPartial(t *testing.T) {
	m := newMasker(t, detectorSpec(policy.MaskerPartial))
	for in, want := range map[string]string{
		"alice@example.com":            "****@example.com",
		"4111 1111 1111 1111":          "**** **** **** 1111",
		"4111111111111111":             "************1111",
		"123-45-6789":                  "***-**-6789",
		"DE89 3704 0044 0532 0130 00":  "DE** **** **** **** **30 00",
		"+1 (555) 123-4567":            "+* (***) ***-**67",
		"192.168.1.254":                "192.168.1.*",
		"2001:db8:85a3::8a2e:370:7334": "2001:db8:85a3:*",
		"::1":                          "0:0:0:*",
		testJWT:                        jwtHeader + ".*****",
		"AKIAIOSFODNN7EXAMPLE":         "AKIA************MPLE",
		"ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5":                               "ghp_*****",
		"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----": "-----BEGIN EC PRIVATE KEY-----\n*****\n-----END EC PRIVATE KEY-----",
		"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE":                               "-----BEGIN EC PRIVATE KEY-----\n*****",
		"key AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY":      "key AKIA************MPLE ****************************************",
	} {
		got := maskText(m, in)
		if got != want {
			t.Errorf("partial %q = %q, want %q", in, got, want)
		}
		// Partial output is stable under masking again.
		if again := maskText(m, got); again != got {
			t.Errorf("partial %q not idempotent: %q", got, again)
		}
	}
}

func TestMaskTextHash(t *testing.T) {
	m := newMasker(t, detectorSpec(policy.MaskerHash))
	a := maskText(m, "from alice@example.com")
	b := maskText(m, "to alice@example.com!")
	if !regexp.MustCompile(`^from h:[0-9a-f]{16}$`).MatchString(a) {
		t.Fatalf("hash token: %q", a)
	}
	if a[5:] != b[3:len(b)-1] {
		t.Errorf("same value, different tokens: %q %q", a, b)
	}
	if c := maskText(m, "from bob@example.com"); c == a {
		t.Error("different values, same token")
	}
	m2, err := New(Config{Spec: detectorSpec(policy.MaskerHash), Key: bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	if c := maskText(m2, "from alice@example.com"); c == a {
		t.Error("different keys, same token")
	}
	// A column rule's hash of the same value is the same token: joins work
	// between a hashed column and hashed hits.
	out, _ := m.MaskWhole(nil, policy.MaskerHash, "email", []byte("alice@example.com"))
	if string(out) != a[5:] {
		t.Errorf("column hash %q, detector hash %q", out, a[5:])
	}
}

func TestMaskTextNullRedacts(t *testing.T) {
	m := newMasker(t, detectorSpec(policy.MaskerNull))
	if got := maskText(m, "mail a@b.co now"); got != "mail [REDACTED:email] now" {
		t.Errorf("null inside text: %q", got)
	}
}

func TestMaskWhole(t *testing.T) {
	m := newMasker(t, &policy.MaskSpec{})
	for _, c := range []struct {
		k      policy.Masker
		in     string
		want   string
		isNull bool
	}{
		{policy.MaskerNone, "x", "x", false},
		{policy.MaskerNull, "x", "", true},
		{policy.MaskerRedact, "x", "[REDACTED:name]", false},
		{policy.MaskerPartial, "alice@example.com", "****@example.com", false},
		{policy.MaskerPartial, "4111-1111-1111-1111", "****-****-****-1111", false},
		{policy.MaskerPartial, "John Smith", "**** ***th", false},
		{policy.MaskerPartial, "Zoë", "***", false},
		{policy.MaskerPartial, "", "", false},
		{policy.MaskerPartial, "12 Main Street, Springfield", "** **** ******, *******ield", false},
	} {
		out, isNull := m.MaskWhole(nil, c.k, "name", []byte(c.in))
		if string(out) != c.want || isNull != c.isNull {
			t.Errorf("MaskWhole(%s, %q) = %q, %v; want %q, %v", c.k, c.in, out, isNull, c.want, c.isNull)
		}
	}
	out, _ := m.MaskWhole(nil, policy.MaskerHash, "name", []byte("x"))
	if !regexp.MustCompile(`^h:[0-9a-f]{16}$`).Match(out) {
		t.Errorf("hash: %q", out)
	}
	// Without a key, hash redacts.
	nokey, err := New(Config{Spec: &policy.MaskSpec{}})
	if err != nil {
		t.Fatal(err)
	}
	if out, _ := nokey.MaskWhole(nil, policy.MaskerHash, "name", []byte("x")); string(out) != "[REDACTED:name]" {
		t.Errorf("hash without key: %q", out)
	}
}

func TestConfig(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrNoSpec) {
		t.Errorf("no spec: %v", err)
	}
	if _, err := New(Config{Spec: detectorSpec(policy.MaskerHash)}); !errors.Is(err, ErrKey) {
		t.Errorf("hash without key: %v", err)
	}
	if _, err := New(Config{Spec: &policy.MaskSpec{}, Key: []byte("short")}); !errors.Is(err, ErrKey) {
		t.Errorf("short key: %v", err)
	}
	for _, r := range []string{`"%s"`, `\%s`, "a\nb", "é"} {
		if _, err := New(Config{Spec: &policy.MaskSpec{}, Redaction: r}); !errors.Is(err, ErrRedaction) {
			t.Errorf("redaction %q: %v", r, err)
		}
	}
	m, err := New(Config{Spec: detectorSpec(policy.MaskerRedact), Redaction: "<%s>"})
	if err != nil {
		t.Fatal(err)
	}
	if got := maskText(m, "a@b.co"); got != "<email>" {
		t.Errorf("custom redaction: %q", got)
	}
	m, err = New(Config{Spec: detectorSpec(policy.MaskerRedact), Redaction: "***"})
	if err != nil {
		t.Fatal(err)
	}
	if got := maskText(m, "a@b.co"); got != "***" {
		t.Errorf("fixed redaction: %q", got)
	}
}

func TestCounts(t *testing.T) {
	var a, b Counts
	a.Detectors[policy.DetectorEmail] = 2
	b.Detectors[policy.DetectorEmail] = 1
	b.Detectors[policy.DetectorPEM] = 1
	b.Columns = 3
	a.Add(&b)
	if a.Detectors[policy.DetectorEmail] != 3 || a.Detectors[policy.DetectorPEM] != 1 || a.Columns != 3 || a.Total() != 7 {
		t.Errorf("Add: %+v", a)
	}
	if NumDetectors != 10 {
		t.Errorf("NumDetectors = %d", NumDetectors)
	}
}
