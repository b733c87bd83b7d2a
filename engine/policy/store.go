package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Store holds the current policy of a running engine and replaces it when
// the file changes. Readers call Current on every decision (an atomic load);
// a reload never blocks them, and a broken file never replaces a good
// policy.
type Store struct {
	path     string
	log      *slog.Logger
	interval time.Duration

	cur atomic.Pointer[Policy]

	// mu serialises reloads and subscriber calls, so subscribers see
	// policies one at a time and in load order.
	mu    sync.Mutex
	subs  []func(*Policy)
	check func(*Policy) error // SetCheck; nil: none
	seen  fileStamp           // last state of the file looked at, loaded or not
	hash  [sha256.Size]byte

	generation   prometheus.Gauge
	reloadErrors prometheus.Counter
	rules        prometheus.Gauge
}

// fileStamp is what the poller compares to notice a change cheaply.
type fileStamp struct {
	modTime time.Time
	size    int64
	hash    [sha256.Size]byte
	err     string // a stat or read error, so a missing file is logged once
}

// NewStore loads the policy at path and returns a Store holding it. A
// missing or broken file is an error: the engine must not start without a
// policy. Metrics are registered on reg when it is not nil; log may be nil.
func NewStore(path string, log *slog.Logger, reg prometheus.Registerer) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		path:     path,
		log:      log.With("policy", path),
		interval: time.Second,
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "interlock_policy_generation",
			Help: "Number of policies loaded successfully since start; increments on every successful (re)load.",
		}),
		reloadErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "interlock_policy_reload_errors_total",
			Help: "Policy reloads rejected because the file could not be read or was invalid; the last good policy stays active.",
		}),
		rules: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "interlock_policy_rules",
			Help: "Number of rules in the active policy.",
		}),
	}
	data, st, err := s.read()
	if err != nil {
		return nil, err
	}
	p, err := Parse(path, data)
	if err != nil {
		return nil, fmt.Errorf("load policy: %w", err)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.generation, s.reloadErrors, s.rules} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register policy metrics: %w", err)
			}
		}
	}
	s.seen = st
	s.install(p, st.hash)
	return s, nil
}

// Current returns the active policy. Use one *Policy for a whole operation
// (AgentRoles and Decide) so a concurrent reload cannot mix two policies.
func (s *Store) Current() *Policy { return s.cur.Load() }

// Subscribe registers fn to be called with every policy that becomes active,
// starting with the current one (called before Subscribe returns). Calls are
// serialised and in load order; fn must not call Reload or Subscribe.
func (s *Store) Subscribe(fn func(*Policy)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs = append(s.subs, fn)
	fn(s.cur.Load())
}

// SetCheck adds a check that every policy must pass, besides Parse, to
// become active: what only the caller can judge (the kernel's name ids).
// It checks the current policy first and returns its error, without
// keeping the check, when that one fails.
func (s *Store) SetCheck(check func(*Policy) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := check(s.cur.Load()); err != nil {
		return fmt.Errorf("load policy: %w", err)
	}
	s.check = check
	return nil
}

// Reload reads the file and activates it if it is valid, whether or not it
// changed (the SIGHUP path). On error the previous policy stays active, the
// error is logged and counted, and returned.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, st, err := s.read()
	s.seen = st
	if err != nil {
		return s.reject(err)
	}
	return s.load(data, st.hash)
}

// Run polls the file every second until ctx is done and reloads it when its
// content changes (checked by modification time and size first, then by
// content hash, so touching the file does not reload it).
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.poll()
		}
	}
}

// poll reloads if the file changed since it was last looked at. A file that
// stays broken is reported once, not every second.
func (s *Store) poll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := os.Stat(s.path)
	if err != nil {
		if s.seen.err != err.Error() {
			s.seen = fileStamp{err: err.Error()}
			s.reject(fmt.Errorf("stat policy: %w", err))
		}
		return
	}
	if s.seen.err == "" && fi.ModTime().Equal(s.seen.modTime) && fi.Size() == s.seen.size {
		return
	}
	data, st, err := s.read()
	if err != nil {
		if s.seen.err != st.err {
			s.seen = st
			s.reject(err)
		}
		return
	}
	changed := st.hash != s.seen.hash || s.seen.err != ""
	s.seen = st
	if !changed {
		return
	}
	if st.hash == s.hash {
		// Back to the content that is already active (say a broken edit
		// was reverted): nothing to load.
		s.log.Info("policy file restored to the active version")
		return
	}
	_ = s.load(data, st.hash) // logged and counted inside
}

// read reads the file and stamps it.
func (s *Store) read() ([]byte, fileStamp, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, fileStamp{err: err.Error()}, fmt.Errorf("read policy: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fileStamp{err: err.Error()}, fmt.Errorf("read policy: %w", err)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, fileStamp{err: err.Error()}, fmt.Errorf("read policy %s: %w", s.path, err)
	}
	data := buf.Bytes()
	return data, fileStamp{modTime: fi.ModTime(), size: fi.Size(), hash: sha256.Sum256(data)}, nil
}

// load parses and activates data. Called with mu held.
func (s *Store) load(data []byte, hash [sha256.Size]byte) error {
	p, err := Parse(s.path, data)
	if err == nil && s.check != nil {
		err = s.check(p)
	}
	if err != nil {
		return s.reject(err)
	}
	s.install(p, hash)
	s.log.Info("policy loaded", "rules", p.RuleCount(), "digest", p.Digest())
	for _, fn := range s.subs {
		fn(p)
	}
	return nil
}

func (s *Store) install(p *Policy, hash [sha256.Size]byte) {
	s.cur.Store(p)
	s.hash = hash
	s.generation.Inc()
	s.rules.Set(float64(p.RuleCount()))
}

// reject logs and counts a failed reload. Called with mu held.
func (s *Store) reject(err error) error {
	s.reloadErrors.Inc()
	var list Errors
	if errors.As(err, &list) {
		for _, e := range list {
			s.log.Error("policy reload rejected, keeping the last good policy", "error", e.Error())
		}
	} else {
		s.log.Error("policy reload rejected, keeping the last good policy", "error", err)
	}
	return fmt.Errorf("reload policy: %w", err)
}
