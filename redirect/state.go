package redirect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

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
	Agents  map[string]Agent
	// Targets maps protected ip:port to target names.
	Targets map[netip.AddrPort]string
	// EnginePorts are the engine's own API and metrics ports, denied to
	// agents on every address.
	EnginePorts []uint16
}

const agentEgressAllow = 1 // agent_info.flags in redirect.c

// Apply writes s into the kernel maps: entries missing from s are deleted,
// the rest are put. Each map is converged separately; a failure leaves the
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
	seen := map[uint32]string{}
	for name := range s.Agents {
		if other, dup := seen[AgentID(name)]; dup {
			return fmt.Errorf("agents %q and %q hash to the same id; rename one", name, other)
		}
		seen[AgentID(name)] = name
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
	if err := syncMap(r.objs.AgentCgroups, agents); err != nil {
		return fmt.Errorf("sync agent cgroups map: %w", err)
	}
	return nil
}

// syncMap makes m hold exactly want.
func syncMap[K comparable, V comparable](m *ebpf.Map, want map[K]V) error {
	var (
		k     K
		v     V
		stale []K
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		switch w, ok := want[k]; {
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
	for k, v := range want {
		if err := m.Put(k, v); err != nil {
			return kernelHint("put", err)
		}
	}
	return nil
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

// Lookup finds the record of the connection whose client end is peer (the
// engine's RemoteAddr()).
func (r *Redirector) Lookup(peer netip.AddrPort) (Record, error) {
	var rec bpf.RedirectConnRecord
	if err := r.objs.ConnByPeer.Lookup(addrKey(peer), &rec); err != nil {
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
