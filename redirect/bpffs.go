package redirect

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ensureBPFFS makes sure dir exists on a bpffs mount, mounting bpffs on its
// parent when that is the standard /sys/fs/bpf and nothing is mounted
// there yet (as Cilium does on hosts without systemd's mount unit).
func ensureBPFFS(dir string) error {
	parent := filepath.Dir(dir)
	if !isBPFFS(parent) {
		if parent != "/sys/fs/bpf" {
			return fmt.Errorf("pin directory %s: %s is not a bpffs mount (mount -t bpf bpf %s)", dir, parent, parent)
		}
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", parent, err)
		}
		if err := unix.Mount("bpf", parent, "bpf", 0, "mode=0700"); err != nil {
			return kernelHint("mount bpffs at "+parent, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create pin directory %s: %w", dir, err)
	}
	return nil
}

func isBPFFS(p string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return false
	}
	return uint32(st.Type) == unix.BPF_FS_MAGIC
}
