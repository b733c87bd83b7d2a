package policy

import "testing"

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern string
		sep     byte
		name    string
		want    bool
	}{
		{"public.orders", '.', "public.orders", true},
		{"public.orders", '.', "public.orders2", false},
		{"payroll.*", '.', "payroll.salaries", true},
		{"payroll.*", '.', "payroll.", true},
		{"payroll.*", '.', "payroll", false},
		{"payroll.*", '.', "payrollx.salaries", false},
		{"payroll.*", '.', "payroll.a.b", false}, // '*' does not cross '.'
		{"*.*", '.', "public.orders", true},
		{"*.ssn", '.', "customers.ssn", true},
		{"*.ssn", '.', "public.customers.ssn", false},
		{"**", '.', "a.b.c", true},
		{"**.ssn", '.', "public.customers.ssn", true},
		{"**.ssn", '.', "ssn", true},
		{"public.ord?rs", '.', "public.orders", true},
		{"public.ord?rs", '.', "public.ordrs", false},
		{"public.order_[0-9]", '.', "public.order_7", true},
		{"public.order_[!0-9]", '.', "public.order_7", false},
		{"public.order_[!0-9]", '.', "public.order_x", true},
		{`public.a\*b`, '.', "public.a*b", true},
		{`public.a\*b`, '.', "public.axb", false},
		{"public.*_archive", '.', "public.orders_archive", true},
		{"public.*_archive", '.', "public.orders_archive_old", false},
		{"pg_*", '.', "pg_catalog", true},
		{"/v1/*", '/', "/v1/users", true},
		{"/v1/*", '/', "/v1/users/42", false},
		{"/v1/**", '/', "/v1/users/42", true},
		{"/v1/**", '/', "/v1", true},
		{"/v1/**/edit", '/', "/v1/users/42/edit", true},
		{"/v1/**/edit", '/', "/v1/edit", true},
		{"/v1/**/edit", '/', "/v1/users/42", false},
		{"orders-*", 0, "orders-db", true},
		{"*", 0, "anything.at/all", true},
		{"a*a*a*a*b", '.', "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
		{"pay*", '.', "payroll.x", false},
		{"*_archive", '.', "public.x_archive", false},
		{"*.*", '.', "public.", true},
		{"*.*", '.', "a.b.c", false},
		{"*", '.', "a.b", false},
	}
	for _, tt := range tests {
		g, err := compileGlob(tt.pattern, tt.sep)
		if err != nil {
			t.Fatalf("compileGlob(%q): %v", tt.pattern, err)
		}
		if got := g.match(tt.name); got != tt.want {
			t.Errorf("%q matches %q = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestGlobSyntax(t *testing.T) {
	for _, p := range []string{"", "public.[a-", `public.a\`, "[]"} {
		if _, err := compileGlob(p, '.'); err == nil {
			t.Errorf("compileGlob(%q) succeeded, want error", p)
		}
	}
}

func TestGlobCatchAll(t *testing.T) {
	for p, want := range map[string]bool{"*": true, "*.*": true, "**": true, "public.*": false, "x": false} {
		g, _ := compileGlob(p, '.')
		if got := g.isCatchAll(); got != want {
			t.Errorf("isCatchAll(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestColumnMask(t *testing.T) {
	tests := []struct {
		pattern, column string
		want            bool
	}{
		{"email", "public.customers.email", true},
		{"email", "email", true},
		{"customers.email", "public.customers.email", true},
		{"customers.email", "public.orders.email", false},
		{"*.ssn", "hr.people.ssn", true},
		{"public.customers.email", "public.customers.email", true},
		{"public.customers.email", "sales.customers.email", false},
		{"public.*.card_*", "public.payments.card_number", true},
	}
	for _, tt := range tests {
		g, err := compileGlob(tt.pattern, '.')
		if err != nil {
			t.Fatal(err)
		}
		c := ColumnMask{Pattern: tt.pattern, glob: g, nseg: len(splitUnescaped(tt.pattern, '.')), Masker: MaskerRedact}
		if got := c.matches(tt.column); got != tt.want {
			t.Errorf("column %q matches %q = %v, want %v", tt.pattern, tt.column, got, tt.want)
		}
	}
}

// TestGlobFastPaths checks the shortcut matchers against the general one.
func TestGlobFastPaths(t *testing.T) {
	patterns := []string{"*", "*.*", "*.*.*", "public.*", "public.ord*", "*.orders", "*_x", "p*", "/v1/*", "*/x"}
	names := []string{"", ".", "public", "public.", "public.orders", "public.orders.x", "x.orders", "pub.x_x", "a_x", "p", "/v1/a", "/v1/a/b", "/a/x", "a/x"}
	for _, sep := range []byte{'.', '/', 0} {
		for _, p := range patterns {
			g, err := compileGlob(p, sep)
			if err != nil {
				t.Fatal(err)
			}
			if g.kind == globGeneral {
				continue
			}
			gen := g
			gen.kind = globGeneral
			for _, n := range names {
				if got, want := g.match(n), gen.match(n); got != want {
					t.Errorf("sep %q: %q vs %q: fast path %v, general %v", sep, p, n, got, want)
				}
			}
		}
	}
}
