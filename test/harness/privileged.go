package harness

import (
	"os"
	"testing"

	"github.com/interlockhq/interlock/redirect"
)

// InCI reports whether the tests run under CI (CI=true), where a missing
// prerequisite is a failure.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require skips the test (or fails it under CI) with a message naming what
// is missing.
func Require(t testing.TB, ok bool, missing string) {
	t.Helper()
	if ok {
		return
	}
	if InCI() {
		t.Fatalf("prerequisite missing under CI=true: %s", missing)
	}
	t.Skipf("skipping: %s", missing)
}

// RequirePrivileged gates tests that attach BPF programs and create
// cgroups: root and a cgroup2 mount.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN) for BPF and cgroups")
	_, err := redirect.Cgroup2Mount()
	Require(t, err == nil, "needs a cgroup2 mount")
	_, err = os.Stat("/sys/kernel/btf/vmlinux")
	Require(t, err == nil, "needs a kernel with BTF (/sys/kernel/btf/vmlinux)")
}
