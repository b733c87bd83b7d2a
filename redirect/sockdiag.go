package redirect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// sockDiag finds the socket cookie of the agent's end of a redirected
// connection, from the engine's side of it, with one exact-match
// SOCK_DIAG_BY_FAMILY request (what `ss` uses). The kernel looks the
// 4-tuple up in its TCP hash and answers within the request, so a
// request costs two system calls (about 3 µs measured), paid by
// redirected connections only.
//
// One netlink socket serves the whole engine; requests are short and
// serialized.
type sockDiag struct {
	mu  sync.Mutex
	fd  int
	seq uint32
	buf [512]byte
}

func openSockDiag() (*sockDiag, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("open sock_diag netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind sock_diag netlink socket: %w", err)
	}
	// Exact lookups are answered before sendto returns; the timeout only
	// bounds a kernel that does not answer at all.
	tv := unix.NsecToTimeval(int64(time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set sock_diag receive timeout: %w", err)
	}
	return &sockDiag{fd: fd}, nil
}

func (d *sockDiag) Close() error { return unix.Close(d.fd) }

// Sizes of the kernel's structures (linux/netlink.h, linux/inet_diag.h).
const (
	nlmsgHdrLen      = 16
	inetDiagReqV2Len = 56 // family, protocol, ext, pad, states, inet_diag_sockid
	inetDiagMsgMin   = 4 + 48
	inetDiagNoCookie = ^uint32(0)
)

// errNoSocket means no TCP socket has that 4-tuple (any more).
var errNoSocket = errors.New("no such socket")

// cookie returns the cookie and TCP state of the socket whose local
// address is src and whose peer is dst, in the engine's network namespace.
func (d *sockDiag) cookie(src, dst netip.AddrPort) (uint64, uint8, error) {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if src.Addr().Is4() != dst.Addr().Is4() {
		return 0, 0, fmt.Errorf("sock_diag: mixed address families %s → %s", src, dst)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	seq := d.seq

	var req [nlmsgHdrLen + inetDiagReqV2Len]byte
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], seq)
	r := req[nlmsgHdrLen:]
	r[0] = unix.AF_INET6
	if src.Addr().Is4() {
		r[0] = unix.AF_INET
	}
	r[1] = unix.IPPROTO_TCP
	ne.PutUint32(r[4:], ^uint32(0)) // every state
	putSockID(r[8:], src, dst)
	if err := unix.Sendto(d.fd, req[:], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, 0, fmt.Errorf("sock_diag request: %w", err)
	}
	for {
		n, _, err := unix.Recvfrom(d.fd, d.buf[:], 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return 0, 0, fmt.Errorf("sock_diag reply: %w", err)
		}
		b := d.buf[:n]
		if len(b) < nlmsgHdrLen || ne.Uint32(b[8:]) != seq {
			continue // a late answer to an earlier request that timed out
		}
		switch typ := ne.Uint16(b[4:]); {
		case typ == unix.NLMSG_ERROR:
			if len(b) < nlmsgHdrLen+4 {
				return 0, 0, errors.New("sock_diag: short error message")
			}
			errno := unix.Errno(-int32(ne.Uint32(b[nlmsgHdrLen:])))
			if errno == unix.ENOENT {
				return 0, 0, errNoSocket
			}
			return 0, 0, fmt.Errorf("sock_diag: %w", errno)
		case typ != unix.SOCK_DIAG_BY_FAMILY || len(b) < nlmsgHdrLen+inetDiagMsgMin:
			return 0, 0, fmt.Errorf("sock_diag: unexpected reply type %d, %d bytes", typ, len(b))
		}
		// struct inet_diag_msg: family, state, timer, retrans, then the id.
		state := b[nlmsgHdrLen+1]
		id := b[nlmsgHdrLen+4:]
		// The kernel falls back to a listening socket when no connection
		// matches; only the exact connection will do.
		if binary.BigEndian.Uint16(id[0:]) != src.Port() || binary.BigEndian.Uint16(id[2:]) != dst.Port() {
			return 0, 0, errNoSocket
		}
		return uint64(ne.Uint32(id[40:])) | uint64(ne.Uint32(id[44:]))<<32, state, nil
	}
}

// putSockID lays out struct inet_diag_sockid: ports and addresses in
// network byte order, IPv4 addresses in the first word.
func putSockID(b []byte, src, dst netip.AddrPort) {
	binary.BigEndian.PutUint16(b[0:], src.Port())
	binary.BigEndian.PutUint16(b[2:], dst.Port())
	putDiagAddr(b[4:20], src.Addr())
	putDiagAddr(b[20:36], dst.Addr())
	binary.NativeEndian.PutUint32(b[36:], 0) // any interface
	binary.NativeEndian.PutUint32(b[40:], inetDiagNoCookie)
	binary.NativeEndian.PutUint32(b[44:], inetDiagNoCookie)
}

func putDiagAddr(b []byte, a netip.Addr) {
	if a.Is4() {
		v := a.As4()
		copy(b, v[:])
		return
	}
	v := a.As16()
	copy(b, v[:])
}
