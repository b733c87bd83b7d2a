package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "interlock.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigDefaultsAndRelativePolicy(t *testing.T) {
	p := writeConfig(t, "policy: my-policy.yaml\n")
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(filepath.Dir(p), "my-policy.yaml"); c.Policy != want {
		t.Errorf("policy = %q, want %q (relative to the config file)", c.Policy, want)
	}
	if c.Engine.Listen4 != "127.0.0.1:15001" || c.Redirect.PinDir != "/sys/fs/bpf/interlock" || c.Redirect.LabelScanInterval != 500*time.Millisecond {
		t.Errorf("defaults not applied: %+v", c)
	}
	if m, _ := c.Mark(); m != 0x4c {
		t.Errorf("mark = %#x", m)
	}
}

func TestConfigEnvOverride(t *testing.T) {
	t.Setenv("INTERLOCK_METRICS_LISTEN", "127.0.0.1:9999")
	t.Setenv("INTERLOCK_REDIRECT_LABEL_SCAN_INTERVAL", "250ms")
	c, err := LoadConfig(writeConfig(t, "metrics:\n  listen: 127.0.0.1:1234\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Metrics.Listen != "127.0.0.1:9999" || c.Redirect.LabelScanInterval != 250*time.Millisecond {
		t.Errorf("env did not override: metrics=%s scan=%s", c.Metrics.Listen, c.Redirect.LabelScanInterval)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	cases := []struct{ body, want string }{
		{"engine:\n  listen4: 10.0.0.1:15001\n", "engine.listen4"},
		{"engine:\n  listen6: \"[::1]:x\"\n", "engine.listen6"},
		{"engine:\n  mark: 0\n", "engine.mark"},
		{"engine:\n  mark: banana\n", "engine.mark"},
		{"redirect:\n  label_scan_interval: 5s\n", "redirect.label_scan_interval"},
		{"redirect:\n  pin_dir: relative/dir\n", "redirect.pin_dir"},
		{"metrics:\n  listen: nowhere\n", "metrics.listen"},
		{"log:\n  level: chatty\n", "log.level"},
		{"log:\n  format: xml\n", "log.format"},
		{"engine:\n  listne4: 127.0.0.1:1\n", "listne4"}, // unknown key
		{"colour: blue\n", "colour"},
		{"engine: [\n", "read config"},
	}
	for _, tc := range cases {
		_, err := LoadConfig(writeConfig(t, tc.body))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: error %v, want one naming %q", tc.body, err, tc.want)
		}
	}
}

func TestConfigMissingDefaultFileMeansDefaults(t *testing.T) {
	if _, err := os.Stat(defaultConfigPath); err == nil {
		t.Skip("a real config exists at the default path")
	}
	if _, err := LoadConfig(defaultConfigPath); err != nil {
		t.Fatalf("missing default config should mean defaults: %v", err)
	}
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "nope.yaml")); err == nil {
		t.Fatal("a missing explicitly named config must be an error")
	}
}
