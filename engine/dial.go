package engine

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// newDialer returns a dialer whose sockets carry mark, set before connect()
// so that the kernel's connect hook already sees it.
func newDialer(mark uint32, timeout time.Duration) *net.Dialer {
	return &net.Dialer{
		Timeout: timeout,
		Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
			})
			if err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("set SO_MARK on upstream socket: %w (needs CAP_NET_ADMIN)", serr)
			}
			return nil
		},
	}
}

// DialUpstream connects to the address the agent meant to reach, from the
// engine (outside every agent cgroup, with the loop-guard mark).
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
