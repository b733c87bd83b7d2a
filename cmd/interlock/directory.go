package main

import (
	"fmt"
	"net"
	"sync/atomic"

	"github.com/interlockhq/interlock/engine"
	"github.com/interlockhq/interlock/engine/policy"
	"github.com/interlockhq/interlock/redirect"
)

// checkKernelIDs refuses a policy in which two agents or two targets get
// the same kernel id (a 32-bit hash of the name): the engine could not
// tell them apart, and would serve a connection to one target with the
// other's protocol, rules and credentials.
func checkKernelIDs(p *policy.Policy) error {
	agents := map[uint32]string{}
	for _, a := range p.Agents() {
		if other, dup := agents[redirect.AgentID(a.Name)]; dup {
			return fmt.Errorf("agents %q and %q get the same kernel id; rename one", other, a.Name)
		}
		agents[redirect.AgentID(a.Name)] = a.Name
	}
	targets := map[uint32]string{}
	for _, t := range p.Targets() {
		if other, dup := targets[redirect.TargetID(t.Name)]; dup {
			return fmt.Errorf("targets %q and %q get the same kernel id; rename one", other, t.Name)
		}
		targets[redirect.TargetID(t.Name)] = t.Name
	}
	return nil
}

// directory maps the kernel's agent and target ids to the current policy.
// It is rebuilt on every policy load and read lock-free per connection.
type directory struct {
	snap atomic.Pointer[dirSnapshot]
}

type dirSnapshot struct {
	agents  map[uint32]engine.AgentInfo
	targets map[uint32]engine.TargetInfo
}

func (d *directory) update(p *policy.Policy, labelNames []string) {
	s := &dirSnapshot{agents: map[uint32]engine.AgentInfo{}, targets: map[uint32]engine.TargetInfo{}}
	// Labels naming agents the policy does not know still resolve to a
	// name (with no roles), so logs say who it was.
	for _, n := range labelNames {
		s.agents[redirect.AgentID(n)] = engine.AgentInfo{Name: n}
	}
	for _, a := range p.Agents() {
		s.agents[redirect.AgentID(a.Name)] = engine.AgentInfo{Name: a.Name, Roles: p.AgentRoles(a.Name)}
	}
	for _, t := range p.Targets() {
		s.targets[redirect.TargetID(t.Name)] = engine.TargetInfo{Name: t.Name, Protocol: t.Protocol}
	}
	d.snap.Store(s)
}

func (d *directory) Agent(id uint32) (engine.AgentInfo, bool) {
	a, ok := d.snap.Load().agents[id]
	return a, ok
}

func (d *directory) Target(id uint32) (engine.TargetInfo, bool) {
	t, ok := d.snap.Load().targets[id]
	return t, ok
}

// originLookup adapts the redirector's records to the engine.
type originLookup struct{ r *redirect.Redirector }

func (o originLookup) Lookup(c *net.TCPConn) (engine.Origin, error) {
	rec, err := o.r.Lookup(c)
	if err != nil {
		return engine.Origin{}, err
	}
	return engine.Origin{
		Dst: rec.OrigDst, AgentID: rec.AgentID, TargetID: rec.TargetID,
		PID: rec.PID, CgroupID: rec.CgroupID, NetnsCookie: rec.NetnsCookie, Cookie: rec.Cookie,
	}, nil
}

func (o originLookup) Forget(or engine.Origin) error { return o.r.Forget(or.Cookie) }
