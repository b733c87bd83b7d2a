package main

import (
	"bytes"
	"testing"
)

func TestTermSafe(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"select 1\n", "select 1\n"},
		{"a\tb", "a\tb"},
		{"x\x1b[2Jy", `x\x1b[2Jy`},
		{"del\x7f", `del\x7f`},
		{"c1 \u009b31m", `c1 \x9b31m`},
		{"bad \xff utf8", `bad \xff utf8`},
		{"ünïcode → ok", "ünïcode → ok"},
		{"cr\rlf", `cr\x0dlf`},
	} {
		var b bytes.Buffer
		n, err := termSafe{&b}.Write([]byte(tc.in))
		if err != nil || n != len(tc.in) || b.String() != tc.want {
			t.Errorf("termSafe(%q) = %q, %d, %v; want %q", tc.in, b.String(), n, err, tc.want)
		}
	}
}
