package masking

import (
	"encoding/json"
	"regexp"
	"testing"

	"github.com/interlockhq/interlock/engine/policy"
)

func TestMaskErrorField(t *testing.T) {
	rules := newMasker(t, specFromPolicy(t, `{email: redact, "public.customers.name": partial, "*.ssn": hash}`, "[email]", "redact"))
	detectors := newMasker(t, detectorSpec(policy.MaskerRedact))
	for _, c := range []struct {
		m     *Masker
		code  byte
		table string
		in    string
		want  string // regexp
	}{
		// Column rules attribute key values to their columns.
		{rules, 'D', "", "Key (email)=(a@b.com) already exists.", `^Key \(email\)=\(\[REDACTED:key\]\) already exists\.$`},
		{rules, 'D', "", "Key (lower(email::text))=(x y z) already exists.", `^Key \(lower\(email::text\)\)=\(\[REDACTED:key\]\) already exists\.$`},
		{rules, 'D', "public.customers", "Key (name)=(John Smith) already exists.", `^Key \(name\)=\(\*\*\*\* \*\*\*th\) already exists\.$`},
		{rules, 'D', "", "Key (name)=(John Smith) already exists.", `^Key \(name\)=\(John Smith\) already exists\.$`},
		{rules, 'D', "public.people", "Key (tenant, ssn)=(7, 123-45-6789) is not present in table \"people\".", `^Key \(tenant, ssn\)=\(h:[0-9a-f]{16}\) is not present in table "people"\.$`},
		{rules, 'D', "", "Key (id)=(42) is still referenced from table \"orders\".", `^Key \(id\)=\(42\) is still referenced from table "orders"\.$`},
		{rules, 'D', "", "Key (email)=(a) conflicts with existing key (email)=(b).", `^Key \(email\)=\(\[REDACTED:key\]\) conflicts with existing key \(email\)=\(\[REDACTED:key\]\)\.$`},
		{rules, 'D', "", "Failing row contains (1, a@b.com, null).", `^Failing row contains \(\[REDACTED:row\]\)\.$`},
		{rules, 'D', "", "Partition key of the failing row contains (email) = (a@b.com).", `^Partition key of the failing row contains \(email\) = \(\[REDACTED:key\]\)\.$`},
		{rules, 'M', "", `invalid input syntax for type integer: "123-45-6789"`, `^invalid input syntax for type integer: "\[REDACTED:value\]"$`},
		{rules, 'M', "", `value "99999999999" is out of range for type integer`, `^value "\[REDACTED:value\]" is out of range for type integer$`},
		// With column rules every quoted span of a message is redacted,
		// names too: relation "v" does not exist is what casting a masked
		// column to regclass reports (the constraint name stays in the
		// error's own 'n' field).
		{rules, 'M', "", `duplicate key value violates unique constraint "customers_email_key"`, `^duplicate key value violates unique constraint "\[REDACTED:value\]"$`},
		{rules, 'M', "", `relation "ali" does not exist`, `^relation "\[REDACTED:value\]" does not exist$`},
		{rules, 'M', "", `unrecognized configuration parameter "+1 (555) 123-4567"`, `^unrecognized configuration parameter "\[REDACTED:value\]"$`},
		{rules, 'M', "", `function "a" and "b"`, `^function "\[REDACTED:value\]" and "\[REDACTED:value\]"$`},
		{rules, 'M', "", `unterminated "abc`, `^unterminated "\[REDACTED:value\]$`},
		// Translated messages (a server whose lc_messages is not English).
		{rules, 'M', "", `ungültige Eingabesyntax für Typ integer: »+1 415 555 2671«`, `^ungültige Eingabesyntax für Typ integer: »\[REDACTED:value\]«$`},
		{rules, 'M', "", `syntaxe en entrée invalide pour le type integer : « a b »`, `^syntaxe en entrée invalide pour le type integer : «\[REDACTED:value\]»$`},
		{rules, 'M', "", `nieprawidłowa składnia wejścia dla typu integer: „555 2671”`, `^nieprawidłowa składnia wejścia dla typu integer: „\[REDACTED:value\]”$`},
		{rules, 'M', "", `型integerの入力構文が不正です: 「555 2671」 and “x” and ‘y’`, `^型integerの入力構文が不正です: 「\[REDACTED:value\]」 and “\[REDACTED:value\]” and ‘\[REDACTED:value\]’$`},
		{rules, 'M', "", `»abc`, `^»\[REDACTED:value\]$`},
		// Detectors alone.
		{detectors, 'D', "", "Key (email)=(a@b.com) already exists.", `^Key \(email\)=\(\[REDACTED:email\]\) already exists\.$`},
		{detectors, 'D', "", "Failing row contains (1, a@b.com, 4111111111111111).", `^Failing row contains \(1, \[REDACTED:email\], \[REDACTED:card\]\)\.$`},
		{detectors, 'M', "", `invalid input syntax for type integer: "a@b.com"`, `^invalid input syntax for type integer: "\[REDACTED:email\]"$`},
		{detectors, 'W', "", "PL/pgSQL function f() line 3 at RAISE: 10.0.0.1", `^PL/pgSQL function f\(\) line 3 at RAISE: \[REDACTED:ip\]$`},
		{detectors, 'H', "", "mail a@b.com", `^mail \[REDACTED:email\]$`},
		{detectors, 'q', "", "select 'a@b.com'", `^select '\[REDACTED:email\]'$`},
		{detectors, 'Z', "", "a@b.com", `^\[REDACTED:email\]$`}, // unknown field
		// Fields without data stay.
		{detectors, 'C', "", "23505", `^23505$`},
		{detectors, 'n', "", "a@b.com", `^a@b\.com$`},
		{detectors, 't', "", "10.0.0.1", `^10\.0\.0\.1$`},
	} {
		out, _ := c.m.MaskErrorField(nil, c.code, []byte(c.in), c.table)
		if !regexp.MustCompile(c.want).Match(out) {
			t.Errorf("MaskErrorField(%c, %q) = %q, want /%s/", c.code, c.in, out, c.want)
		}
	}
}

func TestMaskPayload(t *testing.T) {
	m := newMasker(t, specFromPolicy(t, `{email: partial, ssn: "null", card: hash, profile: redact}`, "[email, ip]", "redact"))
	for in, want := range map[string]string{
		`{"id": 1, "email": "alice@example.com", "ssn": "123-45-6789", "note": "from 10.0.0.1"}`: `^\{"id": 1, "email": "\*\*\*\*@example\.com", "ssn": null, "note": "from \[REDACTED:ip\]"\}$`,
		`{"card": 4111111111111111, "profile": {"a": [1, "b"]}}`:                                 `^\{"card": "h:[0-9a-f]{16}", "profile": "\[REDACTED:profile\]"\}$`,
		`[{"email": null}, {"email": true}]`:                                                     `^\[\{"email": null\}, \{"email": "\*\*\*e"\}\]$`,
		`{"a@b.com": 1}`:                                                                         `^\{"\[REDACTED:email\]": 1\}$`,
		`order 42 shipped to a@b.com`:                                                            `^order 42 shipped to \[REDACTED:email\]$`,
		`{not json a@b.com`:                                                                      `^\{not json \[REDACTED:email\]$`,
	} {
		out, _ := m.MaskPayload(nil, []byte(in))
		if !regexp.MustCompile(want).Match(out) {
			t.Errorf("MaskPayload(%s) = %s, want /%s/", in, out, want)
		}
		if json.Valid([]byte(in)) && !json.Valid(out) {
			t.Errorf("MaskPayload(%s): invalid JSON %s", in, out)
		}
	}
	src := []byte(`{"id": 1, "name": "x"}`)
	if out, c := m.MaskPayload(nil, src); &out[0] != &src[0] || c.Total() != 0 {
		t.Error("unchanged payload copied")
	}
}
