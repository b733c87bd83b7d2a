package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/interlockhq/interlock/engine/masking"
)

const defaultConfigPath = "/etc/interlock/interlock.yaml"

// Config is the daemon configuration (interlock.yaml). Who may do what
// lives in the policy file it points to; this file says how the daemon runs.
type Config struct {
	Policy   string         `mapstructure:"policy"`
	StateDir string         `mapstructure:"state_dir"`
	Engine   EngineConfig   `mapstructure:"engine"`
	Redirect RedirectConfig `mapstructure:"redirect"`
	Postgres PostgresConfig `mapstructure:"postgres"`
	Metrics  MetricsConfig  `mapstructure:"metrics"`
	API      APIConfig      `mapstructure:"api"`
	Log      LogConfig      `mapstructure:"log"`
	// Recording: see RecordingConfig.
	Recording RecordingConfig `mapstructure:"recording"`
	// Approvals: see ApprovalsConfig.
	Approvals ApprovalsConfig `mapstructure:"approvals"`
	// Masking: see MaskingConfig.
	Masking MaskingConfig `mapstructure:"masking"`

	file string // where it was loaded from, "" for defaults only
}

// EngineConfig configures the listeners the kernel redirects to.
type EngineConfig struct {
	Listen4       string        `mapstructure:"listen4"`
	Listen6       string        `mapstructure:"listen6"`
	Mark          string        `mapstructure:"mark"`
	DialTimeout   time.Duration `mapstructure:"dial_timeout"`
	ShutdownGrace time.Duration `mapstructure:"shutdown_grace"`
}

// RedirectConfig configures the kernel side.
type RedirectConfig struct {
	Cgroup            string        `mapstructure:"cgroup"`
	GuardCgroup       string        `mapstructure:"guard_cgroup"`
	PinDir            string        `mapstructure:"pin_dir"`
	LabelScanInterval time.Duration `mapstructure:"label_scan_interval"`
	ResolveInterval   time.Duration `mapstructure:"resolve_interval"`
}

// PostgresConfig configures the PostgreSQL protocol handler.
type PostgresConfig struct {
	MaxMessageSize   string        `mapstructure:"max_message_size"`
	HandshakeTimeout time.Duration `mapstructure:"handshake_timeout"`
	IdleTimeout      time.Duration `mapstructure:"idle_timeout"`
	TLSCert          string        `mapstructure:"tls_cert"`
	TLSKey           string        `mapstructure:"tls_key"`
	ClassifierCache  int           `mapstructure:"classifier_cache"`
}

// MetricsConfig configures the Prometheus endpoint.
type MetricsConfig struct {
	Listen string `mapstructure:"listen"`
}

// APIConfig configures the local control socket.
type APIConfig struct {
	Socket string `mapstructure:"socket"`
}

// LogConfig configures structured logs.
type LogConfig struct {
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"`
}

// RecordingConfig configures session recording (docs/recording.md).
type RecordingConfig struct {
	// Store is files (segment files under state_dir/recordings), postgres
	// (the shared store at DSN) or none (no recording: benchmarks only).
	Store     string `mapstructure:"store"`
	DSN       string `mapstructure:"dsn"`
	Redaction string `mapstructure:"redaction"` // none, parameters or full
	// SegmentSize is when a segment file is sealed and a new one started;
	// RetentionAge and RetentionSize remove the oldest sealed segments
	// (0: keep). Files store only.
	SegmentSize   string        `mapstructure:"segment_size"`
	RetentionAge  time.Duration `mapstructure:"retention_age"`
	RetentionSize string        `mapstructure:"retention_size"`
	// A signed checkpoint is written every CheckpointEvery records, or
	// CheckpointInterval after the first record it would cover.
	CheckpointEvery    int           `mapstructure:"checkpoint_every"`
	CheckpointInterval time.Duration `mapstructure:"checkpoint_interval"`
	// Sync is always (a statement's record is durable before the
	// statement is forwarded) or interval (written before, durable within
	// SyncInterval: a power loss can lose that last interval).
	Sync         string        `mapstructure:"sync"`
	SyncInterval time.Duration `mapstructure:"sync_interval"`
}

// SyncEvery is the recorder's SyncInterval: 0 with sync: always.
func (r *RecordingConfig) SyncEvery() time.Duration {
	if r.Sync == "interval" {
		return r.SyncInterval
	}
	return 0
}

// MaskingConfig configures the enforcement of mask decisions
// (docs/masking.md).
type MaskingConfig struct {
	// KeyFile holds the hash masker's secret (at least 16 bytes). Empty:
	// state_dir/masking.key, created with 32 random bytes at first start.
	KeyFile string `mapstructure:"key_file"`
}

// maskingKeyBytes is the size of a generated masking key.
const maskingKeyBytes = 32

// LoadMaskingKey reads the masking key, creating the default one (0600 in
// state_dir) when key_file is not set and it does not exist yet.
func (c *Config) LoadMaskingKey() ([]byte, error) {
	path := c.Masking.KeyFile
	if path == "" {
		path = filepath.Join(c.StateDir, "masking.key")
		if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
			return nil, fmt.Errorf("masking.key_file: %w", err)
		}
		key := make([]byte, maskingKeyBytes)
		rand.Read(key)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		switch {
		case err == nil:
			_, err = f.Write(key)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(path)
				return nil, fmt.Errorf("masking.key_file: write %s: %w", path, err)
			}
			return key, nil
		case !errors.Is(err, fs.ErrExist):
			return nil, fmt.Errorf("masking.key_file: create %s: %w", path, err)
		}
	}
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("masking.key_file: %w", err)
	}
	if len(key) < masking.MinKeyLen {
		return nil, fmt.Errorf("masking.key_file: %s holds %d bytes, need at least %d", path, len(key), masking.MinKeyLen)
	}
	return key, nil
}

var configDefaults = map[string]any{
	"policy":                       "policy.yaml",
	"state_dir":                    "/var/lib/interlock",
	"engine.listen4":               "127.0.0.1:15001",
	"engine.listen6":               "[::1]:15001",
	"engine.mark":                  "0x4c",
	"engine.dial_timeout":          "10s",
	"engine.shutdown_grace":        "10s",
	"redirect.cgroup":              "",
	"redirect.guard_cgroup":        "",
	"redirect.pin_dir":             "/sys/fs/bpf/interlock",
	"redirect.label_scan_interval": "500ms",
	"redirect.resolve_interval":    "30s",
	"postgres.max_message_size":    "64MiB",
	"postgres.handshake_timeout":   "15s",
	"postgres.idle_timeout":        "0s",
	"postgres.tls_cert":            "",
	"postgres.tls_key":             "",
	"postgres.classifier_cache":    10000,
	"metrics.listen":               "127.0.0.1:9464",
	"api.socket":                   "/run/interlock/interlock.sock",
	"log.level":                    "info",
	"log.format":                   "text",

	"recording.store":               "files",
	"recording.dsn":                 "",
	"recording.redaction":           "parameters",
	"recording.segment_size":        "64MiB",
	"recording.retention_age":       "0s",
	"recording.retention_size":      "0",
	"recording.checkpoint_every":    1000,
	"recording.checkpoint_interval": "10s",
	"recording.sync":                "always",
	"recording.sync_interval":       "100ms",

	"masking.key_file": "",

	"approvals.enabled":          true,
	"approvals.listen":           "",
	"approvals.tls_cert":         "",
	"approvals.tls_key":          "",
	"approvals.store":            "memory",
	"approvals.dsn":              "",
	"approvals.local_group":      "",
	"approvals.oidc.issuer":      "",
	"approvals.oidc.client_id":   "",
	"approvals.oidc.roles_claim": "groups",
	"approvals.oidc.ca_file":     "",
}

// LoadConfig reads path (a missing file at the default path means "all
// defaults"), applies INTERLOCK_* environment overrides (INTERLOCK_METRICS_LISTEN
// for metrics.listen) and validates. Unknown keys are errors, and every
// error names the key path.
func LoadConfig(path string) (*Config, error) {
	v := viper.New()
	for k, d := range configDefaults {
		v.SetDefault(k, d)
	}
	v.SetEnvPrefix("INTERLOCK")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	v.SetConfigType("yaml")
	file := ""
	if path != "" {
		if _, err := os.Stat(path); err == nil || path != defaultConfigPath {
			v.SetConfigFile(path)
			if err := v.ReadInConfig(); err != nil {
				return nil, fmt.Errorf("read config %s: %w", path, err)
			}
			file = path
		}
	}
	var c Config
	err := v.UnmarshalExact(&c, func(dc *mapstructure.DecoderConfig) {
		dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		)
	})
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", displayName(file), err)
	}
	c.file = file
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", displayName(file), err)
	}
	return &c, nil
}

func displayName(file string) string {
	if file == "" {
		return "(defaults)"
	}
	return file
}

func (c *Config) validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.Policy == "" {
		bad("policy", "must name the policy file")
	} else if !filepath.IsAbs(c.Policy) && c.file != "" {
		c.Policy = filepath.Join(filepath.Dir(c.file), c.Policy)
	}
	for key, a := range map[string]string{"engine.listen4": c.Engine.Listen4, "engine.listen6": c.Engine.Listen6} {
		ap, err := netip.ParseAddrPort(a)
		switch {
		case err != nil:
			bad(key, "%q is not ip:port", a)
		case !ap.Addr().IsLoopback():
			bad(key, "%q must be a loopback address (the kernel redirects to 127.0.0.1 and ::1)", a)
		case key == "engine.listen4" && ap.Addr() != netip.MustParseAddr("127.0.0.1"):
			bad(key, "%q must be 127.0.0.1:PORT", a)
		case key == "engine.listen6" && ap.Addr() != netip.IPv6Loopback():
			bad(key, "%q must be [::1]:PORT", a)
		}
	}
	if _, err := c.Mark(); err != nil {
		bad("engine.mark", "%v", err)
	}
	if c.Engine.DialTimeout <= 0 {
		bad("engine.dial_timeout", "must be positive")
	}
	if c.Redirect.LabelScanInterval <= 0 || c.Redirect.LabelScanInterval > time.Second {
		bad("redirect.label_scan_interval", "must be in (0, 1s] so that new labels apply within a second")
	}
	if c.Redirect.ResolveInterval <= 0 {
		bad("redirect.resolve_interval", "must be positive")
	}
	if !filepath.IsAbs(c.Redirect.PinDir) {
		bad("redirect.pin_dir", "%q must be an absolute path on bpffs", c.Redirect.PinDir)
	}
	if _, err := c.MaxMessageSize(); err != nil {
		bad("postgres.max_message_size", "%v", err)
	}
	if c.Postgres.HandshakeTimeout <= 0 {
		bad("postgres.handshake_timeout", "must be positive")
	}
	if c.Postgres.IdleTimeout < 0 {
		bad("postgres.idle_timeout", "must not be negative (0 disables it)")
	}
	if (c.Postgres.TLSCert == "") != (c.Postgres.TLSKey == "") {
		bad("postgres.tls_cert", "tls_cert and tls_key go together (leave both empty for a self-signed certificate in state_dir)")
	}
	if c.Postgres.ClassifierCache < 0 {
		bad("postgres.classifier_cache", "must not be negative")
	}
	if c.Metrics.Listen != "" {
		if _, err := netip.ParseAddrPort(c.Metrics.Listen); err != nil {
			bad("metrics.listen", "%q is not ip:port (empty disables metrics)", c.Metrics.Listen)
		}
	}
	if c.API.Socket == "" || !filepath.IsAbs(c.API.Socket) {
		bad("api.socket", "%q must be an absolute path", c.API.Socket)
	}
	if _, err := c.LogLevel(); err != nil {
		bad("log.level", "%v", err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "%q must be text or json", c.Log.Format)
	}
	errs = append(errs, c.Recording.validate()...)
	errs = append(errs, c.Approvals.validate()...)
	return errors.Join(errs...)
}

func (r *RecordingConfig) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("recording.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	switch r.Store {
	case "files", "none":
		if r.DSN != "" {
			bad("dsn", "is only used with store: postgres")
		}
	case "postgres":
		if r.DSN == "" {
			bad("dsn", "is required with store: postgres (a libpq URL or key=value string; INTERLOCK_RECORDING_DSN keeps the password out of the file)")
		}
	default:
		bad("store", "%q must be files, postgres or none", r.Store)
	}
	switch r.Redaction {
	case "none", "parameters", "full":
	default:
		bad("redaction", "%q must be none, parameters or full", r.Redaction)
	}
	seg, err := parseSize(r.SegmentSize)
	if err != nil {
		bad("segment_size", "%v", err)
	} else if seg < 64<<10 || seg > 4<<30 {
		bad("segment_size", "%q must be between 64KiB and 4GiB", r.SegmentSize)
	}
	if keep, err := parseSize(r.RetentionSize); err != nil {
		bad("retention_size", "%v", err)
	} else if keep != 0 && keep < 2*seg {
		bad("retention_size", "%q must be 0 (no limit) or at least two segments (2 × segment_size)", r.RetentionSize)
	}
	if r.RetentionAge < 0 {
		bad("retention_age", "must not be negative (0 keeps everything)")
	}
	if r.CheckpointEvery <= 0 {
		bad("checkpoint_every", "must be a positive number of records")
	}
	if r.CheckpointInterval <= 0 {
		bad("checkpoint_interval", "must be positive")
	}
	switch r.Sync {
	case "always", "interval":
	default:
		bad("sync", "%q must be always (durable before the statement runs) or interval (durable within sync_interval)", r.Sync)
	}
	// Checked with sync: always too, so that switching modes cannot
	// reveal a bad value later.
	if r.SyncInterval <= 0 || r.SyncInterval > 10*time.Second {
		bad("sync_interval", "%v must be in (0, 10s]: it is how much recording a power loss can take", r.SyncInterval)
	}
	return errs
}

// Sizes parses segment_size and retention_size (validated).
func (r *RecordingConfig) Sizes() (segment, retention int64) {
	segment, _ = parseSize(r.SegmentSize)
	retention, _ = parseSize(r.RetentionSize)
	return segment, retention
}

// parseSize reads "64MiB", "1GiB", "512KiB" or a plain byte count.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (e.g. 64MiB)", s)
	}
	return n * mult, nil
}

// Mark parses engine.mark (decimal or 0x hex).
func (c *Config) Mark() (uint32, error) {
	n, err := strconv.ParseUint(c.Engine.Mark, 0, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a 32-bit number", c.Engine.Mark)
	}
	if n == 0 {
		return 0, errors.New("must be non-zero (it marks the engine's own dials)")
	}
	return uint32(n), nil
}

// MaxMessageSize parses postgres.max_message_size ("64MiB", "1048576").
func (c *Config) MaxMessageSize() (int, error) {
	s := strings.TrimSpace(c.Postgres.MaxMessageSize)
	mult := 1
	for _, u := range []struct {
		suffix string
		mult   int
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size (e.g. 64MiB)", c.Postgres.MaxMessageSize)
	}
	if n*mult < 1024 || n*mult > 1<<30 {
		return 0, fmt.Errorf("%q must be between 1KiB and 1GiB", c.Postgres.MaxMessageSize)
	}
	return n * mult, nil
}

// LogLevel parses log.level.
func (c *Config) LogLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.Log.Level)); err != nil {
		return 0, fmt.Errorf("%q must be debug, info, warn or error", c.Log.Level)
	}
	return l, nil
}

// Logger builds the daemon's logger.
func (c *Config) Logger() *slog.Logger {
	lvl, _ := c.LogLevel()
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// ApprovalsConfig configures just-in-time approvals (docs/approvals.md):
// where approvers reach the API, how they authenticate, where requests
// live and who is notified.
type ApprovalsConfig struct {
	// Enabled: approve decisions hold the statement for a human. When
	// false they are refused.
	Enabled bool `mapstructure:"enabled"`
	// Listen is the approver API's ip:port ("" : the unix socket only).
	// Agents cannot reach it: its port is denied to them in the kernel.
	Listen  string `mapstructure:"listen"`
	TLSCert string `mapstructure:"tls_cert"`
	TLSKey  string `mapstructure:"tls_key"`
	// Store is memory (this host) or postgres (shared by a fleet, at DSN).
	Store string `mapstructure:"store"`
	DSN   string `mapstructure:"dsn"`
	// LocalGroup may use the approvals routes of the control socket
	// besides root.
	LocalGroup string                  `mapstructure:"local_group"`
	OIDC       ApprovalsOIDCConfig     `mapstructure:"oidc"`
	Webhooks   []ApprovalWebhookConfig `mapstructure:"webhooks"`
}

// ApprovalsOIDCConfig says how approvers' ID tokens are verified.
type ApprovalsOIDCConfig struct {
	Issuer     string `mapstructure:"issuer"`
	ClientID   string `mapstructure:"client_id"`
	RolesClaim string `mapstructure:"roles_claim"`
	// RoleMap maps claim values to approver roles (empty: the claim values
	// are the roles). A list, so that values keep their case and dots.
	RoleMap []ApprovalRoleMapping `mapstructure:"role_map"`
	CAFile  string                `mapstructure:"ca_file"`
}

// ApprovalRoleMapping gives the holders of one claim value approver roles.
type ApprovalRoleMapping struct {
	Value string   `mapstructure:"value"`
	Roles []string `mapstructure:"roles"`
}

// ApprovalWebhookConfig is one notification endpoint.
type ApprovalWebhookConfig struct {
	URL    string `mapstructure:"url"`
	Format string `mapstructure:"format"` // json (default) or slack
}

func (a *ApprovalsConfig) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("approvals.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	switch a.Store {
	case "memory":
		if a.DSN != "" {
			bad("dsn", "is only used with store: postgres")
		}
	case "postgres":
		if a.DSN == "" {
			bad("dsn", "is required with store: postgres (INTERLOCK_APPROVALS_DSN keeps the password out of the file)")
		}
	default:
		bad("store", "%q must be memory or postgres", a.Store)
	}
	if a.Listen != "" {
		if _, err := netip.ParseAddrPort(a.Listen); err != nil {
			bad("listen", "%q is not ip:port (empty: the unix socket only)", a.Listen)
		}
		if a.OIDC.Issuer == "" || a.OIDC.ClientID == "" {
			bad("oidc", "issuer and client_id are required with listen: approvers authenticate with OIDC ID tokens")
		}
	} else if a.OIDC.Issuer != "" || a.TLSCert != "" {
		bad("listen", "is required with oidc and tls_cert: they configure the approver API's listener")
	}
	if (a.TLSCert == "") != (a.TLSKey == "") {
		bad("tls_cert", "tls_cert and tls_key go together")
	}
	if a.OIDC.Issuer != "" {
		if u, err := url.Parse(a.OIDC.Issuer); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("oidc.issuer", "%q must be an http(s) URL", a.OIDC.Issuer)
		}
	}
	if a.OIDC.RolesClaim == "" {
		bad("oidc.roles_claim", "must name the claim holding groups or roles")
	}
	for i, m := range a.OIDC.RoleMap {
		if m.Value == "" || len(m.Roles) == 0 {
			bad(fmt.Sprintf("oidc.role_map[%d]", i), "needs a value and at least one role")
		}
	}
	if a.OIDC.CAFile != "" && !filepath.IsAbs(a.OIDC.CAFile) {
		bad("oidc.ca_file", "%q must be an absolute path", a.OIDC.CAFile)
	}
	for i, w := range a.Webhooks {
		key := fmt.Sprintf("webhooks[%d]", i)
		if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad(key+".url", "must be an http(s) URL")
		}
		switch w.Format {
		case "", "json", "slack":
		default:
			bad(key+".format", "%q must be json or slack", w.Format)
		}
	}
	return errs
}
