package masking

import (
	"encoding/json"
	"math"
	"regexp"
	"testing"

	"github.com/interlockhq/interlock/engine/policy"
)

// specFromPolicy returns the MaskSpec of a mask rule with the given column
// masks (YAML mapping) and detectors, as the policy builds it.
func specFromPolicy(t testing.TB, columns, detectors, masker string) *policy.MaskSpec {
	t.Helper()
	src := `
version: 1
targets: [{name: db, protocol: postgres, address: "127.0.0.1:5432", auth: passthrough}]
agents: [{name: a, roles: [r]}]
roles:
  - name: r
    rules:
      - id: m
        actions: [select]
        decision: mask
        mask:
          columns: ` + columns + `
          detectors: ` + detectors + `
          masker: ` + masker + `
`
	p, err := policy.Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	d := p.Decide(&policy.Operation{Agent: "a", Target: "db", Action: policy.ActionSelect,
		Objects: []policy.Object{{Kind: policy.KindTable, Name: "public.customers", Action: policy.ActionSelect}}})
	spec := d.Mask()
	if spec == nil {
		t.Fatalf("no mask: %s by %s", d.Verdict, d.RuleID)
	}
	return spec
}

const testColumns = `{email: partial, "*.ssn": redact, "public.customers.card": hash, secret: "null", profile: redact, customer_id: hash}`

func TestTextLike(t *testing.T) {
	for oid, want := range map[uint32]bool{
		OIDText: true, OIDVarchar: true, OIDBPChar: true, OIDName: true, OIDUnknown: true, OIDJSON: true, OIDJSONB: true,
		16: false, 17: false, 20: false, 23: false, 869: false, 2950: false, 1009: false, 99999: false,
	} {
		if TextLike(oid) != want {
			t.Errorf("TextLike(%d) = %v", oid, !want)
		}
	}
	for _, c := range []struct {
		oid    uint32
		binary bool
		want   Kind
	}{
		{OIDText, false, KindText}, {OIDText, true, KindText}, {OIDJSON, true, KindJSON}, {OIDJSONB, false, KindJSON},
		{OIDJSONB, true, KindJSONB}, {23, false, KindOther}, {23, true, KindBinary}, {99999, false, KindOther},
	} {
		if got := KindOf(c.oid, c.binary); got != c.want {
			t.Errorf("KindOf(%d, %v) = %d, want %d", c.oid, c.binary, got, c.want)
		}
	}
}

func TestPlan(t *testing.T) {
	m := newMasker(t, specFromPolicy(t, testColumns, "[email, card]", "redact"))
	plans := m.Plan([]Column{
		{Name: "public.customers.email", TypeOID: OIDText},
		{Name: "public.customers.ssn", TypeOID: OIDVarchar},
		{Name: "public.customers.card", TypeOID: OIDText},
		{Name: "public.customers.secret", TypeOID: OIDText},
		{Name: "public.customers.profile", TypeOID: OIDJSONB, Binary: true},
		{Name: "public.customers.notes", TypeOID: OIDText},
		{Name: "public.customers.customer_id", TypeOID: 23},
		{Name: "public.customers.amount", TypeOID: 1700},
		{Name: "public.customers.photo", TypeOID: 17, Binary: true},
		{Name: "lower", TypeOID: 99999, TextType: true},
		{Name: "array", TypeOID: 1009, Binary: true},
		{Name: "n", TypeOID: 20, Binary: true},
		{Name: "f", TypeOID: 701, Binary: true},
	})
	want := []Plan{
		{Rule: policy.MaskerPartial, Kind: KindText, label: "email"},
		{Rule: policy.MaskerRedact, Kind: KindText, label: "ssn"},
		{Rule: policy.MaskerHash, Kind: KindText, label: "card"},
		{Rule: policy.MaskerNull, Kind: KindText, label: "secret"},
		{Rule: policy.MaskerRedact, Kind: KindJSONB, label: "profile"},
		{Detect: true, Kind: KindText},
		{Rule: policy.MaskerHash, Kind: KindOther, Nulled: true, label: "customer_id"},
		{Detect: true, Kind: KindOther},
		{Detect: true, Kind: KindBinaryBytes},
		{Detect: true, Kind: KindText},
		{Detect: true, Kind: KindBinary},
		{Detect: true, Kind: KindBinaryInt},
		{Detect: true, Kind: KindBinaryFloat},
	}
	for i := range want {
		if plans[i] != want[i] {
			t.Errorf("plan %d = %+v, want %+v", i, plans[i], want[i])
		}
	}
	if plans[12].Pass() || plans[8].Pass() || plans[5].Pass() {
		t.Error("Pass")
	}
}

// TestMaskBinaryUnderDetectors: binary values of non-text types are read
// (integers, numeric, bytea) or, when the relay cannot read them (arrays,
// rows), made NULL; a float passes.
func TestMaskBinaryUnderDetectors(t *testing.T) {
	m := newMasker(t, specFromPolicy(t, testColumns, "[email, card, ssn]", "redact"))
	be := func(n int64, size int) []byte {
		b := make([]byte, size)
		for i := size - 1; i >= 0; i-- {
			b[i] = byte(n)
			n >>= 8
		}
		return b
	}
	// numeric 4111111111111111: weight 3, digits 4111 1111 1111 1111.
	numeric := []byte{0, 4, 0, 3, 0, 0, 0, 0, 0x10, 0x0f, 0x04, 0x57, 0x04, 0x57, 0x04, 0x57}
	small := []byte{0, 2, 0, 0, 0, 0, 0, 2, 0, 42, 0x13, 0x88} // 42.5000
	for _, c := range []struct {
		name  string
		oid   uint32
		value []byte
		null  bool
	}{
		{"int8 card number", 20, be(4111111111111111, 8), true},
		{"int8 plain", 20, be(42, 8), false},
		{"int4 plain", 23, be(123, 4), false},
		{"numeric card number", 1700, numeric, true},
		{"numeric plain", 1700, small, false},
		{"bytea holding an email", 17, []byte("alice@example.com"), true},
		{"bytea plain", 17, []byte{0, 1, 2}, false},
		{"text[] array", 1009, []byte("anything"), true},
		{"record", 2249, []byte("anything"), true},
		{"float8", 701, be(0x4330000000000000, 8), false},
		{"float8 card number", 701, be(int64(math.Float64bits(378282246310005)), 8), true},
		{"malformed int8", 20, []byte{1, 2, 3}, true},
	} {
		p := m.Plan([]Column{{Name: "x", TypeOID: c.oid, Binary: true}})[0]
		_, null, _ := m.MaskValue(nil, &p, c.value)
		if null != c.null {
			t.Errorf("%s: null = %v, want %v", c.name, null, c.null)
		}
	}
	if got, ok := binaryNumberText(KindBinaryNumeric, small); !ok || string(got) != "42.5000" {
		t.Errorf("numeric 42.5 = %q, %v", got, ok)
	}
	if got, ok := binaryNumberText(KindBinaryNumeric, numeric); !ok || string(got) != "4111111111111111" {
		t.Errorf("numeric card = %q, %v", got, ok)
	}
}

func TestMaskValue(t *testing.T) {
	m := newMasker(t, specFromPolicy(t, testColumns, "[email, card]", "redact"))
	plans := m.Plan([]Column{
		{Name: "public.customers.email", TypeOID: OIDText},                  // 0 partial
		{Name: "public.customers.ssn", TypeOID: OIDVarchar},                 // 1 redact
		{Name: "public.customers.card", TypeOID: OIDText},                   // 2 hash
		{Name: "public.customers.secret", TypeOID: OIDText},                 // 3 null
		{Name: "public.customers.profile", TypeOID: OIDJSONB, Binary: true}, // 4 redact, binary jsonb
		{Name: "public.customers.profile", TypeOID: OIDJSON},                // 5 redact, json
		{Name: "public.customers.notes", TypeOID: OIDText},                  // 6 detect
		{Name: "public.customers.customer_id", TypeOID: 23},                 // 7 rule on int: null
		{Name: "public.customers.amount", TypeOID: 20},                      // 8 detect in bigint
		{Name: "public.customers.doc", TypeOID: OIDJSONB, Binary: true},     // 9 detect, binary jsonb
		{Name: "public.customers.doc", TypeOID: OIDJSON},                    // 10 detect, json
	})
	for _, c := range []struct {
		col     int
		in      string
		want    string // regexp
		null    bool
		columns int
		hits    int
	}{
		{0, "alice@example.com", `^\*\*\*\*@example\.com$`, false, 1, 0},
		{1, "123-45-6789", `^\[REDACTED:ssn\]$`, false, 1, 0},
		{2, "4111111111111111", `^h:[0-9a-f]{16}$`, false, 1, 0},
		{3, "s3cr3t", ``, true, 1, 0},
		{4, "\x01{\"a\": 1}", `^\x01"\[REDACTED:profile\]"$`, false, 1, 0},
		{5, `{"a": 1}`, `^"\[REDACTED:profile\]"$`, false, 1, 0},
		{6, "mail a@b.co", `^mail \[REDACTED:email\]$`, false, 0, 1},
		{6, "nothing here", `^nothing here$`, false, 0, 0},
		{7, "42", ``, true, 1, 0},
		{8, "4111111111111111", ``, true, 0, 1},
		{8, "42", `^42$`, false, 0, 0},
		{9, "\x01{\"e\": \"a@b.co\"}", `^\x01\{"e": "\[REDACTED:email\]"\}$`, false, 0, 1},
		{9, "\x02{}", ``, true, 1, 0},
		{10, `{"n": 4111111111111111}`, `^\{"n": "\[REDACTED:card\]"\}$`, false, 0, 1},
	} {
		out, null, n := m.MaskValue(nil, &plans[c.col], []byte(c.in))
		if null != c.null || !c.null && !regexp.MustCompile(c.want).Match(out) || n.Columns != c.columns || n.Total()-n.Columns != c.hits {
			t.Errorf("column %d, %q: %q null=%v counts=%+v", c.col, c.in, out, null, n)
		}
		if p := plans[c.col]; !null && p.Kind == KindJSON && !json.Valid(out) {
			t.Errorf("column %d, %q: invalid JSON %q", c.col, c.in, out)
		}
	}
	// SQL NULL stays NULL.
	if out, null, _ := m.MaskValue(nil, &plans[6], nil); out != nil || !null {
		t.Error("NULL")
	}
}

func TestMaskValueHashAcrossFormats(t *testing.T) {
	m := newMasker(t, specFromPolicy(t, `{doc: hash, email: hash}`, "[]", "redact"))
	plans := m.Plan([]Column{
		{Name: "t.doc", TypeOID: OIDJSONB},
		{Name: "t.doc", TypeOID: OIDJSONB, Binary: true},
		{Name: "t.email", TypeOID: OIDText},
		{Name: "t.email", TypeOID: OIDVarchar, Binary: true},
	})
	text, _, _ := m.MaskValue(nil, &plans[0], []byte(`{"a": 1}`))
	bin, _, _ := m.MaskValue(nil, &plans[1], []byte("\x01{\"a\": 1}"))
	if string(bin) != "\x01"+string(text) {
		t.Errorf("jsonb hash: text %q, binary %q", text, bin)
	}
	a, _, _ := m.MaskValue(nil, &plans[2], []byte("a@b.co"))
	b, _, _ := m.MaskValue(nil, &plans[3], []byte("a@b.co"))
	if string(a) != string(b) {
		t.Errorf("text hash: %q, binary %q", a, b)
	}
}

// TestPlanUnresolved: a column of a table the relay could not name is NULL
// under column rules (a rule naming its table might apply), and left to
// the detectors when there are none.
func TestPlanUnresolved(t *testing.T) {
	withRules := newMasker(t, specFromPolicy(t, testColumns, "[email]", "redact"))
	p := withRules.Plan([]Column{{Name: "..phone", TypeOID: OIDText, Unresolved: true}})[0]
	if p.Rule != policy.MaskerNull {
		t.Errorf("unresolved column under column rules: %+v", p)
	}
	if _, null, _ := withRules.MaskValue(nil, &p, []byte("+1 (555) 123-4567")); !null {
		t.Error("unresolved column value not NULL")
	}
	detectorsOnly := newMasker(t, specFromPolicy(t, "", "[email]", "redact"))
	if p := detectorsOnly.Plan([]Column{{Name: "..phone", TypeOID: OIDText, Unresolved: true}})[0]; p.Rule != policy.MaskerNone || !p.Detect {
		t.Errorf("unresolved column without column rules: %+v", p)
	}
}
