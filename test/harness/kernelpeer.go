package harness

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// kernelPeer returns the real peer of a connected TCP socket as the
// kernel's socket table holds it: the engine's listener for a redirected
// connection, whatever getpeername() says (the hook rewrites that). It
// returns "" when the socket cannot be found.
//
// Tests need it to tell a redirected connection from a direct one: the
// target's view of its client is no proof, since the engine's upstream
// socket may get the very port the agent's socket has (both on 127.0.0.1,
// to different peers, which the kernel allows; measured about once in 200
// runs of 300 connection pairs, then several times in a row).
func kernelPeer(c net.Conn) string {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return ""
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return ""
	}
	var ino uint64
	rc.Control(func(fd uintptr) {
		var st syscall.Stat_t
		if syscall.Fstat(int(fd), &st) == nil {
			ino = st.Ino
		}
	})
	if ino == 0 {
		return ""
	}
	for _, table := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		if peer, ok := peerByInode(table, ino); ok {
			return peer.String()
		}
	}
	return ""
}

// peerByInode finds the socket with inode ino in a /proc/net/tcp{,6} table
// and returns its remote address.
func peerByInode(table string, ino uint64) (netip.AddrPort, bool) {
	f, err := os.Open(table)
	if err != nil {
		return netip.AddrPort{}, false
	}
	defer f.Close()
	want := strconv.FormatUint(ino, 10)
	s := bufio.NewScanner(f)
	s.Scan() // header
	for s.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fields := strings.Fields(s.Text())
		if len(fields) < 10 || fields[9] != want {
			continue
		}
		ap, err := parseProcAddr(fields[2])
		return ap, err == nil
	}
	return netip.AddrPort{}, false
}

// parseProcAddr parses "0100007F:1F90" (IPv4) or 32 hex digits and a port
// (IPv6): the address in 32-bit words as the kernel prints them, in host
// byte order, and the port in hex.
func parseProcAddr(s string) (netip.AddrPort, error) {
	hexIP, hexPort, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("no port in %q", s)
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port in %q: %w", s, err)
	}
	raw, err := hex.DecodeString(hexIP)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("address in %q", s)
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		// Printed with %08X from a u32 loaded in host order.
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
