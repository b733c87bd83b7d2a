package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPtraceWarning(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]string{"0\n": "ptrace_scope is 0", "1\n": "", "2\n": "", "3\n": ""} {
		p := filepath.Join(dir, "scope")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := ptraceWarning(p); want == "" && got != "" || want != "" && !strings.Contains(got, want) {
			t.Errorf("ptrace_scope %q: warning %q, want %q", content, got, want)
		}
	}
	if got := ptraceWarning(filepath.Join(dir, "missing")); !strings.Contains(got, "no Yama") {
		t.Errorf("without Yama: warning %q", got)
	}
}
