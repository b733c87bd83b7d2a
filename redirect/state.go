package redirect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"maps"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/interlockhq/interlock/bpf"
)

// Agent is an agent as the kernel sees it.
type Agent struct {
	Name        string
	EgressAllow bool         // egress: allow — non-target destinations untouched
	Allow       []EgressRule // with egress: deny, the exceptions
}

// EgressRule lets an agent with egress: deny reach one address.
type EgressRule struct {
	Addr netip.Addr
	Port uint16 // 0 = any port
}

// State is the desired content of the kernel maps.
type State struct {
	// Cgroups maps labelled cgroup ids to agent names.
	Cgroups map[uint64]string
	// Levels gives the depth of labelled cgroups below the cgroup2 root
	// ("/a/b" is 2), which lets the kernel skip the levels that hold no
	// label. A cgroup missing here makes it search every level.
	Levels map[uint64]int
	Agents map[string]Agent
	// Targets maps protected ip:port to target names.
	Targets map[netip.AddrPort]string
	// EnginePorts are the engine's own API and metrics ports, denied to
	// agents on every address.
	EnginePorts []uint16
	// KeepCgroups are agent cgroups the kernel knows that stay as they
	// are although missing from Cgroups: the label scan could not read
	// them. A label the daemon failed to read must not turn an agent into
	// an ordinary process with direct access. While any are kept, every
	// level is searched (their depth is not known).
	KeepCgroups map[uint64]bool
	// Untrusted are the cgroups in Cgroups that are there for a label the
	// daemon does not honour: written after the others, so that a full
	// map turns them away first.
	Untrusted map[uint64]bool
}

const agentEgressAllow = 1 // agent_info.flags in redirect.c

// Apply writes s into the kernel maps: entries missing from s are deleted
// (except s.KeepCgroups), the rest are put. Each map is converged separately; a failure leaves the
// other maps as they were and is returned.
func (r *Redirector) Apply(s State) error {
	agents := map[uint64]bpf.RedirectAgentInfo{}
	for id, name := range s.Cgroups {
		a, known := s.Agents[name]
		var flags uint32
		// An unknown agent name still makes its processes agents: they
		// get egress deny and no roles. A typo must not open a hole.
		if known && a.EgressAllow {
			flags = agentEgressAllow
		}
		agents[id] = bpf.RedirectAgentInfo{AgentId: AgentID(name), Flags: flags}
	}
	// Label names the policy does not know count too: such a label must
	// not resolve to another agent and its roles.
	seen := map[uint32]string{}
	for _, names := range []iter.Seq[string]{maps.Keys(s.Agents), maps.Values(s.Cgroups)} {
		for name := range names {
			if other, dup := seen[AgentID(name)]; dup && other != name {
				return fmt.Errorf("agents %q and %q hash to the same id; rename one", name, other)
			}
			seen[AgentID(name)] = name
		}
	}
	targetNames := map[uint32]string{}
	for _, name := range s.Targets {
		if other, dup := targetNames[TargetID(name)]; dup && other != name {
			return fmt.Errorf("targets %q and %q hash to the same id; rename one", name, other)
		}
		targetNames[TargetID(name)] = name
	}

	targets := map[bpf.RedirectAddrKey]uint32{}
	for ap, name := range s.Targets {
		targets[addrKey(ap)] = TargetID(name)
	}

	egress := map[bpf.RedirectEgressKey]uint8{}
	for name, a := range s.Agents {
		for _, e := range a.Allow {
			k := bpf.RedirectEgressKey{AgentId: AgentID(name), Port: e.Port}
			k.Ip6 = ip6Words(e.Addr)
			egress[k] = 1
		}
	}
	ports := map[uint16]uint8{}
	for _, p := range s.EnginePorts {
		if p != 0 {
			ports[p] = 1
		}
	}

	// Targets and egress first, agents last: a new agent cgroup must never
	// become active before its targets are known.
	if err := syncMap(r.objs.Targets, targets); err != nil {
		return fmt.Errorf("sync targets map: %w", err)
	}
	if err := syncMap(r.objs.EgressAllow, egress); err != nil {
		return fmt.Errorf("sync egress map: %w", err)
	}
	if err := syncMap(r.objs.EnginePorts, ports); err != nil {
		return fmt.Errorf("sync engine ports map: %w", err)
	}
	// A level that gains a label is searched before the label is in
	// place, and one that loses its last label is skipped only after.
	skip := skipLevels(s)
	if len(s.KeepCgroups) > 0 {
		skip = 0
	}
	var old uint32
	if err := r.objs.UnlabelledLevels.Lookup(uint32(0), &old); err != nil {
		return kernelHint("read unlabelled levels", err)
	}
	if err := r.objs.UnlabelledLevels.Put(uint32(0), old&skip); err != nil {
		return kernelHint("update unlabelled levels", err)
	}
	if err := syncMapKeep(r.objs.AgentCgroups, agents, s.KeepCgroups, s.Untrusted); err != nil {
		return fmt.Errorf("sync agent cgroups map: %w", err)
	}
	if err := r.objs.UnlabelledLevels.Put(uint32(0), skip); err != nil {
		return kernelHint("update unlabelled levels", err)
	}
	return nil
}

// MaxLabelLevel is the deepest level of the cgroup tree (the root is 0)
// at which the kernel programs look for labels (MAX_CGROUP_DEPTH - 1 in
// redirect.c).
const MaxLabelLevel = 31

// skipLevels is the kernel's unlabelled_levels mask for s: a bit for each
// level 1..31 that holds none of s's labelled cgroups.
func skipLevels(s State) uint32 {
	var labelled uint32
	for id := range s.Cgroups {
		l, ok := s.Levels[id]
		if !ok || l < 1 || l > MaxLabelLevel {
			return 0 // unknown depth: search everywhere
		}
		labelled |= 1 << l
	}
	all := uint32(0xffffffff) &^ 1 // levels 1..31; the root is never searched
	return all &^ labelled
}

// syncMap makes m hold exactly want.
func syncMap[K comparable, V comparable](m *ebpf.Map, want map[K]V) error {
	return syncMapKeep(m, want, nil, nil)
}

// syncMapKeep makes m hold want, and leaves the entries of keep as they
// are. Entries of want in later are put after the others.
func syncMapKeep[K comparable, V comparable](m *ebpf.Map, want map[K]V, keep, later map[K]bool) error {
	var (
		k     K
		v     V
		stale []K
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		switch w, ok := want[k]; {
		case !ok && keep[k]:
		case !ok:
			stale = append(stale, k)
		case w == v:
			delete(want, k) // already right
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate: %w", err)
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return kernelHint("delete", err)
		}
	}
	for _, first := range []bool{true, false} {
		for k, v := range want {
			if later[k] == first {
				continue
			}
			if err := m.Put(k, v); err != nil {
				return kernelHint("put", err)
			}
		}
	}
	return nil
}

// AgentCgroupIDs returns the ids of the agent cgroups in the kernel map.
func (r *Redirector) AgentCgroupIDs() ([]uint64, error) {
	var (
		id   uint64
		info bpf.RedirectAgentInfo
		ids  []uint64
	)
	it := r.objs.AgentCgroups.Iterate()
	for it.Next(&id, &info) {
		ids = append(ids, id)
	}
	if err := it.Err(); err != nil {
		return nil, kernelHint("read agent cgroups", err)
	}
	return ids, nil
}

// Record is what the kernel remembered about a redirected connection.
type Record struct {
	OrigDst     netip.AddrPort
	TargetID    uint32
	AgentID     uint32
	PID         uint32
	CgroupID    uint64
	NetnsCookie uint64
	Cookie      uint64
}

// Lookup finds the record of a redirected connection the engine accepted.
// The agent socket's cookie comes from the kernel's socket table (the
// socket whose address is c's peer and whose peer is c's local address),
// so a connection that connect4 did not redirect never finds a record,
// whatever address it comes from.
//
// The 4-tuple only names c's peer while c holds it: a client that reset
// its connection before the lookup frees the tuple for another socket,
// possibly an agent's. Hence the found socket must be connected (not one
// still in SYN_SENT for that tuple) and c must still be connected after
// the lookup; while it is, no other socket can complete a handshake on
// the same tuple.
func (r *Redirector) Lookup(c *net.TCPConn) (Record, error) {
	peer, local := addrPort(c.RemoteAddr()), addrPort(c.LocalAddr())
	cookie, state, err := r.diag.cookie(peer, local)
	if errors.Is(err, errNoSocket) {
		return Record{}, fmt.Errorf("%w %s: its socket is gone", ErrNoRecord, peer)
	}
	if err != nil {
		return Record{}, fmt.Errorf("find the socket of %s: %w", peer, err)
	}
	if !connected(state) {
		return Record{}, fmt.Errorf("%w %s: its socket is in TCP state %d, not connected", ErrNoRecord, peer, state)
	}
	if st, err := tcpState(c); err != nil {
		return Record{}, fmt.Errorf("TCP state of the connection from %s: %w", peer, err)
	} else if st != unix.BPF_TCP_ESTABLISHED && st != unix.BPF_TCP_CLOSE_WAIT {
		return Record{}, fmt.Errorf("%w %s: the connection ended before it was looked up (TCP state %d)", ErrNoRecord, peer, st)
	}
	var rec bpf.RedirectConnRecord
	if err := r.objs.ConnByCookie.Lookup(cookie, &rec); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Record{}, fmt.Errorf("%w %s", ErrNoRecord, peer)
		}
		return Record{}, fmt.Errorf("look up redirect record for %s: %w", peer, err)
	}
	return Record{
		OrigDst:     netip.AddrPortFrom(wordsIP6(rec.OrigIp6).Unmap(), rec.OrigPort),
		TargetID:    rec.TargetId,
		AgentID:     rec.AgentId,
		PID:         rec.Pid,
		CgroupID:    rec.CgroupId,
		NetnsCookie: rec.NetnsCookie,
		Cookie:      rec.Cookie,
	}, nil
}

// Forget deletes the record of a connection whose session has ended.
// After that the agent's getpeername() shows the engine's address, which
// only matters for a socket that is already closing.
func (r *Redirector) Forget(cookie uint64) error {
	err := r.objs.ConnByCookie.Delete(cookie)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete redirect record %d: %w", cookie, err)
	}
	return nil
}

// TargetAddrs returns what the kernel's targets map holds, by target id:
// after a restart, the addresses the previous run resolved.
func (r *Redirector) TargetAddrs() (map[uint32][]netip.AddrPort, error) {
	out := map[uint32][]netip.AddrPort{}
	var (
		k  bpf.RedirectAddrKey
		id uint32
	)
	it := r.objs.Targets.Iterate()
	for it.Next(&k, &id) {
		out[id] = append(out[id], netip.AddrPortFrom(wordsIP6(k.Ip6).Unmap(), k.Port))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read targets map: %w", err)
	}
	return out, nil
}

// Sweep deletes the records of redirected connections that are not (or no
// longer) sessions: connections the agent reset before the engine looked
// them up, and those made while the engine was down. The engine deletes a
// session's record when the session ends (Forget); nothing else would,
// and an agent could fill the map with them. A record is deleted when the
// previous Sweep saw it too and owned (asked after the map was read, so
// that a session started meanwhile counts) does not list it: it outlives
// its connection by one to two sweep intervals. A connection still
// waiting to be accepted after that long loses its record and is refused.
// Sweep returns the number of records deleted.
func (r *Redirector) Sweep(owned func() map[uint64]struct{}) (int, error) {
	r.sweepMu.Lock()
	defer r.sweepMu.Unlock()
	var (
		k     uint64
		v     bpf.RedirectConnRecord
		stale []uint64
	)
	seen := map[uint64]struct{}{}
	it := r.objs.ConnByCookie.Iterate()
	for it.Next(&k, &v) {
		if _, old := r.swept[k]; old {
			stale = append(stale, k)
		} else {
			seen[k] = struct{}{}
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("sweep redirect records: %w", err)
	}
	keep := owned()
	n := 0
	for _, k := range stale {
		if _, ok := keep[k]; ok {
			continue
		}
		if err := r.objs.ConnByCookie.Delete(k); err == nil {
			n++
		} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, fmt.Errorf("sweep redirect records: %w", err)
		}
	}
	r.swept = seen
	return n, nil
}

// connected reports whether a TCP state is one a socket reaches only
// after its handshake.
func connected(state uint8) bool {
	switch state {
	case unix.BPF_TCP_ESTABLISHED, unix.BPF_TCP_FIN_WAIT1, unix.BPF_TCP_FIN_WAIT2, unix.BPF_TCP_TIME_WAIT,
		unix.BPF_TCP_CLOSE_WAIT, unix.BPF_TCP_LAST_ACK, unix.BPF_TCP_CLOSING:
		return true
	}
	return false
}

func tcpState(c *net.TCPConn) (uint8, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		info *unix.TCPInfo
		gerr error
	)
	if err := rc.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return 0, err
	}
	if gerr != nil {
		return 0, gerr
	}
	return info.State, nil
}

func addrPort(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// addrKey builds the kernel's address key; IPv4 is stored v4-mapped.
func addrKey(ap netip.AddrPort) bpf.RedirectAddrKey {
	return bpf.RedirectAddrKey{Ip6: ip6Words(ap.Addr()), Port: ap.Port()}
}

// ip6Words lays out an address as the kernel's __u32[4] in network byte
// order: the bytes in memory are the address bytes.
func ip6Words(a netip.Addr) [4]uint32 {
	b := a.Unmap().As16() // IPv4 becomes ::ffff:a.b.c.d
	var w [4]uint32
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[i*4:])
	}
	return w
}

func wordsIP6(w [4]uint32) netip.Addr {
	var b [16]byte
	for i := range w {
		binary.NativeEndian.PutUint32(b[i*4:], w[i])
	}
	return netip.AddrFrom16(b)
}
