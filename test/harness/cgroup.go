package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/interlockhq/interlock/redirect"
)

// Cgroups is a private cgroup subtree for one test.
type Cgroups struct {
	Mount string // the cgroup2 mount
	Root  string // absolute path of the test's subtree
}

// NewCgroups creates <cgroup2>/interlock-test-<pid>-<name> and removes it
// (killing anything left inside) when the test ends. Tests attach BPF
// programs here, never to the root cgroup.
func NewCgroups(t testing.TB) *Cgroups {
	t.Helper()
	mount, err := redirect.Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("interlock-test-%d-%s", os.Getpid(), sanitize(t.Name()))
	root := filepath.Join(mount, name)
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatalf("create test cgroup: %v", err)
	}
	cg := &Cgroups{Mount: mount, Root: root}
	t.Cleanup(func() { removeCgroupTree(t, root) })
	return cg
}

// Path returns the absolute path of a cgroup below the test root.
func (c *Cgroups) Path(rel string) string { return filepath.Join(c.Root, rel) }

// Rel returns the path of a cgroup below the test root relative to the
// cgroup2 mount ("/interlock-test-…/agents/a"), as operators write it.
func (c *Cgroups) Rel(rel string) string {
	return strings.TrimPrefix(c.Path(rel), c.Mount)
}

// Mkdir creates a cgroup (and parents) below the test root.
func (c *Cgroups) Mkdir(t testing.TB, rel string) string {
	t.Helper()
	p := c.Path(rel)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatalf("create cgroup %s: %v", p, err)
	}
	return p
}

// Command returns cmd set up to start directly inside the cgroup at path
// (clone3 with CLONE_INTO_CGROUP), so not a single syscall of the child runs
// outside it.
func Command(t testing.TB, cgroupPath string, name string, args ...string) *exec.Cmd {
	t.Helper()
	fd, err := syscall.Open(cgroupPath, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open cgroup %s: %v", cgroupPath, err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	return cmd
}

func removeCgroupTree(t testing.TB, root string) {
	var dirs []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	// Kill what the test left behind (only processes in our own subtree).
	os.WriteFile(filepath.Join(root, "cgroup.kill"), []byte("1"), 0)
	for i := len(dirs) - 1; i >= 0; i-- {
		var err error
		for try := 0; try < 50; try++ {
			if err = os.Remove(dirs[i]); err == nil || errors.Is(err, os.ErrNotExist) {
				err = nil
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("remove test cgroup %s: %v", dirs[i], err)
		}
	}
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	if b.Len() > 40 {
		return b.String()[:40] + strconv.Itoa(b.Len())
	}
	return b.String()
}
