package harness

import (
	"net"
	"net/netip"
	"testing"
)

func TestKernelPeer(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Skipf("no %s loopback: %v", network, err)
			}
			defer ln.Close()
			// Several connections, so that the table has more than one
			// socket on the same addresses to choose from.
			var conns []net.Conn
			for range 3 {
				c, err := net.Dial(network, ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				conns = append(conns, c)
			}
			for _, c := range conns {
				if got, want := kernelPeer(c), ln.Addr().String(); got != want {
					t.Errorf("kernelPeer = %q, want %q", got, want)
				}
			}
			// The accepted side's peer is the client's own address.
			s, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got, want := kernelPeer(s), s.RemoteAddr().String(); got != want {
				t.Errorf("accepted kernelPeer = %q, want %q", got, want)
			}
		})
	}
}

func TestParseProcAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:1F90":                         "127.0.0.1:8080",
		"00000000000000000000000001000000:0016": "[::1]:22",
		"0000000000000000FFFF00000100007F:1538": "[::ffff:127.0.0.1]:5432",
	} {
		got, err := parseProcAddr(in)
		if err != nil || got != netip.MustParseAddrPort(want) {
			t.Errorf("parseProcAddr(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0100007F", "0100007F:XYZ", "01007F:0016", "zz00007F:0016"} {
		if _, err := parseProcAddr(bad); err == nil {
			t.Errorf("parseProcAddr(%q) accepted", bad)
		}
	}
}
