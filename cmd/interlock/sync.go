package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/interlockhq/interlock/engine"
	"github.com/interlockhq/interlock/engine/policy"
	"github.com/interlockhq/interlock/redirect"
)

// kernelSync keeps the BPF maps equal to what the policy and the cgroup
// labels say: it converges from desired state on every tick, so a missed
// event or a crash mid-update heals itself on the next one.
type kernelSync struct {
	r          *redirect.Redirector
	mount      string
	root       string // attach cgroup: labels are looked for below it
	levels     bool   // mount depth is the kernel's level (redirect.MountAtGlobalRoot)
	warnedDeep map[uint64]bool
	// warnedUntrusted: labels already logged as ignored (LabelTrusted);
	// warnedEscapable: as escapable (LabelEscapable). Pruned to the
	// labels of the last scan.
	warnedUntrusted, warnedEscapable map[uint64]bool
	scanErrAt                        time.Time // an incomplete scan last logged
	untrustedOver                    int       // untrusted labels over the limit, last logged
	enginePorts                      []uint16
	pol                              func() *policy.Policy
	dir                              *directory
	log                              *slog.Logger
	resolveEvery                     time.Duration
	// scan finds the labelled cgroups below root; nil: redirect.ScanLabels.
	scan func(mount, root string) ([]redirect.LabelledCgroup, error)

	mu         sync.Mutex
	last       redirect.State
	labels     []redirect.LabelledCgroup
	resolved   map[string][]netip.Addr // target host → addresses (DNS names only)
	resolvedAt time.Time
}

// tick converges once. It returns the error of the kernel update, if any;
// label scan problems are logged and retried next tick.
func (k *kernelSync) tick(ctx context.Context) error {
	p := k.pol()
	scan := k.scan
	if scan == nil {
		scan = redirect.ScanLabels
	}
	labels, scanErr := scan(k.mount, k.root)
	if scanErr != nil && time.Since(k.scanErrAt) > time.Minute {
		k.log.Warn("cgroup label scan incomplete; agent cgroups the kernel knows below what could not be read stay agents (logged at most once a minute)", "error", scanErr)
		k.scanErrAt = time.Now()
	}
	static := map[string][]string{}
	for _, a := range p.Agents() {
		if len(a.Cgroups) > 0 {
			static[a.Name] = a.Cgroups
		}
	}
	labels = append(labels, redirect.StaticLabels(k.mount, static)...)

	if time.Since(k.resolvedAt) > k.resolveEvery || k.resolved == nil || k.needsResolve(p) {
		if err := k.resolve(ctx, p); err != nil {
			// Without the addresses the kernel holds, a failed lookup
			// would remove them: agents with egress: allow would reach
			// the target direct. Keep the kernel as it is.
			return err
		}
	}

	st := redirect.State{
		Cgroups:     map[uint64]string{},
		Levels:      map[uint64]int{},
		Agents:      map[string]redirect.Agent{},
		Targets:     map[netip.AddrPort]string{},
		EnginePorts: k.enginePorts,
		Untrusted:   map[uint64]bool{},
	}
	if scanErr != nil {
		keep, err := k.keepUnread(labels, scanErr)
		if err != nil {
			return err // the kernel stays as it is
		}
		st.KeepCgroups = keep
	}
	labels = k.untrustedAgents(labels)
	var names []string
	for _, l := range labels {
		if l.Ignored != "" {
			if l.Agent != redirect.UntrustedAgent {
				continue // below a label that counts, or over the limit
			}
			st.Untrusted[l.ID] = true
		}
		if l.Escapable != "" && once(&k.warnedEscapable, l.ID) {
			k.log.Error("agent processes can leave this labelled cgroup without root; they are intercepted only while they stay",
				"cgroup", l.Path, "agent", l.Agent, "reason", l.Escapable)
		}
		if l.Path == "/" {
			k.log.Error("refusing to treat the root cgroup as an agent; remove its label", "agent", l.Agent)
			continue
		}
		level := l.Level()
		if level > redirect.MaxLabelLevel && once(&k.warnedDeep, l.ID) {
			// Set around `interlock label` (which refuses it): the kernel
			// does not search that deep, so these processes are not agents.
			k.log.Error("labelled cgroup is deeper than the kernel programs search; its processes are NOT intercepted: label an ancestor instead",
				"cgroup", l.Path, "agent", l.Agent, "level", level, "max_level", redirect.MaxLabelLevel)
		}
		st.Cgroups[l.ID] = l.Agent
		if k.levels {
			st.Levels[l.ID] = level
		}
		names = append(names, l.Agent)
	}
	seen := map[uint64]bool{}
	for _, l := range labels {
		seen[l.ID] = true
	}
	for _, warned := range []map[uint64]bool{k.warnedDeep, k.warnedUntrusted, k.warnedEscapable} {
		for id := range warned {
			if !seen[id] {
				delete(warned, id)
			}
		}
	}
	for _, a := range p.Agents() {
		ra := redirect.Agent{Name: a.Name, EgressAllow: a.Egress == policy.EgressAllow}
		for _, e := range a.EgressAllow {
			ra.Allow = append(ra.Allow, redirect.EgressRule{Addr: e.Addr, Port: e.Port})
		}
		st.Agents[a.Name] = ra
	}
	for _, t := range p.Targets() {
		for _, ip := range k.addrsOf(t) {
			st.Targets[netip.AddrPortFrom(ip, t.Port)] = t.Name
		}
	}

	k.mu.Lock()
	defer k.mu.Unlock()
	k.labels = labels
	// The directory first: a connection redirected the instant the maps
	// change must find its agent and target names.
	k.dir.update(p, names)
	if reflect.DeepEqual(st, k.last) {
		return nil
	}
	if err := k.r.Apply(st); err != nil {
		return fmt.Errorf("update kernel maps: %w", err)
	}
	k.log.Info("kernel state updated", "agent_cgroups", len(st.Cgroups), "targets", len(st.Targets), "agents", len(st.Agents))
	k.last = st
	return nil
}

func (k *kernelSync) needsResolve(p *policy.Policy) bool {
	for _, t := range p.Targets() {
		if !t.IP.IsValid() {
			if _, ok := k.resolved[t.Host]; !ok {
				return true
			}
		}
	}
	return false
}

// resolve looks up targets given by DNS name. A failed lookup keeps the
// previous addresses: a DNS hiccup must not open (or close) a target.
func (k *kernelSync) resolve(ctx context.Context, p *policy.Policy) error {
	next := map[string][]netip.Addr{}
	for _, t := range p.Targets() {
		if t.IP.IsValid() {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		addrs, err := net.DefaultResolver.LookupNetIP(rctx, "ip", t.Host)
		cancel()
		if err != nil || len(addrs) == 0 {
			k.log.Warn("cannot resolve target host; keeping previous addresses", "target", t.Name, "host", t.Host, "error", err)
			prev, ok := k.resolved[t.Host]
			if !ok {
				// Just started: the previous addresses are those the last
				// run left in the kernel, which a DNS outage must not drop
				// (agents with egress: allow would reach the target direct).
				var perr error
				if prev, perr = k.pinnedAddrs(t); perr != nil {
					return perr
				}
			}
			next[t.Host] = prev
			continue
		}
		for i := range addrs {
			addrs[i] = addrs[i].Unmap()
		}
		next[t.Host] = addrs
	}
	k.resolved = next
	k.resolvedAt = time.Now()
	return nil
}

// pinnedAddrs is what the kernel's targets map holds for t.
func (k *kernelSync) pinnedAddrs(t policy.Target) ([]netip.Addr, error) {
	pinned, err := k.r.TargetAddrs()
	if err != nil {
		return nil, fmt.Errorf("target %s: its host does not resolve and the kernel's addresses cannot be read: %w", t.Name, err)
	}
	var out []netip.Addr
	for _, ap := range pinned[redirect.TargetID(t.Name)] {
		if ap.Port() == t.Port {
			out = append(out, ap.Addr())
		}
	}
	return out, nil
}

func (k *kernelSync) addrsOf(t policy.Target) []netip.Addr {
	if t.IP.IsValid() {
		return []netip.Addr{t.IP}
	}
	return k.resolved[t.Host]
}

// maxUntrustedCgroups caps the kernel entries of labels the daemon does
// not honour: anyone who owns a cgroup can make such labels by the
// thousand, and the agent cgroups map (16384) must keep room for the
// labels that count.
const maxUntrustedCgroups = 1024

// untrustedAgents decides what becomes of labels the daemon does not
// honour (Ignored), and logs each once. Below a label that counts, one
// changes nothing. Elsewhere its processes are still agents, with no roles
// and egress deny: ignoring it would let them reach targets directly (a
// label root set on a delegated cgroup). Its Agent becomes
// redirect.UntrustedAgent, for the topmost such cgroups only (the kernel's
// ancestor search covers the rest), at most maxUntrustedCgroups, shared
// out in turn among delegation points (delegationPoint): one user's flood
// of labels must not crowd out the label root set on another user's
// cgroup. The others are left as they are, and skipped.
func (k *kernelSync) untrustedAgents(labels []redirect.LabelledCgroup) []redirect.LabelledCgroup {
	honoured, ignored := map[string]bool{}, map[string]bool{}
	for _, l := range labels {
		switch {
		case l.Ignored != "":
			ignored[l.Path] = true
		case l.Path != "/":
			honoured[l.Path] = true
		}
	}
	out := slices.Clone(labels)
	slices.SortStableFunc(out, func(a, b redirect.LabelledCgroup) int { return strings.Compare(a.Path, b.Path) })
	byOwner := map[string][]int{} // topmost untrusted labels by delegation point, in path order
	for i, l := range out {
		if l.Ignored == "" {
			continue
		}
		if once(&k.warnedUntrusted, l.ID) {
			k.log.Error("agent label not honoured: non-root users could have written it; its processes are agents through a labelled ancestor, or else agents with no roles and egress deny",
				"cgroup", l.Path, "agent", l.Agent, "reason", l.Ignored)
		}
		if labelledAncestorIn(honoured, l.Path) || l.Path != "/" && labelledAncestorIn(ignored, filepath.Dir(l.Path)) {
			continue
		}
		point, ok := delegationPoint(k.mount, l.Path)
		if !ok {
			continue // gone
		}
		byOwner[point] = append(byOwner[point], i)
	}
	owners := slices.Sorted(maps.Keys(byOwner))
	taken := 0
	for round := 0; taken < maxUntrustedCgroups; round++ {
		more := false
		for _, uid := range owners {
			if round < len(byOwner[uid]) && taken < maxUntrustedCgroups {
				out[byOwner[uid][round]].Agent = redirect.UntrustedAgent
				taken++
				more = true
			}
		}
		if !more {
			break
		}
	}
	var left []string
	for _, uid := range owners {
		for _, i := range byOwner[uid] {
			if out[i].Agent != redirect.UntrustedAgent {
				left = append(left, out[i].Path)
			}
		}
	}
	if len(left) > 0 && len(left) != k.untrustedOver {
		k.log.Error("too many labels the daemon does not honour; the processes of the cgroups left out are not intercepted (someone may be flooding labels: look at the owners of these cgroups)",
			"left_out", len(left), "limit", maxUntrustedCgroups, "first", left[:min(len(left), 5)])
	}
	k.untrustedOver = len(left)
	return out
}

// delegationPoint returns the topmost cgroup on the way from the root to
// rel (relative to mount) that someone other than root may write: where
// a user's own part of the tree begins ("" when there is none). Users
// cannot make more of them (new children of root-only cgroups need
// root), whatever uids they own: the untrusted-label cap is shared out by
// these, not by owner uid, which a user with subordinate uids (a user
// namespace) can multiply with chown.
func delegationPoint(mount, rel string) (string, bool) {
	p := mount
	for _, part := range strings.Split(strings.Trim(rel, "/"), "/") {
		p = filepath.Join(p, part)
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return "", false
		}
		if st.Uid != 0 || st.Mode&0o022 != 0 {
			return p, true
		}
	}
	return "", true
}

// keepUnread returns the agent cgroups in the kernel that a scan which
// failed with scanErr did not find but may have missed: those at or below
// a cgroup it could not read, or all of them when it read nothing. The
// rest (gone, or read and unlabelled) may go.
func (k *kernelSync) keepUnread(labels []redirect.LabelledCgroup, scanErr error) (map[uint64]bool, error) {
	ids, err := k.r.AgentCgroupIDs()
	if err != nil {
		return nil, err
	}
	var inc *redirect.IncompleteScanError
	partial := errors.As(scanErr, &inc)
	found := map[uint64]bool{}
	for _, l := range labels {
		found[l.ID] = true
	}
	keep := map[uint64]bool{}
	for _, id := range ids {
		if found[id] {
			continue
		}
		if !partial {
			keep[id] = true
			continue
		}
		path, err := redirect.CgroupPathByID(k.mount, id)
		if errors.Is(err, redirect.ErrCgroupGone) {
			continue
		}
		if err != nil || inc.Covers(path) {
			keep[id] = true
		}
	}
	return keep, nil
}

// labelledAncestorIn reports whether path (relative to the mount) or one of
// its ancestors is in labelled.
func labelledAncestorIn(labelled map[string]bool, path string) bool {
	for p := path; ; p = filepath.Dir(p) {
		if labelled[p] {
			return true
		}
		if p == "/" || p == "." {
			return false
		}
	}
}

// once reports whether id is not yet in *seen, and adds it: for errors
// logged once per cgroup rather than every tick.
func once(seen *map[uint64]bool, id uint64) bool {
	if (*seen)[id] {
		return false
	}
	if *seen == nil {
		*seen = map[uint64]bool{}
	}
	(*seen)[id] = true
	return true
}

// run ticks until ctx is done.
func (k *kernelSync) run(ctx context.Context, every time.Duration) {
	repeat(ctx, every, func() {
		if err := k.tick(ctx); err != nil {
			k.log.Error("kernel sync failed; retrying", "error", err)
		}
	})
}

// repeat calls f every d until ctx is done.
func repeat(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// snapshot returns what the kernel was last told, for status.
func (k *kernelSync) snapshot() (redirect.State, []redirect.LabelledCgroup) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.last, append([]redirect.LabelledCgroup(nil), k.labels...)
}

// labelledAncestor returns the agent label of the cgroup rel (relative to
// mount) or of its nearest labelled ancestor, "" for none. The daemon
// refuses to run inside an agent cgroup: its own dials would be redirected
// to itself, and agents could reach its API.
func labelledAncestor(mount, rel string) string {
	p := filepath.Join(mount, rel)
	for strings.HasPrefix(p, mount) && p != mount {
		if l, _ := redirect.Label(p); l != "" {
			return l
		}
		p = filepath.Dir(p)
	}
	return ""
}

// sweepInterval is how often the kernel's redirect records are swept: a
// record without a session goes one to two intervals after its connection.
const sweepInterval = 30 * time.Second

// sweepRecords deletes the kernel records no session owns (connections
// reset before the engine looked them up, or made while it was down), so
// that agents cannot fill the record map with them.
func sweepRecords(ctx context.Context, r *redirect.Redirector, srv *engine.Server, log *slog.Logger) {
	repeat(ctx, sweepInterval, func() {
		n, err := r.Sweep(srv.RecordCookies)
		if err != nil {
			log.Warn("sweeping redirect records failed", "error", err)
		} else if n > 0 {
			log.Debug("swept redirect records without a session", "records", n)
		}
	})
}

// warnEphemeralPorts warns when an engine port lies in the kernel's
// ephemeral range and is not reserved: listen() on a socket that was never
// bound takes a port from that range without any bind hook, so while the
// daemon is down another process could get the engine's port that way.
func warnEphemeralPorts(log *slog.Logger, ports ...uint16) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil {
		return
	}
	reserved, _ := os.ReadFile("/proc/sys/net/ipv4/ip_local_reserved_ports")
	for _, p := range ports {
		if int(p) < lo || int(p) > hi || portListed(strings.TrimSpace(string(reserved)), int(p)) {
			continue
		}
		log.Warn("an engine port lies in net.ipv4.ip_local_port_range: while the daemon is down, a process could get it by listen() without bind(); add it to net.ipv4.ip_local_reserved_ports or move the port",
			"port", p, "range", fmt.Sprintf("%d-%d", lo, hi))
	}
}

// ptraceScopeFile is Yama's setting; absent without Yama.
const ptraceScopeFile = "/proc/sys/kernel/yama/ptrace_scope"

// ptraceWarning says what is wrong with the host's ptrace restrictions
// (the contents of ptraceScopeFile), "" when nothing is. Without Yama, or
// at scope 0, any process of an agent's user outside the agent cgroup can
// ptrace the agent or take its sockets with pidfd_getfd (served as the
// agent), and the agent can do the same to it (direct connections).
func ptraceWarning(path string) string {
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "the kernel has no Yama ptrace restrictions"
	case err != nil:
		return ""
	case strings.TrimSpace(string(b)) == "0":
		return "kernel.yama.ptrace_scope is 0"
	}
	return ""
}

func warnPtrace(log *slog.Logger) {
	if w := ptraceWarning(ptraceScopeFile); w != "" {
		log.Warn(w+": processes of an agent's user outside its cgroup can take over the agent's connections (ptrace, pidfd_getfd), and the agent theirs; give every agent a user of its own that runs nothing else, or set kernel.yama.ptrace_scope to 1 or more",
			"setting", ptraceScopeFile)
	}
}

// portListed reports whether a port is in a list like "8080,15000-15010".
func portListed(list string, port int) bool {
	for _, part := range strings.Split(list, ",") {
		a, b, isRange := strings.Cut(strings.TrimSpace(part), "-")
		lo, err := strconv.Atoi(a)
		if err != nil {
			continue
		}
		hi := lo
		if isRange {
			if hi, err = strconv.Atoi(b); err != nil {
				continue
			}
		}
		if port >= lo && port <= hi {
			return true
		}
	}
	return false
}
