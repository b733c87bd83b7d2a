package harness

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// PinDir mounts a private bpffs for the test and returns a pin directory on
// it. Unmounting at cleanup drops every pin the test made, so links the
// test forgot to close still detach once their file descriptors go.
func PinDir(t testing.TB) string {
	t.Helper()
	mnt := t.TempDir()
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount private bpffs at %s: %v", mnt, err)
	}
	t.Cleanup(func() {
		// Remove the pins first: a pinned link holds its program attached
		// for as long as the bpffs lives, and a lazily unmounted bpffs can
		// live on.
		entries, _ := os.ReadDir(mnt)
		for _, e := range entries {
			os.RemoveAll(filepath.Join(mnt, e.Name()))
		}
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount test bpffs: %v", err)
		}
	})
	return filepath.Join(mnt, "interlock")
}

// Exists reports whether a path exists.
func Exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
