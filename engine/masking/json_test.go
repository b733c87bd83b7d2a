package masking

import (
	"encoding/json"
	"testing"

	"github.com/interlockhq/interlock/engine/policy"
)

func TestMaskJSON(t *testing.T) {
	m := newMasker(t, detectorSpec(policy.MaskerRedact))
	for in, want := range map[string]string{
		`{"email": "alice@example.com", "n": 1}`:                                `{"email": "[REDACTED:email]", "n": 1}`,
		`{"alice@example.com": 3}`:                                              `{"[REDACTED:email]": 3}`,
		`["a\u0040b.co", "x"]`:                                                  `["[REDACTED:email]", "x"]`,
		`{"card": 4111111111111111}`:                                            `{"card": "[REDACTED:card]"}`,
		`{"card": 4111111111111111.5}`:                                          `{"card": 4111111111111111.5}`,
		`{"card": "4111-1111-1111-1111"}`:                                       `{"card": "[REDACTED:card]"}`,
		`{"ssn": 123456789}`:                                                    `{"ssn": "[REDACTED:ssn]"}`,
		`{"note": "say \"hi\" to a@b.co\n"}`:                                    `{"note": "say \"hi\" to [REDACTED:email]\n"}`,
		`{"k": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----"}`: `{"k": "[REDACTED:pem]"}`,
		`{"nested": {"list": [{"ip": "10.0.0.1"}]}}`:                            `{"nested": {"list": [{"ip": "[REDACTED:ip]"}]}}`,
		`"a@b.co"`: `"[REDACTED:email]"`,
		`{"t": true, "f": false, "z": null, "n": 1.5e10}`: `{"t": true, "f": false, "z": null, "n": 1.5e10}`,
		`{"jwt": "` + testJWT + `"}`:                      `{"jwt": "[REDACTED:jwt]"}`,
	} {
		out, _ := m.MaskJSON(nil, []byte(in))
		if string(out) != want {
			t.Errorf("MaskJSON(%s)\n got %s\nwant %s", in, out, want)
		}
		if !json.Valid(out) {
			t.Errorf("MaskJSON(%s): invalid JSON %s", in, out)
		}
	}
	// Unchanged documents come back as they are.
	src := []byte(`{"name": "Alice", "tags": ["a", "b"], "n": 42}`)
	out, c := m.MaskJSON(nil, src)
	if &out[0] != &src[0] || c.Total() != 0 {
		t.Error("unchanged document copied")
	}
	if n := testing.AllocsPerRun(100, func() { m.MaskJSON(nil, src) }); n != 0 {
		t.Errorf("unchanged document: %v allocations", n)
	}
}

func TestMaskJSONPartialStaysValid(t *testing.T) {
	// A redaction marker or partial output with characters JSON must
	// escape is escaped.
	m, err := New(Config{Spec: detectorSpec(policy.MaskerPartial), Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	in := `{"a": "x\ty a@b.co\u0000", "p": "-----BEGIN RSA PRIVATE KEY-----\nAB\n-----END RSA PRIVATE KEY-----"}`
	out, _ := m.MaskJSON(nil, []byte(in))
	var v map[string]string
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	if v["a"] != "x\ty ****@b.co\x00" || v["p"] != "-----BEGIN RSA PRIVATE KEY-----\n*****\n-----END RSA PRIVATE KEY-----" {
		t.Errorf("decoded %q", v)
	}
}

func TestMaskJSONInvalid(t *testing.T) {
	m := newMasker(t, detectorSpec(policy.MaskerRedact))
	for in, want := range map[string]string{
		`{"a": "a@b.co\q"}`: `{"a": "[REDACTED:email]\q"}`,
		`{"a": "a@b.co`:     `{"a": "[REDACTED:email]`,
		`a@b.co`:            `a@b.co`, // not in a token
	} {
		if out, _ := m.MaskJSON(nil, []byte(in)); string(out) != want {
			t.Errorf("MaskJSON(%s) = %s, want %s", in, out, want)
		}
	}
}

func TestJSONUnquote(t *testing.T) {
	for in, want := range map[string]string{
		`"plain"`:        "plain",
		`"a\"b\\c\/d"`:   `a"b\c/d`,
		`"\b\f\n\r\t"`:   "\b\f\n\r\t",
		`"\u00e9\u0041"`: "éA",
		`"\ud83d\ude00"`: "😀",
		`"\ud83d x"`:     "\uFFFD x",
	} {
		got, ok := jsonUnquote([]byte(in))
		if !ok || string(got) != want {
			t.Errorf("jsonUnquote(%s) = %q, %v", in, got, ok)
		}
	}
	for _, in := range []string{`"\x"`, `"\u12"`, `"\`, `x`} {
		if _, ok := jsonUnquote([]byte(in)); ok {
			t.Errorf("jsonUnquote(%s) ok", in)
		}
	}
}
