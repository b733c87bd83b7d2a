package redirect

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
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

// LabelLevel returns the level of a cgroup (an absolute path under the
// cgroup2 mount) below the mount's root: "<mount>/a/b" is 2.
func LabelLevel(mount, path string) int {
	return relLevel(relCgroup(mount, filepath.Clean(path)))
}

// Level is the cgroup's level below the cgroup2 root ("/a/b" is 2).
func (l LabelledCgroup) Level() int { return relLevel(l.Path) }

func relLevel(rel string) int {
	if rel == "/" {
		return 0
	}
	return strings.Count(rel, "/")
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
	if err := LabelTrusted(path); err != nil {
		return fmt.Errorf("label %s: %w", path, err)
	}
	if mount, err := Cgroup2Mount(); err == nil && strings.HasPrefix(path, mount+"/") {
		if err := LabelEscapable(mount, path); err != nil {
			return fmt.Errorf("label %s: %w", path, err)
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

// LabelTrusted returns an error when someone other than root could write
// the cgroup's label: only root-owned cgroups that only their owner may
// write carry labels the daemon honours. A user who owns a cgroup (a
// systemd delegation) could otherwise label a child of it as a more
// privileged agent, which overrides the agent label it inherits, or label
// itself as an agent and be served with that agent's identity.
func LabelTrusted(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("stat cgroup: %w", err)
	}
	if st.Uid != 0 {
		return fmt.Errorf("%w: the cgroup is owned by uid %d, who could change its label; label a root-owned ancestor, or name the cgroup in the policy (agents[].cgroups)", ErrUntrustedLabel, st.Uid)
	}
	if st.Mode&0o022 != 0 {
		return fmt.Errorf("%w: the cgroup is writable by group or others (mode %04o), who could have written its label; unlabel it, chmod go-w it, and label it again", ErrUntrustedLabel, st.Mode&0o7777)
	}
	return nil
}

// ErrUntrustedLabel: a label on a cgroup that non-root users can write.
var ErrUntrustedLabel = errors.New("label not trusted")

// LabelEscapable returns an error when processes could leave the cgroup at
// path without root: moving a process needs write access to the
// cgroup.procs of the destination and of the common ancestor, not of the
// source, so a non-root user who can write an ancestor (a systemd
// delegation above the label) can make a cgroup there and move into it.
// Such a user can also remove the cgroup once empty and make their own at
// its path, which a static label then names.
func LabelEscapable(mount, path string) error {
	for p := filepath.Dir(path); strings.HasPrefix(p, mount) && len(p) >= len(mount); p = filepath.Dir(p) {
		for _, f := range []string{p, filepath.Join(p, "cgroup.procs")} {
			var st unix.Stat_t
			if err := unix.Stat(f, &st); err != nil {
				return fmt.Errorf("stat %s: %w", f, err)
			}
			if st.Uid != 0 || st.Mode&0o022 != 0 {
				return fmt.Errorf("%w: processes can leave it, and it can be replaced, since %s (uid %d, mode %04o) is writable by someone other than root; label a cgroup whose ancestors only root may write (at or above the delegation)",
					ErrEscapableLabel, relCgroup(mount, f), st.Uid, st.Mode&0o7777)
			}
		}
		if p == mount {
			break
		}
	}
	return nil
}

// ErrEscapableLabel: a label whose processes can leave its cgroup.
var ErrEscapableLabel = errors.New("agent cgroup can be left")

// ErrCgroupGone: no cgroup has that id any more.
var ErrCgroupGone = errors.New("cgroup is gone")

// CgroupPathByID returns the absolute path of the cgroup with id below
// mount, by file handle (cgroupfs handles are the 64-bit id), or
// ErrCgroupGone. Needs CAP_DAC_READ_SEARCH.
func CgroupPathByID(mount string, id uint64) (string, error) {
	mfd, err := unix.Open(mount, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", mount, err)
	}
	defer unix.Close(mfd)
	b := make([]byte, 8)
	binary.NativeEndian.PutUint64(b, id)
	const fileidKernfs = 0xfe
	fd, err := unix.OpenByHandleAt(mfd, unix.NewFileHandle(fileidKernfs, b), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if errors.Is(err, unix.ESTALE) || errors.Is(err, unix.ENOENT) {
		return "", fmt.Errorf("cgroup %d: %w", id, ErrCgroupGone)
	}
	if err != nil {
		return "", fmt.Errorf("open cgroup %d by handle: %w", id, err)
	}
	defer unix.Close(fd)
	p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return "", fmt.Errorf("path of cgroup %d: %w", id, err)
	}
	return p, nil
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

// maxLabelLen is the longest label read; agent names are at most 128.
const maxLabelLen = 255

// ErrLabelTooLong: a label longer than any agent name. Anyone who may
// write the xattr can set one; it must neither stall the daemon's scans
// nor be cut short into another name.
var ErrLabelTooLong = errors.New("label longer than 255 bytes")

// Label returns the agent label of one cgroup, "" when it has none.
func Label(path string) (string, error) {
	buf := make([]byte, maxLabelLen)
	n, err := unix.Getxattr(path, LabelXattr, buf)
	switch {
	case errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP):
		return "", nil
	case errors.Is(err, unix.ERANGE):
		return "", fmt.Errorf("read label of %s: %w", path, ErrLabelTooLong)
	case err != nil:
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

// OwnCgroup returns this process's cgroup as the host sees it, relative to
// the root of the whole hierarchy. In a cgroup namespace of its own (a
// Kubernetes pod) /proc/self/cgroup says "/"; a privileged process reads
// it from the initial namespace instead, on a thread that then ends.
func OwnCgroup() (string, error) {
	if ns, err := os.Readlink("/proc/self/ns/cgroup"); err != nil || ns == initCgroupNS {
		return CgroupOf(os.Getpid())
	}
	type result struct {
		path string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// Never unlocked: the thread leaves another cgroup namespace than
		// the process's, so the runtime must not reuse it.
		runtime.LockOSThread()
		fd, err := initCgroupNSFD()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWCGROUP); err != nil {
			done <- result{err: err}
			return
		}
		b, err := os.ReadFile("/proc/thread-self/cgroup")
		if err != nil {
			done <- result{err: err}
			return
		}
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "0::"); ok {
				done <- result{path: rest}
				return
			}
		}
		done <- result{err: ErrNoCgroup2}
	}()
	r := <-done
	if r.err != nil {
		// Not privileged enough, or no init namespace to see: the
		// namespace's own view.
		return CgroupOf(os.Getpid())
	}
	return r.path, nil
}

// initCgroupNSFD opens the initial cgroup namespace through a process
// that is in it: init, or else any other one this process may inspect
// (with hostPID, the node's processes).
func initCgroupNSFD() (int, error) {
	if fd, err := unix.Open("/proc/1/ns/cgroup", unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
		if l, _ := os.Readlink("/proc/1/ns/cgroup"); l == initCgroupNS {
			return fd, nil
		}
		unix.Close(fd)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return -1, err
	}
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		p := "/proc/" + e.Name() + "/ns/cgroup"
		if l, err := os.Readlink(p); err != nil || l != initCgroupNS {
			continue
		}
		if fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			return fd, nil
		}
	}
	return -1, errors.New("no process in the initial cgroup namespace is visible")
}
