package harness

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary builds the interlock command once per test process and returns
// its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		dir, err := os.MkdirTemp("", "interlock-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "interlock")
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/interlock")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/interlock: %v\n%s", err, b)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// Daemon is a running `interlock run` started by a test, outside every
// agent cgroup, with its own pin directory, socket and ports.
type Daemon struct {
	t          testing.TB
	Bin        string
	Dir        string // config, policy and socket live here
	ConfigPath string
	PolicyPath string
	PinDir     string
	Socket     string
	Metrics    string // host:port
	Cgroup     string // attach cgroup (absolute)
	// Own is the daemon's own cgroup, below Cgroup: like a systemd unit's,
	// it is what the bind guard lets bind the engine's ports.
	Own string

	mu   sync.Mutex
	cmd  *exec.Cmd
	logs *SyncBuffer
}

// NewDaemon writes a config for a daemon attached at cgroupRoot and the
// given policy, without starting it.
func NewDaemon(t testing.TB, cgroupRoot, pinDir, policy string) *Daemon {
	t.Helper()
	d := &Daemon{t: t, Bin: Binary(t), Dir: t.TempDir(), PinDir: pinDir, Cgroup: cgroupRoot, Own: filepath.Join(cgroupRoot, "interlock-daemon")}
	if err := os.Mkdir(d.Own, 0o755); err != nil && !os.IsExist(err) {
		t.Fatalf("daemon cgroup: %v", err)
	}
	d.ConfigPath = filepath.Join(d.Dir, "interlock.yaml")
	d.PolicyPath = filepath.Join(d.Dir, "policy.yaml")
	d.Socket = filepath.Join(d.Dir, "interlock.sock")
	d.Metrics = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	cfg := fmt.Sprintf(`policy: policy.yaml
state_dir: %s
engine:
  listen4: 127.0.0.1:%d
  listen6: "[::1]:%d"
  shutdown_grace: 2s
redirect:
  cgroup: %s
  guard_cgroup: %s
  pin_dir: %s
  label_scan_interval: 200ms
metrics:
  listen: %s
api:
  socket: %s
log:
  level: debug
`, filepath.Join(d.Dir, "state"), FreePort(t), FreePort(t), cgroupRoot, cgroupRoot, pinDir, d.Metrics, d.Socket)
	if err := os.WriteFile(d.ConfigPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d.WritePolicy(policy)
	t.Cleanup(func() {
		d.Kill()
		// Leave the kernel clean even when the test failed half-way.
		exec.Command(d.Bin, "--config", d.ConfigPath, "uninstall").Run()
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.Logs())
		}
	})
	return d
}

// WritePolicy replaces the policy file (the daemon reloads it).
func (d *Daemon) WritePolicy(policy string) {
	if err := os.WriteFile(d.PolicyPath, []byte(policy), 0o600); err != nil {
		d.t.Fatal(err)
	}
}

// Start starts the daemon and waits until its control socket answers.
func (d *Daemon) Start() {
	d.t.Helper()
	d.mu.Lock()
	if d.logs == nil {
		d.logs = &SyncBuffer{}
	}
	// Started straight into its own cgroup, as systemd starts a unit.
	fd, err := syscall.Open(d.Own, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		d.mu.Unlock()
		d.t.Fatalf("open daemon cgroup %s: %v", d.Own, err)
	}
	defer syscall.Close(fd)
	cmd := exec.Command(d.Bin, "--config", d.ConfigPath, "run")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	cmd.Stdout = d.logs
	cmd.Stderr = d.logs
	if err := cmd.Start(); err != nil {
		d.mu.Unlock()
		d.t.Fatalf("start interlock: %v", err)
	}
	d.cmd = cmd
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	d.mu.Unlock()
	ok := WaitFor(15*time.Second, func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		_, err := d.CLI("status", "-o", "json")
		return err == nil && strings.Contains(d.statusJSON(), `"running": true`)
	})
	select {
	case <-exited:
		d.t.Fatalf("interlock exited at start:\n%s", d.Logs())
	default:
	}
	if !ok {
		d.t.Fatalf("interlock did not come up:\n%s", d.Logs())
	}
}

func (d *Daemon) statusJSON() string {
	out, _ := d.CLI("status", "-o", "json")
	return out
}

// Status returns the daemon's status report as generic JSON.
func (d *Daemon) Status() map[string]any {
	d.t.Helper()
	out, err := d.CLI("status", "-o", "json")
	if err != nil {
		d.t.Fatalf("interlock status: %v\n%s", err, out)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		d.t.Fatalf("status output: %v\n%s", err, out)
	}
	return m
}

// Signal sends sig to the daemon process.
func (d *Daemon) Signal(sig syscall.Signal) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Signal(sig)
	}
}

// PID returns the process id of the running daemon, or 0 when it is not
// running (never started, stopped or killed).
func (d *Daemon) PID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Stop ends the daemon with SIGTERM and waits for it.
func (d *Daemon) Stop() { d.end(syscall.SIGTERM) }

// Kill ends the daemon with SIGKILL (a crash) and waits for it.
func (d *Daemon) Kill() { d.end(syscall.SIGKILL) }

func (d *Daemon) end(sig syscall.Signal) {
	d.mu.Lock()
	cmd := d.cmd
	d.cmd = nil
	d.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	cmd.Process.Signal(sig)
	WaitFor(10*time.Second, func() bool { return cmd.ProcessState != nil })
}

// CLI runs an interlock verb against this daemon's config.
func (d *Daemon) CLI(args ...string) (string, error) {
	cmd := exec.Command(d.Bin, append([]string{"--config", d.ConfigPath}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Logs returns everything the daemon printed so far.
func (d *Daemon) Logs() string {
	if d.logs == nil {
		return ""
	}
	return d.logs.String()
}

// Metric returns the sum of the samples of name whose labels contain every
// given `key="value"` pair: 0 when there is none, -1 when the endpoint
// cannot be scraped.
func (d *Daemon) Metric(name string, labels ...string) float64 {
	resp, err := http.Get("http://" + d.Metrics + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		match := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				match = false
			}
		}
		if !match {
			continue
		}
		var v float64
		fmt.Sscanf(rest[strings.LastIndexByte(rest, ' ')+1:], "%g", &v)
		sum += v
	}
	return sum
}

// SyncBuffer is a bytes.Buffer safe for a process's output and a test
// reading it at the same time.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// AppendConfig adds YAML to the daemon's configuration (before Start), for
// settings a test needs beyond the defaults, e.g. "postgres:\n  idle_timeout: 1s\n".
func (d *Daemon) AppendConfig(yaml string) {
	f, err := os.OpenFile(d.ConfigPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		d.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(yaml); err != nil {
		d.t.Fatal(err)
	}
}
