package masking

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/interlockhq/interlock/engine/policy"
)

var fuzzSeeds = []string{
	"",
	"plain text, nothing to see: version 1.2.3 on 2024-01-15",
	"Alice <alice@example.com> 4111 1111 1111 1111 123-45-6789 +1 (555) 123-4567",
	"DE89 3704 0044 0532 0130 00 10.0.0.1 fe80::1%eth0 ::ffff:1.2.3.4",
	testJWT,
	"AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
	"ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5 xoxb-123456789012-AbCdEf",
	"-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
	`{"email": "a\u0040b.co", "card": 4111111111111111, "ssn": 123456789}`,
	"Key (email)=(a@b.com) already exists.",
	"jörg@bücher.de (030) 1234567 SSN: 123456789",
}

// residual returns s with the hits blanked out.
func residual(s []byte, hits []hit) []byte {
	r := bytes.Clone(s)
	for _, h := range hits {
		for k := h.start; k < h.end; k++ {
			r[k] = 0
		}
	}
	return r
}

// exposed returns a hit of s (8 bytes or more, found nowhere else in s)
// that out contains. With partial, hits that have nothing to hide (a PEM
// block without a body) are skipped.
func exposed(s, out []byte, hits []hit, partial bool) []byte {
	res := residual(s, hits)
	for _, h := range hits {
		v := s[h.start:h.end]
		if partial && bytes.Contains(appendPartial(nil, h.det, v), v) {
			continue
		}
		if len(v) >= 8 && !bytes.Contains(res, v) && bytes.Contains(out, v) {
			return v
		}
	}
	return nil
}

func FuzzMaskText(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	redact := newMasker(f, detectorSpec(policy.MaskerRedact))
	partial := newMasker(f, detectorSpec(policy.MaskerPartial))
	hash := newMasker(f, detectorSpec(policy.MaskerHash))
	rules := newMasker(f, specFromPolicy(f, testColumns, "[email, card, ssn, ip, jwt]", "partial"))
	f.Fuzz(func(t *testing.T, s []byte) {
		hits := find(allDetectors, string(s))
		for _, m := range []*Masker{redact, partial, hash} {
			out, c := m.MaskText(nil, s)
			if c.Total() != len(hits) {
				t.Fatalf("%d hits counted, %d found", c.Total(), len(hits))
			}
			if len(hits) == 0 {
				if len(s) > 0 && &out[0] != &s[0] {
					t.Fatalf("no match, output is a copy")
				}
				continue
			}
			if v := exposed(s, out, hits, m == partial); v != nil {
				t.Fatalf("%q exposed in %q", v, out)
			}
			// Masking the output again never brings anything back.
			again, _ := m.MaskText(nil, out)
			if v := exposed(s, again, hits, m == partial); v != nil {
				t.Fatalf("%q exposed after masking twice: %q", v, again)
			}
			if m == partial && !bytes.Equal(again, out) {
				// Partial output never matches again by itself; a second
				// pass may only mask more next to it.
				if len(again) > len(out)+len(m.redact[0])*len(hits)*2 {
					t.Fatalf("partial masking grew: %q → %q", out, again)
				}
			}
		}
		// JSON stays valid.
		if json.Valid(s) {
			for _, m := range []*Masker{redact, partial, hash} {
				if out, _ := m.MaskJSON(nil, s); !json.Valid(out) {
					t.Fatalf("MaskJSON(%q) = %q: invalid JSON", s, out)
				}
			}
			if b := bytes.TrimLeft(s, " \t\r\n"); len(b) == 0 || b[0] != '{' && b[0] != '[' {
				// Scalars are masked as text.
			} else if out, _ := rules.MaskPayload(nil, s); !json.Valid(out) {
				t.Fatalf("MaskPayload(%q) = %q: invalid JSON", s, out)
			}
		}
		rules.MaskErrorField(nil, 'D', s, "public.customers")
		rules.MaskErrorField(nil, 'M', s, "")
		rules.MaskWhole(nil, policy.MaskerPartial, "x", s)
		// The IPv6 parser agrees with net/netip.
		if len(s) <= maxIPv6+1 && len(bytes.Trim(s, "0123456789abcdefABCDEF:.")) == 0 {
			a, err := netip.ParseAddr(string(s))
			want := err == nil && a.Is6() && bytes.ContainsAny(s, "0123456789abcdefABCDEF")
			if got := ipv6OK(s); got != want {
				t.Fatalf("ipv6OK(%q) = %v, netip: %v", s, got, err)
			}
			if l := ipv4Len(s); (l == len(s)) != (err == nil && a.Is4()) {
				t.Fatalf("ipv4Len(%q) = %d, netip: %v", s, l, err)
			}
		}
	})
}

// splitRow splits a COPY row into decoded fields (nil for NULL), as a
// client reading it would.
func splitRow(f *CopyFormat, line []byte) [][]byte {
	body := bytes.TrimSuffix(line, []byte("\n"))
	body = bytes.TrimSuffix(body, []byte("\r"))
	var fields [][]byte
	for p := 0; ; p++ {
		st := p
		if f.CSV {
			in, quoted := false, false
			for p < len(body) && (in || body[p] != f.Delimiter) {
				if in && body[p] == f.Escape && p+1 < len(body) && (body[p+1] == f.Quote || body[p+1] == f.Escape) {
					p += 2
					continue
				}
				if body[p] == f.Quote {
					in, quoted = !in, true
				}
				p++
			}
			if !quoted && string(body[st:p]) == f.Null {
				fields = append(fields, nil)
			} else {
				fields = append(fields, append([]byte{}, csvDecode(nil, body[st:p], f)...))
			}
		} else {
			for p < len(body) && body[p] != f.Delimiter {
				if body[p] == '\\' {
					p++
				}
				p++
			}
			p = min(p, len(body))
			if string(body[st:p]) == f.Null {
				fields = append(fields, nil)
			} else {
				fields = append(fields, append([]byte{}, copyTextDecode(body[st:p])...))
			}
		}
		if p >= len(body) {
			return fields
		}
	}
}

func FuzzCopyLine(f *testing.F) {
	for _, s := range []string{
		"1\talice@example.com\tcall 555-123-4567\\tnow\ts3cr3t\n",
		"2\t\\N\t\\N\t\\N\n",
		"1,alice@example.com,\"call 555-123-4567, now\",s3cr3t\n",
		"3,,\"line1\nline2 \"\"quoted\"\" 4111 1111 1111 1111\",\n",
		"a\\\tb\tc\\\\\td\\x41\n",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	m := newMasker(f, specFromPolicy(f, testColumns, "[email, card, phone, ssn, ip]", "redact"))
	plans := m.Plan([]Column{
		{Name: "public.customers.id", TypeOID: 23},
		{Name: "public.customers.email", TypeOID: OIDText},
		{Name: "public.customers.notes", TypeOID: OIDText},
		{Name: "public.customers.secret", TypeOID: OIDText},
	})
	f.Fuzz(func(t *testing.T, line []byte, csv bool) {
		format := TextCopy()
		if csv {
			format = CSVCopy()
		}
		out, c, err := m.MaskCopyLine(nil, &format, plans, line)
		if err != nil {
			return
		}
		if c.Total() == 0 && !bytes.Equal(out, line) {
			t.Fatalf("nothing masked, row changed: %q → %q", line, out)
		}
		in, got := splitRow(&format, line), splitRow(&format, out)
		if len(got) != len(plans) {
			t.Fatalf("%q → %q: %d fields", line, out, len(got))
		}
		for i := range plans {
			want, null := in[i], in[i] == nil
			if !null {
				want, null, _ = m.MaskValue(nil, &plans[i], in[i])
			}
			if null != (got[i] == nil) || !null && !bytes.Equal(want, got[i]) {
				t.Fatalf("%q → %q: field %d = %q, want %q (null %v)", line, out, i, got[i], want, null)
			}
		}
	})
}
