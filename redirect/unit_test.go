package redirect

import (
	"net/netip"
	"testing"
)

func TestResolveCgroup(t *testing.T) {
	const m = "/sys/fs/cgroup/unified"
	cases := map[string]string{
		"/agents/a":            m + "/agents/a",
		"agents/a":             m + "/agents/a",
		m + "/agents/a":        m + "/agents/a",
		"/agents/../agents/b/": m + "/agents/b",
		"/":                    m,
	}
	for in, want := range cases {
		got, err := ResolveCgroup(m, in)
		if err != nil || got != want {
			t.Errorf("ResolveCgroup(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "../../etc", "../x"} {
		if got, err := ResolveCgroup(m, bad); err == nil {
			t.Errorf("ResolveCgroup(%q) = %q, want an error", bad, got)
		}
	}
}

func TestAddressKeysAreV4MappedAndRoundTrip(t *testing.T) {
	for _, s := range []string{"10.0.0.5:5432", "[::1]:5432", "[2001:db8::7]:443", "[::ffff:10.0.0.5]:5432"} {
		ap := netip.MustParseAddrPort(s)
		k := addrKey(ap)
		back := netip.AddrPortFrom(wordsIP6(k.Ip6).Unmap(), k.Port)
		want := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if back != want {
			t.Errorf("%s: round trip gave %s", s, back)
		}
	}
	// IPv4 and its v4-mapped spelling must share one kernel key: connect4
	// and a v4-mapped connect6 look up the same target.
	if addrKey(netip.MustParseAddrPort("10.0.0.5:5432")) != addrKey(netip.MustParseAddrPort("[::ffff:10.0.0.5]:5432")) {
		t.Error("IPv4 and v4-mapped keys differ")
	}
}

func TestNameIDs(t *testing.T) {
	seen := map[uint32]string{}
	for _, n := range []string{"analyst", "writer", "orders-db", "echo", "", "a", "b"} {
		id := AgentID(n)
		if id == 0 {
			t.Errorf("%q has id 0, which the kernel reads as 'none'", n)
		}
		if o, dup := seen[id]; dup {
			t.Errorf("%q and %q collide", n, o)
		}
		seen[id] = n
		if AgentID(n) != id || TargetID(n) != id {
			t.Errorf("ids of %q are not stable", n)
		}
	}
}

func TestSkipLevels(t *testing.T) {
	const all = uint32(0xfffffffe)
	cases := []struct {
		name string
		s    State
		want uint32
	}{
		{"no labels: every level skipped", State{}, all},
		{"labels at levels 2 and 4", State{
			Cgroups: map[uint64]string{10: "a", 11: "b", 12: "a"},
			Levels:  map[uint64]int{10: 2, 11: 4, 12: 2},
		}, all &^ (1<<2 | 1<<4)},
		{"a label of unknown depth: nothing skipped", State{
			Cgroups: map[uint64]string{10: "a", 11: "b"},
			Levels:  map[uint64]int{10: 2},
		}, 0},
		{"deeper than the kernel searches: nothing skipped", State{
			Cgroups: map[uint64]string{10: "a"},
			Levels:  map[uint64]int{10: 32},
		}, 0},
	}
	for _, tc := range cases {
		if got := skipLevels(tc.s); got != tc.want {
			t.Errorf("%s: skipLevels = %#x, want %#x", tc.name, got, tc.want)
		}
	}
}

func TestMountAtGlobalRootRejectsOtherPaths(t *testing.T) {
	if MountAtGlobalRoot("/definitely/not/a/cgroup2/mount") {
		t.Error("a path that is no cgroup2 mount point counted as the global root")
	}
}
