package postgres

import (
	"context"
	"crypto/tls"
	"errors"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// errAgentGone and errAgentCancel end a held statement early: nobody is
// waiting for it any more, or the agent cancelled it.
var (
	errAgentGone   = errors.New("the agent disconnected while the statement was held")
	errAgentCancel = errors.New("the agent cancelled the held statement")
)

// holdContext is the context a statement is held under (approvals): it is
// cancelled when the agent's connection closes or the agent sends a
// CancelRequest for this session, so that an approval given after the agent
// gave up never runs the statement.
func (ss *session) holdContext(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	ss.h.cancels.setHold(ss.up.key, func() { cancel(errAgentCancel) })
	done := make(chan struct{})
	go ss.watchClosed(done, func() { cancel(errAgentGone) })
	return ctx, func() {
		close(done)
		ss.h.cancels.setHold(ss.up.key, nil)
		cancel(nil)
	}
}

// watchClosed polls the agent's socket, without consuming anything, until
// done: EOF or a reset calls gone. Once the agent has sent more (a
// pipelined message, which the peek then always sees), its going away
// shows as POLLRDHUP with those bytes still queued.
func (ss *session) watchClosed(done <-chan struct{}, gone func()) {
	raw := ss.cc.conn
	if tc, ok := raw.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var b [1]byte
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		var (
			n    int
			rerr error
		)
		if err := rc.Control(func(fd uintptr) {
			n, _, rerr = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		}); err != nil {
			gone()
			return
		}
		switch {
		case rerr == unix.EAGAIN || rerr == unix.EINTR:
			// Still there, nothing sent.
		case rerr != nil || n == 0:
			gone()
			return
		default:
			var hup bool
			rc.Control(func(fd uintptr) {
				fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
				if k, err := unix.Poll(fds, 0); err == nil && k > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0 {
					hup = true
				}
			})
			if hup {
				gone()
				return
			}
		}
	}
}
