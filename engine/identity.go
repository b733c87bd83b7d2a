package engine

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Origin is what the kernel recorded about a redirected connection.
type Origin struct {
	Dst         netip.AddrPort // the address the agent connected to
	AgentID     uint32
	TargetID    uint32
	PID         uint32
	CgroupID    uint64
	NetnsCookie uint64
	Cookie      uint64 // the agent socket's cookie: the record's key
}

// OriginLookup finds the Origin of an accepted connection (the kernel's
// record of the agent socket at its other end). Forget drops the record
// once the session has ended.
type OriginLookup interface {
	Lookup(c *net.TCPConn) (Origin, error)
	Forget(o Origin) error
}

// AgentInfo is an agent as the policy defines it.
type AgentInfo struct {
	Name  string
	Roles []string
}

// TargetInfo is a protected target as the policy defines it.
type TargetInfo struct {
	Name     string
	Protocol string
}

// Directory maps the kernel's ids to the current policy's names. It is
// backed by the policy store and the label watcher, so it follows reloads.
type Directory interface {
	Agent(id uint32) (AgentInfo, bool)
	Target(id uint32) (TargetInfo, bool)
}

// Identity is who is behind a session, as recorded in every log line and
// audit event of it.
type Identity struct {
	Agent      string         `json:"agent"`
	Roles      []string       `json:"roles"`
	PID        uint32         `json:"pid"`
	Exe        string         `json:"exe,omitempty"`
	CgroupID   uint64         `json:"cgroup_id"`
	CgroupPath string         `json:"cgroup_path,omitempty"`
	Target     string         `json:"target"`
	Protocol   string         `json:"protocol"`
	OrigDst    netip.AddrPort `json:"orig_dst"`
	Client     netip.AddrPort `json:"client"`
}

// identify builds the identity from the kernel record, without touching
// /proc (see enrich), so that it costs no syscalls on the connect path.
func identify(o Origin, client netip.AddrPort, dir Directory) (Identity, error) {
	id := Identity{PID: o.PID, CgroupID: o.CgroupID, OrigDst: o.Dst, Client: client}
	a, ok := dir.Agent(o.AgentID)
	if !ok {
		// A label naming no known agent: still an agent, with no roles, so
		// everything it tries is refused.
		a = AgentInfo{Name: fmt.Sprintf("unknown-agent-%d", o.AgentID)}
	}
	id.Agent, id.Roles = a.Name, a.Roles
	t, ok := dir.Target(o.TargetID)
	if !ok {
		return id, fmt.Errorf("target id %d for %s is not in the current policy", o.TargetID, o.Dst)
	}
	id.Target, id.Protocol = t.Name, t.Protocol
	return id, nil
}

// enrich adds the executable and cgroup path of the connecting process.
// The process may already be gone (short-lived clients): pid and cgroup id
// stay, exe and path are best effort.
func enrich(id *Identity) {
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", id.PID)); err == nil {
		id.Exe = exe
	}
	if b, err := readProc(fmt.Sprintf("/proc/%d/cgroup", id.PID)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if p, ok := strings.CutPrefix(line, "0::"); ok {
				id.CgroupPath = p
			}
		}
	}
}

// readProc reads a small /proc file with plain syscalls: os.ReadFile costs
// nine per file (it probes whether the network poller can take the file
// and sizes its buffer), and this runs once per session.
func readProc(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, 1024)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}
