package main

import (
	"fmt"
	"io"
	"unicode/utf8"
)

// termSafe writes text for a terminal with every control character other
// than newline and tab (C0, DEL, C1) and every invalid UTF-8 byte shown as
// \xNN. Recorded text comes from agents (statement text, quoted names,
// executable paths, error messages): an escape sequence in it must not
// rewrite what an auditor's terminal shows.
type termSafe struct{ w io.Writer }

func (t termSafe) Write(p []byte) (int, error) {
	out := make([]byte, 0, len(p))
	for i := 0; i < len(p); {
		r, n := utf8.DecodeRune(p[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			out = fmt.Appendf(out, `\x%02x`, p[i])
		case r == '\n' || r == '\t':
			out = append(out, byte(r))
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			out = fmt.Appendf(out, `\x%02x`, r)
		default:
			out = append(out, p[i:i+n]...)
		}
		i += n
	}
	if _, err := t.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}
