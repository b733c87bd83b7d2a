package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/interlockhq/interlock/engine/recording"
)

// runAuditCmd runs `audit args…` against the configuration at path and
// returns its output and exit code as main would compute it.
func runAuditCmd(t *testing.T, path string, args ...string) (string, int) {
	t.Helper()
	cmd := newAuditCmd(func() (*Config, error) { return LoadConfig(path) })
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		return out.String() + errString(ee.err), ee.code
	case err != nil:
		return out.String() + err.Error(), 1
	}
	return out.String(), 0
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestAuditMigrate: a chain whose head is missing (as an earlier version
// that never wrote one leaves it) is refused by the daemon and by verify;
// `audit migrate` verifies it and signs a head, after which both accept it.
func TestAuditMigrate(t *testing.T) {
	state := t.TempDir()
	cfgPath := writeTemp(t, "interlock.yaml", "policy: "+examplePolicy+"\nstate_dir: "+state+"\n")
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	key, err := recording.LoadOrCreateKey(cfg.recordingKeyPath())
	if err != nil {
		t.Fatal(err)
	}
	open := func() (*recording.Recorder, error) {
		st, err := openRecordingStore(context.Background(), cfg, true)
		if err != nil {
			t.Fatal(err)
		}
		r, err := recording.Open(recording.Config{Store: st, Key: key, Host: "node-1"})
		if err != nil {
			st.Close()
		}
		return r, err
	}
	r, err := open()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Append(context.Background(), recording.TypeSessionStart, "s1", map[string]string{"agent": "a"}); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if err := os.Remove(filepath.Join(cfg.recordingDir(), "head.json")); err != nil {
		t.Fatal(err)
	}

	if out, code := runAuditCmd(t, cfgPath, "verify"); code != 1 || !strings.Contains(out, "no signed head") {
		t.Fatalf("verify without a head: exit %d\n%s", code, out)
	}
	if _, err := open(); err == nil || !strings.Contains(err.Error(), "audit migrate") {
		t.Fatalf("the daemon over a chain without a head: %v", err)
	}
	if out, code := runAuditCmd(t, cfgPath, "migrate"); code != 0 || !strings.Contains(out, "ok: host node-1") {
		t.Fatalf("migrate: exit %d\n%s", code, out)
	}
	if out, code := runAuditCmd(t, cfgPath, "verify"); code != 0 {
		t.Fatalf("verify after migrate: exit %d\n%s", code, out)
	}
	r, err = open()
	if err != nil {
		t.Fatalf("the daemon after migrate: %v", err)
	}
	r.Close()
}
