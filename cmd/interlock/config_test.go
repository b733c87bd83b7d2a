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

func TestConfigRecording(t *testing.T) {
	c, err := LoadConfig(writeConfig(t, "policy: p.yaml\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Recording
	seg, keep := r.Sizes()
	if r.Store != "files" || r.Redaction != "parameters" || seg != 64<<20 || keep != 0 || r.CheckpointEvery != 1000 || r.CheckpointInterval != 10*time.Second ||
		r.Sync != "always" || r.SyncInterval != 100*time.Millisecond || r.SyncEvery() != 0 {
		t.Errorf("recording defaults: %+v", r)
	}
	c, err = LoadConfig(writeConfig(t, "recording:\n  sync: interval\n  sync_interval: 250ms\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Recording.SyncEvery() != 250*time.Millisecond {
		t.Errorf("recording.sync interval: %+v", c.Recording)
	}
	t.Setenv("INTERLOCK_RECORDING_DSN", "postgres://rec@db/audit")
	c, err = LoadConfig(writeConfig(t, "recording:\n  store: postgres\n  redaction: full\n  segment_size: 1MiB\n  retention_size: 1GiB\n  retention_age: 720h\n"))
	if err != nil {
		t.Fatal(err)
	}
	if seg, keep := c.Recording.Sizes(); c.Recording.DSN != "postgres://rec@db/audit" || seg != 1<<20 || keep != 1<<30 || c.Recording.RetentionAge != 720*time.Hour {
		t.Errorf("recording: %+v", c.Recording)
	}
	t.Setenv("INTERLOCK_RECORDING_DSN", "")
	for _, tc := range []struct{ body, want string }{
		{"recording:\n  store: s3\n", "recording.store"},
		{"recording:\n  store: postgres\n", "recording.dsn"},
		{"recording:\n  dsn: postgres://x\n", "recording.dsn"},
		{"recording:\n  redaction: some\n", "recording.redaction"},
		{"recording:\n  segment_size: 1KiB\n", "recording.segment_size"},
		{"recording:\n  segment_size: big\n", "recording.segment_size"},
		{"recording:\n  retention_size: 65MiB\n", "recording.retention_size"},
		{"recording:\n  retention_age: -1h\n", "recording.retention_age"},
		{"recording:\n  checkpoint_every: 0\n", "recording.checkpoint_every"},
		{"recording:\n  checkpoint_interval: 0s\n", "recording.checkpoint_interval"},
		{"recording:\n  sync: never\n", "recording.sync"},
		{"recording:\n  sync: interval\n  sync_interval: 0s\n", "recording.sync_interval"},
		{"recording:\n  sync: interval\n  sync_interval: -1s\n", "recording.sync_interval"},
		{"recording:\n  sync: interval\n  sync_interval: 11s\n", "recording.sync_interval"},
		{"recording:\n  sync_interval: soon\n", "recording.sync_interval"},
	} {
		_, err := LoadConfig(writeConfig(t, tc.body))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one naming %s", tc.body, err, tc.want)
		}
	}
}

func TestConfigApprovals(t *testing.T) {
	c, err := LoadConfig(writeConfig(t, "policy: p.yaml\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Approvals; !a.Enabled || a.Store != "memory" || a.Listen != "" || a.OIDC.RolesClaim != "groups" {
		t.Errorf("approvals defaults: %+v", a)
	}
	c, err = LoadConfig(writeConfig(t, `approvals:
  listen: 127.0.0.1:9470
  store: postgres
  dsn: postgres://approvals@db/interlock
  oidc:
    issuer: https://idp.example.com/realms/x
    client_id: interlock
    roles_claim: realm_access.roles
    role_map:
      - {value: DB.Admins, roles: [dba, oncall]}
  webhooks:
    - {url: "https://hooks.example.com/services/T/B/x", format: slack}
    - {url: "http://127.0.0.1:8080/approvals"}
`))
	if err != nil {
		t.Fatal(err)
	}
	a := c.Approvals
	if a.Listen != "127.0.0.1:9470" || a.OIDC.RolesClaim != "realm_access.roles" || len(a.OIDC.RoleMap) != 1 || a.OIDC.RoleMap[0].Value != "DB.Admins" ||
		len(a.OIDC.RoleMap[0].Roles) != 2 || len(a.Webhooks) != 2 || a.Webhooks[0].Format != "slack" {
		t.Errorf("approvals: %+v", a)
	}
	for _, tc := range []struct{ body, want string }{
		{"approvals:\n  store: redis\n", "approvals.store"},
		{"approvals:\n  store: postgres\n", "approvals.dsn"},
		{"approvals:\n  dsn: postgres://x\n", "approvals.dsn"},
		{"approvals:\n  listen: everywhere\n  oidc: {issuer: https://i, client_id: c}\n", "approvals.listen"},
		{"approvals:\n  listen: 127.0.0.1:9470\n", "approvals.oidc"},
		{"approvals:\n  oidc: {issuer: https://i, client_id: c}\n", "approvals.listen"},
		{"approvals:\n  listen: 127.0.0.1:9470\n  oidc: {issuer: ftp://i, client_id: c}\n", "approvals.oidc.issuer"},
		{"approvals:\n  listen: 127.0.0.1:9470\n  tls_cert: /c.pem\n  oidc: {issuer: https://i, client_id: c}\n", "approvals.tls_cert"},
		{"approvals:\n  oidc:\n    role_map: [{value: x}]\n", "approvals.oidc.role_map[0]"},
		{"approvals:\n  webhooks: [{url: nowhere}]\n", "approvals.webhooks[0].url"},
		{"approvals:\n  webhooks: [{url: 'https://h/x', format: teams}]\n", "approvals.webhooks[0].format"},
		{"approvals:\n  listne: x\n", "listne"},
	} {
		_, err := LoadConfig(writeConfig(t, tc.body))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one naming %s", tc.body, err, tc.want)
		}
	}
}

func TestConfigMaskingKey(t *testing.T) {
	dir := t.TempDir()
	c, err := LoadConfig(writeConfig(t, "policy: p.yaml\nstate_dir: "+dir+"/state\n"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := c.LoadMaskingKey()
	if err != nil || len(key) != 32 {
		t.Fatalf("generated key: %d bytes, %v", len(key), err)
	}
	st, err := os.Stat(filepath.Join(dir, "state", "masking.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	again, err := c.LoadMaskingKey()
	if err != nil || string(again) != string(key) {
		t.Fatalf("key not stable across starts: %v", err)
	}
	// An explicit file is read, never created; short keys are refused.
	c.Masking.KeyFile = filepath.Join(dir, "k")
	if _, err := c.LoadMaskingKey(); err == nil || !strings.Contains(err.Error(), "masking.key_file") {
		t.Fatalf("missing key file: %v", err)
	}
	os.WriteFile(c.Masking.KeyFile, []byte("short"), 0o600)
	if _, err := c.LoadMaskingKey(); err == nil || !strings.Contains(err.Error(), "masking.key_file") {
		t.Fatalf("short key: %v", err)
	}
	os.WriteFile(c.Masking.KeyFile, []byte("0123456789abcdef0123"), 0o600)
	if k, err := c.LoadMaskingKey(); err != nil || string(k) != "0123456789abcdef0123" {
		t.Fatalf("explicit key: %q %v", k, err)
	}
}
