package masking

import (
	"net/netip"
	"testing"

	"github.com/interlockhq/interlock/engine/policy"
)

func TestIP(t *testing.T) {
	testDetector(t, policy.DetectorIP, []detCase{
		one("10.0.0.1"),
		in("connect 192.168.1.254:5432", "192.168.1.254"),
		one("255.255.255.255"),
		in("host=172.16.0.1;", "172.16.0.1"),
		in("(8.8.8.8)", "8.8.8.8"),
		in("10.0.0.0/8", "10.0.0.0"),
		one("2001:db8::1"),
		in("fe80::1%eth0", "fe80::1"),
		one("::1"),
		one("::ffff:192.0.2.1"),
		in("[2001:db8:85a3::8a2e:370:7334]:443", "2001:db8:85a3::8a2e:370:7334"),
		one("2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
		in("Host fe80::1.", "fe80::1"),
		in("from 10.1.2.3 to 10.1.2.4", "10.1.2.3", "10.1.2.4"),
		in("gw fe80::1: down", "fe80::1"),
	}, []detCase{
		none("256.1.1.1"),
		none("1.2.3"),
		none("1.2.3.4.5"),
		none("01.2.3.4"),
		none("v1.2.3.4"),
		none("10.0.0.1a"),
		none("00:1a:2b:3c:4d:5e"),
		none("10:30:45"),
		none("x :: Int"),
		none("std::vector"),
		none("1::2::3"),
		none("12345::1"),
		none("a:b:c"),
		none("2001:db8:::1"),
		none("gggg::1"),
		none("1:2:3:4:5:6:7:8:9"),
		none("alice@10.0.0.1.example.com"),
		none("a::b"),
		none("dead::beef"),
	})
}

func TestIPv6MatchesNetip(t *testing.T) {
	for _, s := range []string{
		"::", "::1", "1::", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "1:2:3:4:5:6::8",
		"1:2:3:4:5:6:7:8::", "1::2:3:4:5:6:7:8", "::ffff:1.2.3.4", "::ffff:01.2.3.4", "1:2:3:4:5:6:1.2.3.4",
		"1:2:3:4:5:6:7:1.2.3.4", "12345::", "1:::2", ":1::", "1::2:", "fffff::", "::1.2.3", "1.2.3.4",
	} {
		_, err := netip.ParseAddr(s)
		want := err == nil && s != "::" && s != "1.2.3.4"
		if got := ipv6OK([]byte(s)); got != want {
			t.Errorf("ipv6OK(%q) = %v, netip says %v", s, got, want)
		}
	}
}
