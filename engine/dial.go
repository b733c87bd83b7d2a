package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// newDialer returns a dialer whose sockets carry mark, set before connect()
// so that the kernel's connect hook already sees it.
//
// The control hook also starts the connect itself. On loopback, and to any
// peer that answers within the syscall, the handshake is complete when
// connect() returns (the SYN-ACK is processed before the socket lock is
// released), yet a non-blocking connect still answers EINPROGRESS, and Go
// then parks the dial in the network poller and starts a goroutine to
// watch the context: two scheduler hand-offs on every session's connect
// path. Started here, Go's own connect() finds the socket connected (0 or
// EISCONN) and returns at once; a handshake still under way answers
// EALREADY, and Go waits for it as usual. The kernel's connect hook runs
// once, at the first connect().
func newDialer(mark uint32, timeout time.Duration) *net.Dialer {
	return &net.Dialer{
		Timeout: timeout,
		Control: func(network, address string, c syscall.RawConn) error {
			sa, err := sockaddr(network, address)
			if err != nil {
				return err
			}
			var serr error
			err = c.Control(func(fd uintptr) {
				if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)); serr != nil {
					serr = fmt.Errorf("set SO_MARK on upstream socket: %w (needs CAP_NET_ADMIN)", serr)
					return
				}
				if sa == nil {
					return
				}
				switch err := unix.Connect(int(fd), sa); err {
				case nil, unix.EINPROGRESS, unix.EINTR:
				default:
					serr = os.NewSyscallError("connect", err)
				}
			})
			return errors.Join(err, serr)
		},
	}
}

// sockaddr is the address the control hook connects to, or nil for a
// network it leaves to Go (anything but TCP).
func sockaddr(network, address string) (unix.Sockaddr, error) {
	if network != "tcp4" && network != "tcp6" {
		return nil, nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("upstream address %q: %w", address, err)
	}
	if network == "tcp4" {
		return &unix.SockaddrInet4{Addr: ap.Addr().Unmap().As4(), Port: int(ap.Port())}, nil
	}
	sa := &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
	if z := ap.Addr().Zone(); z != "" {
		ifi, err := net.InterfaceByName(z)
		if err != nil {
			return nil, fmt.Errorf("upstream address %q: %w", address, err)
		}
		sa.ZoneId = uint32(ifi.Index)
	}
	return sa, nil
}

func (s *Session) DialUpstream(ctx context.Context) (net.Conn, error) {
	c, err := s.dialer.DialContext(ctx, "tcp", s.Identity.OrigDst.String())
	if err != nil {
		s.upstreamError()
		return nil, fmt.Errorf("dial target %s at %s: %w", s.Identity.Target, s.Identity.OrigDst, err)
	}
	return c, nil
}

// DialContext dials like DialUpstream but to any address, for protocol
// handlers whose client library dials itself (pgconn's DialFunc) or that
// open side connections to the target (PostgreSQL cancel requests). The
// socket carries the loop-guard mark.
func (s *Session) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := s.dialer.DialContext(ctx, network, addr)
	if err != nil {
		s.upstreamError()
	}
	return c, err
}

func (s *Session) upstreamError() {
	if s.metrics != nil {
		s.metrics.UpstreamErrors.WithLabelValues(s.Identity.Target).Inc()
	}
}
