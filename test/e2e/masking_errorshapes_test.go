package e2e

import (
	"strings"
	"testing"
)

// TestMaskingErrorShapes: casting a masked column (customers.phone:
// partial, nickname: hash) to a reg* type, or using it as a setting name,
// fails with the raw value in a message shape no list of shapes foresaw,
// and no detector covers a phone number or a nickname: with column rules,
// every quoted span of an error message is redacted. (Found by
// red-teaming: these leaked before.)
func TestMaskingErrorShapes(t *testing.T) {
	e := setupMaskPG(t)
	for _, q := range []string{
		"select phone::regclass from customers where id = 1",
		"select nickname::regclass from customers where id = 1",
		"select phone::regproc from customers where id = 1",
		"select current_setting(phone) from customers where id = 1",
		"select phone::regrole from customers where id = 1",
	} {
		out, _ := psqlIn(t, e.analyst, e.agentDSN(), "-c", q)
		if !strings.Contains(out, "ERROR") {
			t.Errorf("%s: want an error, got\n%s", q, out)
		}
		for _, raw := range []string{"+1 (555) 123-4567", `"ali"`} {
			if strings.Contains(out, raw) {
				t.Errorf("%s: the agent read the masked value %q from the error", q, raw)
			}
		}
	}
}
