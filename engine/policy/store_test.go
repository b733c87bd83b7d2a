package policy

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const storeV1 = head + `
rules:
  - {id: v1, actions: [read], decision: allow}
`

const storeV2 = head + `
rules:
  - {id: v2a, actions: [read], decision: allow}
  - {id: v2b, actions: [write], decision: block}
`

const storeBroken = head + `
rules:
  - {id: v3, actions: [reed], decision: allow}
`

// syncBuffer is a log sink safe for the poller goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	// Write and rename, as editors and config management do, so the poller
	// never reads a half-written file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func newTestStore(t *testing.T, content string) (*Store, string, *prometheus.Registry, *syncBuffer) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, content)
	reg := prometheus.NewRegistry()
	logs := &syncBuffer{}
	s, err := NewStore(path, slog.New(slog.NewTextHandler(logs, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	return s, path, reg, logs
}

func ruleIDs(p *Policy) string {
	var ids []string
	for _, r := range p.rules {
		ids = append(ids, r.id)
	}
	return strings.Join(ids, ",")
}

func TestStoreReload(t *testing.T) {
	s, path, reg, logs := newTestStore(t, storeV1)
	var seen []string
	s.Subscribe(func(p *Policy) { seen = append(seen, ruleIDs(p)) })
	if len(seen) != 1 || seen[0] != "v1" {
		t.Fatalf("Subscribe did not deliver the current policy: %v", seen)
	}
	if got := testutil.ToFloat64(s.generation); got != 1 {
		t.Errorf("generation = %v, want 1", got)
	}

	writeFile(t, path, storeV2)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if ruleIDs(s.Current()) != "v2a,v2b" {
		t.Errorf("current = %s", ruleIDs(s.Current()))
	}

	// A broken file is rejected; the last good policy stays.
	writeFile(t, path, storeBroken)
	err := s.Reload()
	if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `policy.yaml:9: rule v3: unknown action "reed"`) {
		t.Fatalf("Reload of a broken file = %v", err)
	}
	if ruleIDs(s.Current()) != "v2a,v2b" {
		t.Errorf("broken reload replaced the policy: %s", ruleIDs(s.Current()))
	}
	if !strings.Contains(logs.String(), "keeping the last good policy") {
		t.Errorf("rejection not logged: %s", logs)
	}

	// A missing file too.
	os.Remove(path)
	if err := s.Reload(); err == nil {
		t.Error("Reload of a missing file succeeded")
	}

	if strings.Join(seen, " ") != "v1 v2a,v2b" {
		t.Errorf("subscriber saw %v", seen)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP interlock_policy_generation Number of policies loaded successfully since start; increments on every successful (re)load.
# TYPE interlock_policy_generation gauge
interlock_policy_generation 2
# HELP interlock_policy_reload_errors_total Policy reloads rejected because the file could not be read or was invalid; the last good policy stays active.
# TYPE interlock_policy_reload_errors_total counter
interlock_policy_reload_errors_total 2
# HELP interlock_policy_rules Number of rules in the active policy.
# TYPE interlock_policy_rules gauge
interlock_policy_rules 2
`)); err != nil {
		t.Error(err)
	}
}

func TestStorePoll(t *testing.T) {
	s, path, _, _ := newTestStore(t, storeV1)
	s.interval = 5 * time.Millisecond
	loaded := make(chan string, 10)
	s.Subscribe(func(p *Policy) { loaded <- ruleIDs(p) })
	<-loaded

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	wait := func(want string) {
		t.Helper()
		select {
		case got := <-loaded:
			if got != want {
				t.Fatalf("loaded %s, want %s", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no reload to %s", want)
		}
	}
	writeFile(t, path, storeV2)
	wait("v2a,v2b")

	// Broken: counted once, however many polls see it.
	writeFile(t, path, storeBroken)
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(s.reloadErrors) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if got := testutil.ToFloat64(s.reloadErrors); got != 1 {
		t.Errorf("reload errors = %v, want 1", got)
	}
	if ruleIDs(s.Current()) != "v2a,v2b" {
		t.Errorf("broken file replaced the policy")
	}

	// Same content with a new mtime: no reload.
	writeFile(t, path, storeV1)
	wait("v1")
	now := time.Now().Add(time.Minute)
	if err := os.Chtimes(path, now, now); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	select {
	case got := <-loaded:
		t.Errorf("touch reloaded %s", got)
	default:
	}
	if got := testutil.ToFloat64(s.generation); got != 3 {
		t.Errorf("generation = %v, want 3", got)
	}
}

func TestNewStoreErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := NewStore(filepath.Join(dir, "missing.yaml"), nil, nil); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	broken := filepath.Join(dir, "broken.yaml")
	writeFile(t, broken, storeBroken)
	if _, err := NewStore(broken, nil, nil); err == nil || !errors.Is(err, ErrInvalid) {
		t.Errorf("broken file: %v", err)
	}
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, storeV1)
	reg := prometheus.NewRegistry()
	if _, err := NewStore(good, nil, reg); err != nil {
		t.Fatal(err)
	}
	// Metrics belong to one store per registry.
	if _, err := NewStore(good, nil, reg); err == nil {
		t.Error("second store on the same registry registered its metrics")
	}
}

func TestStoreCheck(t *testing.T) {
	s, path, _, logs := newTestStore(t, storeV1)
	refuseV2 := func(p *Policy) error {
		if strings.HasPrefix(ruleIDs(p), "v2") {
			return errors.New("v2 is refused by the caller")
		}
		return nil
	}
	if err := s.SetCheck(func(*Policy) error { return errors.New("no") }); err == nil || !strings.Contains(err.Error(), "no") {
		t.Fatalf("SetCheck with a check the current policy fails = %v", err)
	}
	if err := s.SetCheck(refuseV2); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, storeV2)
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), "refused by the caller") {
		t.Fatalf("Reload of a policy the check refuses = %v", err)
	}
	if ruleIDs(s.Current()) != "v1" {
		t.Errorf("a refused policy became active: %s", ruleIDs(s.Current()))
	}
	if !strings.Contains(logs.String(), "keeping the last good policy") {
		t.Errorf("rejection not logged: %s", logs)
	}
}
