package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spf13/cobra"

	"github.com/interlockhq/interlock/redirect"
)

func newExecCmd(load func() (*Config, error)) *cobra.Command {
	var (
		agent     string
		parent    string
		runAs     string
		allowRoot bool
		envFlags  []string
		wait      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "exec --agent NAME -- COMMAND [ARG...]",
		Short: "Run a command as an agent, in a fresh labelled cgroup",
		Long: `Exec creates a cgroup below the daemon's attach cgroup, labels it as the agent, waits until the
kernel treats it as an agent cgroup, then starts COMMAND directly inside it (clone3 into the
cgroup, so not one syscall runs outside). Child processes inherit the cgroup. When COMMAND
exits, whatever is left in the cgroup is killed and the cgroup removed. The exit status is
COMMAND's. If the daemon does not pick the label up in time, COMMAND is not started.

COMMAND runs as --user, which should be a user of the agent's own that runs nothing outside
its cgroup. It never runs as root unless --allow-root is given: root owns the cgroup files, so
an agent running as root (even without capabilities) can move itself out of its cgroup or
relabel it. COMMAND cannot gain privileges (no_new_privs: setuid programs such as sudo do not
make it root), runs in a session of its own with pipes in place of a terminal (exec relays
them while it runs: no terminal to push input into, none to read while exec is stopped), and
gets a small environment: PATH, TERM, LANG, LANGUAGE, TZ and LC_* from the
caller, the user's HOME, USER, LOGNAME and SHELL, and what --env adds.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if agent == "" {
				return errors.New("--agent is required")
			}
			cfg, err := load()
			if err != nil {
				return err
			}
			mount, err := redirect.Cgroup2Mount()
			if err != nil {
				return err
			}
			if parent == "" {
				parent = cfg.Redirect.Cgroup
				if parent == "" {
					parent = "/"
				}
				parent = filepath.Join(parent, "interlock-exec")
			}
			base, err := redirect.ResolveCgroup(mount, parent)
			if err != nil {
				return err
			}
			cred, userEnv, err := agentCredential(runAs, allowRoot)
			if err != nil {
				return err
			}
			env, err := agentEnv(os.Environ(), userEnv, envFlags)
			if err != nil {
				return err
			}
			return execAgent(cfg, base, agent, wait, cred, env, args)
		},
	}
	cmd.Flags().StringVar(&agent, "agent", "", "agent name to run as (required)")
	cmd.Flags().StringVar(&parent, "parent", "", "cgroup to create the agent cgroup in (default: <redirect.cgroup>/interlock-exec)")
	cmd.Flags().DurationVar(&wait, "wait", 3*time.Second, "how long to wait for the daemon to pick up the label")
	cmd.Flags().StringVar(&runAs, "user", "", "user (name or uid) to run COMMAND as, with its groups: one of the agent's own (required when run as root)")
	cmd.Flags().StringArrayVar(&envFlags, "env", nil, "KEY=VALUE to set, or KEY to pass from the caller, in COMMAND's environment (repeatable)")
	cmd.Flags().BoolVar(&allowRoot, "allow-root", false, "let COMMAND run as root, which can leave its agent cgroup")
	return cmd
}

// agentCredential resolves the user COMMAND runs as. nil means the
// caller's own credentials: a caller other than root, or root with
// allowRoot. Root is refused otherwise, also as --user. env is the
// user's HOME, USER, LOGNAME and SHELL.
func agentCredential(runAs string, allowRoot bool) (*syscall.Credential, []string, error) {
	if runAs == "" {
		if os.Geteuid() == 0 && !allowRoot {
			return nil, nil, errors.New("refusing to run the agent as root: root owns the cgroup files and can move itself out of its agent cgroup or relabel it, capabilities or not; pass --user with a user of the agent's own (or --allow-root)")
		}
		return nil, nil, nil
	}
	u, err := user.Lookup(runAs)
	if err != nil {
		if u, err = user.LookupId(runAs); err != nil {
			return nil, nil, fmt.Errorf("--user %s: no such user", runAs)
		}
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	if uid == 0 && !allowRoot {
		return nil, nil, fmt.Errorf("refusing to run the agent as root (--user %s): root owns the cgroup files and can move itself out of its agent cgroup or relabel it; pass a user other than root (or --allow-root)", runAs)
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	groups, err := u.GroupIds()
	if err != nil {
		return nil, nil, fmt.Errorf("--user %s: groups: %w", runAs, err)
	}
	for _, g := range groups {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			cred.Groups = append(cred.Groups, uint32(n))
		}
	}
	shell := "/bin/sh"
	if b, err := os.ReadFile("/etc/passwd"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Split(line, ":"); len(f) == 7 && f[0] == u.Username && f[6] != "" {
				shell = f[6]
			}
		}
	}
	env := []string{"HOME=" + u.HomeDir, "USER=" + u.Username, "LOGNAME=" + u.Username, "SHELL=" + shell}
	return cred, env, nil
}

// passedEnv are the caller's variables an agent gets without --env: what
// programs need to run, nothing that may hold a secret.
var passedEnv = []string{"PATH", "TERM", "LANG", "LANGUAGE", "TZ"}

// agentEnv is COMMAND's environment: passedEnv and LC_* from the caller,
// then the user's (userEnv), then --env: KEY=VALUE, or KEY to pass the
// caller's value.
func agentEnv(caller, userEnv, flags []string) ([]string, error) {
	get := func(key string) (string, bool) {
		for i := len(caller) - 1; i >= 0; i-- {
			if k, v, _ := strings.Cut(caller[i], "="); k == key {
				return v, true
			}
		}
		return "", false
	}
	pass := passedEnv
	if userEnv == nil { // no other user: the caller's own
		pass = append(slices.Clone(pass), "HOME", "USER", "LOGNAME", "SHELL")
	}
	var env []string
	for _, kv := range caller {
		k, _, _ := strings.Cut(kv, "=")
		if slices.Contains(pass, k) || strings.HasPrefix(k, "LC_") {
			env = append(env, kv)
		}
	}
	env = append(env, userEnv...)
	for _, f := range flags {
		k, v, set := strings.Cut(f, "=")
		if k == "" || strings.ContainsAny(k, "\x00") {
			return nil, fmt.Errorf("--env %q: want KEY=VALUE or KEY", f)
		}
		if !set {
			var ok bool
			if v, ok = get(k); !ok {
				continue
			}
		}
		env = append(env, k+"="+v)
	}
	return env, nil // later entries win
}

func execAgent(cfg *Config, base, agent string, wait time.Duration, cred *syscall.Credential, env, argv []string) error {
	if err := os.MkdirAll(base, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", base, err)
	}
	cg := filepath.Join(base, fmt.Sprintf("%s-%d", agent, os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		return fmt.Errorf("create agent cgroup: %w", err)
	}
	defer removeCgroup(cg)
	if err := redirect.SetLabel(cg, agent); err != nil {
		return err
	}
	id, err := redirect.CgroupID(cg)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(wait)
	for {
		known, err := redirect.AgentCgroupKnown(cfg.Redirect.PinDir, id)
		if known {
			break
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("is `interlock run` running?")
			}
			return fmt.Errorf("the kernel did not pick up agent cgroup %s within %s; not starting the command unprotected: %w", cg, wait, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	fd, err := syscall.Open(cg, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open agent cgroup: %w", err)
	}
	defer syscall.Close(fd)
	c := exec.Command(argv[0], argv[1:]...)
	// A session of its own: the caller's terminal is not the agent's
	// controlling terminal, so it cannot push input (TIOCSTI) that the
	// caller's root shell reads after exec returns. Nor does it get the
	// terminal itself (relayStdio): outside the terminal's job control it
	// would go on reading it while exec is stopped (^Z) or in the
	// background, and take the lines meant for the caller's shell. Signals
	// are forwarded.
	// A read of the terminal from the background fails (EIO) instead of
	// stopping exec, and foregroundReader waits; a stopped exec would
	// leave the agent unsupervised.
	signal.Ignore(syscall.SIGTTIN)
	relay := relayStdio(c)
	defer relay.started() // on errors before Wait
	c.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd, Credential: cred, Setsid: true}
	c.Env = env
	// Forward the signals a terminal or supervisor sends; the command
	// decides how to end.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	// Descriptors the caller passed beyond 0-2 (a terminal on fd 3) stay
	// with exec: only what relayStdio gives reaches the agent.
	if err := closeOnExecFrom(3); err != nil {
		return fmt.Errorf("mark descriptors close-on-exec: %w", err)
	}
	if err := startNoNewPrivs(c); err != nil {
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	relay.started()
	go func() {
		for s := range sigs {
			c.Process.Signal(s)
		}
	}()
	err = c.Wait()
	// Leftovers go first; then the output still in the pipes is relayed.
	killCgroup(cg)
	relay.finish()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code := ee.ExitCode()
		if code < 0 {
			code = 128 + int(ee.Sys().(syscall.WaitStatus).Signal())
		}
		return &exitError{code: code}
	}
	return err
}

// stdioRelay copies between exec's own standard streams and pipes that
// the agent gets instead of a terminal.
type stdioRelay struct {
	child []*os.File // the agent's ends, closed here once it started
	outs  []*outRelay
}

// outRelay copies one output pipe to the terminal.
type outRelay struct {
	pipe *os.File
	to   *os.File
	left atomic.Int64 // bytes still to copy once draining; < 0: all
	done chan struct{}
}

func (o *outRelay) run() {
	defer close(o.done)
	defer o.pipe.Close()
	buf := make([]byte, 32*1024)
	for {
		limit := o.left.Load()
		if limit == 0 {
			return
		}
		b := buf
		if limit > 0 && int64(len(b)) > limit {
			b = b[:limit]
		}
		n, err := o.pipe.Read(b)
		if n > 0 {
			if limit > 0 { // these bytes were counted by drain
				o.left.Add(-int64(n))
			}
			if _, werr := o.to.Write(b[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// drain lets the copy go on for what the pipe holds now, and no further:
// a process outside the cgroup (handed the pipe by the agent's user) must
// not keep exec waiting, nor keep writing to the caller's terminal.
func (o *outRelay) drain() {
	n, err := unix.IoctlGetInt(int(o.pipe.Fd()), unix.TIOCINQ) // FIONREAD
	if err != nil || n == 0 {
		o.left.Store(0)
		o.pipe.Close() // ends a read waiting for more
		return
	}
	o.left.Store(int64(n))
}

// relayStdio gives c exec's standard streams, or a pipe in place of each
// one that is a terminal. Input is read from the terminal only while exec
// runs, so a stopped or background exec (job control stops it, not the
// agent in its own session) reads nothing for the agent; output waits in
// the pipe meanwhile.
func relayStdio(c *exec.Cmd) *stdioRelay {
	r := &stdioRelay{}
	isTerminal := func(f *os.File) bool {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		return err == nil
	}
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	if isTerminal(os.Stdin) {
		if pr, pw, err := os.Pipe(); err == nil {
			c.Stdin = pr
			r.child = append(r.child, pr)
			// Not waited for: it may sit in a read of the terminal.
			go func() { io.Copy(pw, foregroundReader{os.Stdin}); pw.Close() }()
		}
	}
	for _, out := range []struct {
		f   *os.File
		set func(*os.File)
	}{{os.Stdout, func(f *os.File) { c.Stdout = f }}, {os.Stderr, func(f *os.File) { c.Stderr = f }}} {
		if !isTerminal(out.f) {
			continue
		}
		pr, pw, err := os.Pipe()
		if err != nil {
			continue
		}
		out.set(pw)
		r.child = append(r.child, pw)
		o := &outRelay{pipe: pr, to: out.f, done: make(chan struct{})}
		o.left.Store(-1)
		r.outs = append(r.outs, o)
		go o.run()
	}
	return r
}

// foregroundReader reads a terminal only while this process group is the
// terminal's foreground: a read in the background stops exec (SIGTTIN),
// and with it the job that started it in the background (`exec … &`).
type foregroundReader struct{ f *os.File }

func (r foregroundReader) Read(b []byte) (int, error) {
	fd := int(r.f.Fd())
	for {
		if r.foreground(fd) {
			n, err := r.f.Read(b)
			// Sent to the background during the read (^Z, bg): with
			// SIGTTIN ignored (execAgent) the read fails with EIO
			// instead of stopping exec; wait for the foreground.
			if errors.Is(err, unix.EIO) && !r.foreground(fd) {
				continue
			}
			return n, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// foreground: this process group is the terminal's foreground, or the
// terminal is not exec's controlling terminal (no job control applies).
func (r foregroundReader) foreground(fd int) bool {
	pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return err != nil || pgrp == unix.Getpgrp()
}

// started closes the agent's ends of the pipes in exec.
func (r *stdioRelay) started() {
	for _, f := range r.child {
		f.Close()
	}
	r.child = nil
}

// finish relays what the output pipes hold once the agent's processes are
// gone (killCgroup), however long the terminal takes (^S), and stops.
func (r *stdioRelay) finish() {
	r.started()
	for _, o := range r.outs {
		o.drain()
	}
	for _, o := range r.outs {
		<-o.done
	}
}

// startNoNewPrivs starts c with no_new_privs set: neither setuid programs
// nor file capabilities can raise its privileges (sudo, su, pkexec would
// otherwise make an agent root again). The flag belongs to the thread and
// is inherited by its children: it is set on a thread of its own, which
// ends with the goroutine (locked, never unlocked).
func startNoNewPrivs(c *exec.Cmd) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			done <- fmt.Errorf("set no_new_privs: %w", err)
			return
		}
		done <- c.Start()
	}()
	return <-done
}

// killCgroup kills every process in the cgroup and waits (a while) until
// it is empty: with cgroup.kill (Linux 5.14), else pid by pid.
func killCgroup(cg string) {
	if err := os.WriteFile(filepath.Join(cg, "cgroup.kill"), []byte("1"), 0); err != nil {
		killPids(cg)
	}
	for i := 0; i < 100; i++ {
		b, err := os.ReadFile(filepath.Join(cg, "cgroup.events"))
		if err != nil || strings.Contains(string(b), "populated 0") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killPids kills the cgroup's processes one by one until none is left (or
// a second has passed): processes may fork meanwhile.
func killPids(cg string) {
	for i := 0; i < 50; i++ {
		b, err := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
		pids := strings.Fields(string(b))
		if err != nil || len(pids) == 0 {
			return
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil {
				unix.Kill(pid, unix.SIGKILL)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// closeOnExecFrom marks every descriptor from first up close-on-exec:
// close_range (Linux 5.11), else one by one from /proc/self/fd.
func closeOnExecFrom(first int) error {
	if err := unix.CloseRange(uint(first), ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return nil
	}
	return closeOnExecByProc(first)
}

func closeOnExecByProc(first int) error {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < first {
			continue
		}
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags|unix.FD_CLOEXEC)
		}
	}
	return nil
}

// removeCgroup kills what the command left behind in its own cgroup and
// removes it.
func removeCgroup(cg string) {
	killCgroup(cg)
	for i := 0; i < 100; i++ {
		if err := os.Remove(cg); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "interlock: could not remove agent cgroup %s\n", cg)
}
