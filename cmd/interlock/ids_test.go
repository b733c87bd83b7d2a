package main

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/interlockhq/interlock/engine/policy"
	"github.com/interlockhq/interlock/redirect"
)

// collidingNames finds two names prefix-N with the same kernel id (a
// 32-bit FNV-1a hash; a fraction of a second).
func collidingNames(prefix string) (string, string) {
	seen := map[uint32]string{}
	for i := 0; ; i++ {
		n := fmt.Sprintf("%s-%d", prefix, i)
		if o, ok := seen[redirect.TargetID(n)]; ok {
			return o, n
		}
		seen[redirect.TargetID(n)] = n
	}
}

// Two targets with the same kernel id made the engine serve a connection
// to one with the other's protocol, rules and credentials; the policy was
// accepted. Now it is refused (the store keeps the last good one).
func TestKernelIDCollisionsRefused(t *testing.T) {
	a, b := collidingNames("db")
	pol, err := policy.Parse("ids.yaml", []byte(`version: 1
targets:
  - {name: "`+a+`", protocol: tcp, address: "10.0.0.1:5432"}
  - {name: "`+b+`", protocol: tcp, address: "10.0.0.2:5432"}
agents:
  - {name: analyst, roles: [analyst]}
roles:
  - name: analyst
    rules:
      - {targets: ["`+b+`"], actions: [read], decision: allow}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkKernelIDs(pol); err == nil || !strings.Contains(err.Error(), "same kernel id") {
		t.Errorf("colliding targets %q and %q: %v", a, b, err)
	}
	// interlock policy check says so too.
	file := writeTemp(t, "ids.yaml", `version: 1
targets:
  - {name: "`+a+`", protocol: tcp, address: "10.0.0.1:5432"}
  - {name: "`+b+`", protocol: tcp, address: "10.0.0.2:5432"}
`)
	if out, code, _ := runPolicyCmd(t, policyOptions{}, "check", file); code != policyExitFailed || !strings.Contains(out, "same kernel id") {
		t.Errorf("policy check of colliding targets: exit %d\n%s", code, out)
	}

	x, y := collidingNames("agent")
	pol, err = policy.Parse("ids.yaml", []byte(`version: 1
agents:
  - {name: "`+x+`", roles: [analyst]}
  - {name: "`+y+`", roles: [analyst]}
roles:
  - name: analyst
    rules:
      - {actions: [read], decision: allow}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkKernelIDs(pol); err == nil || !strings.Contains(err.Error(), "same kernel id") {
		t.Errorf("colliding agents %q and %q: %v", x, y, err)
	}

	// A label naming an agent the policy does not know, whose id is a
	// policy agent's, must not resolve to that agent: the kernel update
	// is refused before anything is written.
	var r redirect.Redirector
	err = r.Apply(redirect.State{
		Cgroups: map[uint64]string{42: y},
		Agents:  map[string]redirect.Agent{x: {Name: x}},
	})
	if err == nil || !strings.Contains(err.Error(), "same id") {
		t.Errorf("label %q colliding with agent %q: Apply = %v", y, x, err)
	}
	err = r.Apply(redirect.State{Targets: map[netip.AddrPort]string{
		netip.MustParseAddrPort("10.0.0.1:5432"): a,
		netip.MustParseAddrPort("10.0.0.2:5432"): b,
	}})
	if err == nil || !strings.Contains(err.Error(), "same id") {
		t.Errorf("targets %q and %q: Apply = %v", a, b, err)
	}
}
