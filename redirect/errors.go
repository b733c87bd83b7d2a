package redirect

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

var (
	// ErrNoCgroup2 means no cgroup v2 hierarchy is mounted.
	ErrNoCgroup2 = errors.New("no cgroup2 filesystem is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified, or boot with systemd.unified_cgroup_hierarchy=1)")
	// ErrNotInstalled means no pinned Interlock programs were found.
	ErrNotInstalled = errors.New("interlock is not installed: no pinned links found (start `interlock run` first)")
	// ErrNoRecord means the engine accepted a connection the kernel did not
	// redirect (or whose record was evicted).
	ErrNoRecord = errors.New("no redirect record for peer")
)

// kernelHint turns the errnos users actually hit into a sentence that says
// what to do, keeping the original error for errors.Is.
func kernelHint(op string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%s: %w (run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)", op, err)
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.EOPNOTSUPP):
		return fmt.Errorf("%s: %w (the kernel may be too old: Interlock needs Linux 5.8 or newer with cgroup bpf_link and BTF)", op, err)
	case errors.Is(err, unix.ENOSPC):
		return fmt.Errorf("%s: %w (a BPF map is full: too many agents, targets or egress rules)", op, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
