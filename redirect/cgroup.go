package redirect

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// LabelXattr is the extended attribute on a cgroup directory that names the
// agent running in it. Descendant cgroups inherit the label.
const LabelXattr = "user.interlock.agent"

// Cgroup2Mount returns the mount point of the cgroup v2 hierarchy, read from
// /proc/self/mounts (it is /sys/fs/cgroup on unified hosts and
// /sys/fs/cgroup/unified on hybrid ones, so never assume).
func Cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			return fields[1], nil
		}
	}
	if err := s.Err(); err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	return "", ErrNoCgroup2
}

// CgroupID returns the cgroup v2 id of a cgroup directory: its inode
// number, which is what bpf_get_current_cgroup_id() reports.
func CgroupID(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat cgroup %s: %w", path, err)
	}
	return st.Ino, nil
}

// ResolveCgroup turns a cgroup given by an operator into an absolute path
// under the cgroup2 mount: absolute paths inside the mount stay, anything
// else is taken relative to the mount ("/agents/a" and "agents/a" both mean
// <mount>/agents/a).
func ResolveCgroup(mount, p string) (string, error) {
	if p == "" {
		return "", errors.New("empty cgroup path")
	}
	clean := filepath.Clean(p)
	if strings.HasPrefix(clean, mount+"/") || clean == mount {
		return clean, nil
	}
	abs := filepath.Join(mount, clean)
	if !strings.HasPrefix(abs, mount) {
		return "", fmt.Errorf("cgroup path %q escapes %s", p, mount)
	}
	return abs, nil
}

// MaxLabelLevel is the deepest level of the cgroup tree (the root is 0)
// at which the kernel programs look for labels.
const MaxLabelLevel = maxCgroupLevel

// LabelLevel returns the level of a cgroup below the cgroup2 mount root,
// counted from its path ("/a/b" is 2).
func LabelLevel(mount, path string) int {
	return strings.Count(strings.TrimSuffix(relCgroup(mount, filepath.Clean(path)), "/"), "/")
}

// SetLabel marks a cgroup as an agent cgroup. A cgroup deeper than the
// kernel programs search is refused: its processes would not be agents.
func SetLabel(path, agent string) error {
	if agent == "" {
		return errors.New("set label: empty agent name")
	}
	if mount, err := Cgroup2Mount(); err == nil && strings.HasPrefix(path, mount+"/") {
		if l := LabelLevel(mount, path); l > MaxLabelLevel {
			return fmt.Errorf("label %s: it is %d levels below the cgroup2 root, and Interlock's kernel programs look for labels down to level %d; label an ancestor instead", path, l, MaxLabelLevel)
		}
	}
	if err := unix.Setxattr(path, LabelXattr, []byte(agent), 0); err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("label %s: %w (cgroupfs user xattrs need Linux 5.9 or newer; use static labels in the policy instead)", path, err)
		}
		return kernelHint("label "+path, err)
	}
	return nil
}

// RemoveLabel removes the agent label from a cgroup; a missing label is not
// an error.
func RemoveLabel(path string) error {
	err := unix.Removexattr(path, LabelXattr)
	if err == nil || errors.Is(err, unix.ENODATA) {
		return nil
	}
	return kernelHint("unlabel "+path, err)
}

// Label returns the agent label of one cgroup, "" when it has none.
func Label(path string) (string, error) {
	buf := make([]byte, 256)
	n, err := unix.Getxattr(path, LabelXattr, buf)
	if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read label of %s: %w", path, err)
	}
	return string(buf[:n]), nil
}

// CgroupOf returns the cgroup v2 path (relative to the mount, "/" for the
// root) that a process runs in.
func CgroupOf(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", fmt.Errorf("read cgroup of pid %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			return rest, nil
		}
	}
	return "", fmt.Errorf("pid %d: %w", pid, ErrNoCgroup2)
}

// initCgroupNS is the inode of the initial cgroup namespace
// (PROC_CGROUP_INIT_INO in the kernel), the same on every host.
const initCgroupNS = "cgroup:[4026531835]"

// MountAtGlobalRoot reports whether the cgroup2 mount shows the whole
// hierarchy from its real root: the process is in the initial cgroup
// namespace and the mount is not of a subtree. Only then is a path's depth
// below the mount the level the kernel's bpf_get_current_ancestor_cgroup_id
// counts (State.Levels); in a container it may not be.
func MountAtGlobalRoot(mount string) bool {
	if ns, err := os.Readlink("/proc/self/ns/cgroup"); err != nil || ns != initCgroupNS {
		return false
	}
	// The root cgroup's id is 1. A subtree mounted over the mount point
	// (in this mount namespace only) has another, whatever mountinfo's
	// first line for the path says.
	if id, err := CgroupID(mount); err != nil || id != 1 {
		return false
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint options... - fstype source
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 1 || g[0] != "cgroup2" || f[4] != mount {
			continue
		}
		return f[3] == "/"
	}
	return false
}
