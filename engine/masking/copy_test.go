package masking

import (
	"errors"
	"testing"

	"github.com/interlockhq/interlock/engine/policy"
)

// copyPlans: id int4 (detect), email (partial rule), notes (detect), secret
// (null rule).
func copyPlans(t *testing.T, redaction string) (*Masker, []Plan) {
	t.Helper()
	m, err := New(Config{Spec: specFromPolicy(t, testColumns, "[email, card, phone]", "redact"), Key: testKey, Redaction: redaction})
	if err != nil {
		t.Fatal(err)
	}
	return m, m.Plan([]Column{
		{Name: "public.customers.id", TypeOID: 23},
		{Name: "public.customers.email", TypeOID: OIDText},
		{Name: "public.customers.notes", TypeOID: OIDText},
		{Name: "public.customers.secret", TypeOID: OIDText},
	})
}

func TestMaskCopyText(t *testing.T) {
	m, plans := copyPlans(t, "")
	f := TextCopy()
	for _, c := range []struct{ in, want string }{
		{"1\talice@example.com\tcall 555-123-4567\\tnow\ts3cr3t\n", "1\t****@example.com\tcall [REDACTED:phone]\\tnow\t\\N\n"},
		{"2\t\\N\t\\N\t\\N\n", "2\t\\N\t\\N\t\\N\n"},
		{"3\t\\N\tline\\none a@b.co\\\\x\t\\N\n", "3\t\\N\tline\\none [REDACTED:email]\\\\x\t\\N\n"},
		{"4\t\\N\tA\\101\\x41\\q a@b.co\t\\N\n", "4\t\\N\tAAAq [REDACTED:email]\t\\N\n"},
		{"4111111111111111\t\\N\t\\N\t\\N\n", "\\N\t\\N\t\\N\t\\N\n"}, // a card in an int column: NULL
		{"5\t\\N\tno newline\t\\N", "5\t\\N\tno newline\t\\N"},
		{"6\t\\N\tcrlf a@b.co\t\\N\r\n", "6\t\\N\tcrlf [REDACTED:email]\t\\N\r\n"},
		{"7\t\\N\t\t\\N\n", "7\t\\N\t\t\\N\n"},
	} {
		out, _, err := m.MaskCopyLine(nil, &f, plans, []byte(c.in))
		if err != nil || string(out) != c.want {
			t.Errorf("MaskCopyLine(%q)\n got %q, %v\nwant %q", c.in, out, err, c.want)
		}
	}
	// A delimiter that appears in the replacement is escaped.
	f.Delimiter = ':'
	out, _, err := m.MaskCopyLine(nil, &f, plans, []byte("1:\\N:mail a@b.co:\\N\n"))
	if err != nil || string(out) != "1:\\N:mail [REDACTED\\:email]:\\N\n" {
		t.Errorf("delimiter ':': %q, %v", out, err)
	}
}

func TestMaskCopyUnchanged(t *testing.T) {
	m, plans := copyPlans(t, "")
	for _, f := range []CopyFormat{TextCopy(), CSVCopy()} {
		line := []byte("1\t\\N\tnothing to see\t\\N\n")
		if f.CSV {
			line = []byte("1,,\"nothing, to see\",\n")
		}
		out, c, err := m.MaskCopyLine(nil, &f, plans, line)
		if err != nil || &out[0] != &line[0] || c.Total() != 0 {
			t.Errorf("CSV %v: unchanged row copied: %q, %v", f.CSV, out, err)
		}
		if n := testing.AllocsPerRun(100, func() { m.MaskCopyLine(nil, &f, plans, line) }); n != 0 {
			t.Errorf("CSV %v: unchanged row: %v allocations", f.CSV, n)
		}
	}
}

func TestMaskCopyCSV(t *testing.T) {
	m, plans := copyPlans(t, "")
	f := CSVCopy()
	for _, c := range []struct{ in, want string }{
		{"1,alice@example.com,\"call 555-123-4567, now\",s3cr3t\n", "1,****@example.com,\"call [REDACTED:phone], now\",\n"},
		{"2,\"\",,\"\"\n", "2,\"\",,\n"},
		{"3,,\"line1\nline2 \"\"quoted\"\" 4111 1111 1111 1111\",\n", "3,,\"line1\nline2 \"\"quoted\"\" [REDACTED:card]\",\n"},
		{"4,,a@b.co,\n", "4,,[REDACTED:email],\n"},
		{"5,,\"\",\n", "5,,\"\",\n"},
		{"6,,ab\"c,d\"e a@b.co,\n", "6,,\"abc,de [REDACTED:email]\",\n"},
	} {
		out, _, err := m.MaskCopyLine(nil, &f, plans, []byte(c.in))
		if err != nil || string(out) != c.want {
			t.Errorf("MaskCopyLine(%q)\n got %q, %v\nwant %q", c.in, out, err, c.want)
		}
	}
	// ESCAPE '\': escapes are decoded and written back.
	f.Escape = '\\'
	out, _, err := m.MaskCopyLine(nil, &f, plans, []byte("7,,\"say \\\"hi\\\" \\\\ a@b.co\",\n"))
	if err != nil || string(out) != "7,,\"say \\\"hi\\\" \\\\ [REDACTED:email]\",\n" {
		t.Errorf("escape: %q, %v", out, err)
	}
	// A replacement holding the delimiter is quoted.
	m, plans = copyPlans(t, "[REDACTED,%s]")
	f = CSVCopy()
	out, _, err = m.MaskCopyLine(nil, &f, plans, []byte("8,,a@b.co,\n"))
	if err != nil || string(out) != "8,,\"[REDACTED,email]\",\n" {
		t.Errorf("quoting: %q, %v", out, err)
	}
	// NULL AS 'NULL': a masked value equal to the NULL string is quoted.
	m, plans = copyPlans(t, "NULL")
	f = CSVCopy()
	f.Null = "NULL"
	out, _, err = m.MaskCopyLine(nil, &f, plans, []byte("9,NULL,a@b.co,x\n"))
	if err != nil || string(out) != "9,NULL,\"NULL\",NULL\n" {
		t.Errorf("null string: %q, %v", out, err)
	}
}

func TestMaskCopyErrors(t *testing.T) {
	m, plans := copyPlans(t, "")
	text, csv := TextCopy(), CSVCopy()
	for _, c := range []struct {
		f    *CopyFormat
		in   string
		want error
	}{
		{&text, "1\t2\t3\n", ErrFieldCount},
		{&text, "1\t2\t3\t4\t5\n", ErrFieldCount},
		{&text, "1\t2\r\t3\t4\n", ErrCopyRow},
		{&text, "1\t2\t3\t4\n5\t6\t7\t8\n", ErrCopyRow},
		{&csv, "1,2,\"3,4\n", ErrCopyRow},
		{&csv, "1,2,3,4\n5,6,7,8\n", ErrCopyRow},
		{&csv, "1,2,3\n", ErrFieldCount},
	} {
		if _, _, err := m.MaskCopyLine(nil, c.f, plans, []byte(c.in)); !errors.Is(err, c.want) {
			t.Errorf("MaskCopyLine(%q) = %v, want %v", c.in, err, c.want)
		}
	}
}

func TestCopyFormat(t *testing.T) {
	var f CopyFormat
	if err := f.CheckAndSetDefaults(); err != nil || f.Delimiter != '\t' {
		t.Errorf("text defaults: %+v %v", f, err)
	}
	f = CopyFormat{CSV: true}
	if err := f.CheckAndSetDefaults(); err != nil || f.Delimiter != ',' || f.Quote != '"' || f.Escape != '"' {
		t.Errorf("CSV defaults: %+v %v", f, err)
	}
	for _, f := range []CopyFormat{
		{Delimiter: '\n'}, {Delimiter: '\\'}, {Delimiter: 'a'}, {CSV: true, Delimiter: '"'}, {CSV: true, Quote: '\r'},
	} {
		if err := f.CheckAndSetDefaults(); !errors.Is(err, ErrCopyFormat) {
			t.Errorf("%+v: %v", f, err)
		}
	}
	_ = policy.MaskerNone
}
