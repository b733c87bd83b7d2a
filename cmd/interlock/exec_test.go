package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/interlockhq/interlock/test/harness"
)

func TestAgentEnv(t *testing.T) {
	caller := []string{"PATH=/usr/bin", "HOME=/root", "AWS_SECRET_ACCESS_KEY=k", "LC_ALL=C", "TOKEN=t", "TERM=xterm"}
	user := []string{"HOME=/home/bot", "USER=bot", "LOGNAME=bot", "SHELL=/bin/sh"}
	got, err := agentEnv(caller, user, []string{"TOKEN", "MODE=ro", "MISSING"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"PATH=/usr/bin", "LC_ALL=C", "TERM=xterm", "HOME=/home/bot", "USER=bot", "LOGNAME=bot", "SHELL=/bin/sh", "TOKEN=t", "MODE=ro"}
	if !slices.Equal(got, want) {
		t.Errorf("agentEnv = %q\nwant %q", got, want)
	}
	// Running as the caller (root with --allow-root): its own HOME.
	got, _ = agentEnv(caller, nil, nil)
	if !slices.Contains(got, "HOME=/root") || slices.Contains(got, "AWS_SECRET_ACCESS_KEY=k") {
		t.Errorf("agentEnv as the caller = %q", got)
	}
	if _, err := agentEnv(caller, user, []string{"=x"}); err == nil {
		t.Error("--env =x accepted")
	}
}

// The fallbacks for kernels without close_range's CLOSE_RANGE_CLOEXEC
// (5.11) and cgroup.kill (5.14), run here on purpose.
func TestExecFallbacks(t *testing.T) {
	fd, err := unix.Open("/dev/null", unix.O_RDONLY, 0) // no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := closeOnExecByProc(3); err != nil {
		t.Fatal(err)
	}
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("fd %d: flags %d, %v; want FD_CLOEXEC", fd, flags, err)
	}

	harness.RequirePrivileged(t)
	cg := harness.NewCgroups(t)
	path := cg.Mkdir(t, "exec/x")
	for range 3 {
		cmd := harness.Command(t, path, "sh", "-c", "sleep 60 & sleep 60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
	}
	time.Sleep(100 * time.Millisecond)
	killPids(path)
	if b, _ := os.ReadFile(filepath.Join(path, "cgroup.procs")); len(strings.TrimSpace(string(b))) != 0 {
		t.Errorf("processes left after killPids: %s", b)
	}
}
