// Package tcp is the opaque protocol: it relays bytes between the agent and
// the target without looking at them. Targets with `protocol: tcp` get
// identity, egress control, metrics and session logs, but no per-request
// policy. Splice(2) moves the bytes when both ends are TCP sockets.
package tcp

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/interlockhq/interlock/engine"
)

// chunk bounds how many bytes are relayed between metric updates; large
// enough that splice(2) still does the work.
const chunk = 1 << 20

// Handler relays one session.
type Handler struct{}

// Serve implements engine.Handler.
func (Handler) Serve(ctx context.Context, s *engine.Session, client net.Conn) error {
	up, err := s.DialUpstream(ctx)
	if err != nil {
		return err
	}
	defer up.Close()
	stop := context.AfterFunc(ctx, func() { client.Close(); up.Close() })
	defer stop()

	// The agent's direction runs on this goroutine: one goroutine (and
	// its stack) fewer per session, and one wake-up fewer on its connect.
	done := make(chan error, 1)
	go func() { done <- pipe(s, engine.DirTargetToClient, client, up) }()
	err = pipe(s, engine.DirClientToTarget, up, client)
	return errors.Join(err, <-done)
}

// pipe copies src to dst until EOF, then half-closes dst so the other
// direction can finish (the protocol decides when the session ends).
//
// It waits for data before each copy and copies only what has arrived:
// splice(2) holds a pipe (two file descriptors) for as long as a copy
// waits, so an idle session would otherwise cost six descriptors, not two.
func pipe(s *engine.Session, dir string, dst, src net.Conn) error {
	for {
		avail, err := waitReadable(src)
		if err != nil {
			dst.Close()
			src.Close()
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if avail == 0 {
			break // EOF
		}
		n, err := io.CopyN(dst, src, int64(min(avail, chunk)))
		s.AddBytes(dir, n)
		if err == io.EOF {
			break
		}
		if err != nil {
			// A reset or a closed socket ends the whole session: the other
			// direction would otherwise wait for an EOF that never comes.
			dst.Close()
			src.Close()
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// waitReadable blocks (in the netpoller, holding no pipe) until c has data
// or EOF, and returns how many bytes are queued; 0 means EOF. Connections
// that are not sockets report chunk and let the copy wait.
func waitReadable(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return chunk, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		avail int
		serr  error
		peek  [1]byte
	)
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := unix.Recvfrom(int(fd), peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err == unix.EAGAIN || err == unix.EINTR {
			return false // not yet: park in the netpoller
		}
		if err != nil {
			serr = err
			return true
		}
		if n == 0 {
			avail = 0 // orderly shutdown by the peer
			return true
		}
		avail, serr = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		if serr == nil && avail < 1 {
			avail = 1
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	return avail, serr
}
