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
	"sync"

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

	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		errs[0] = pipe(s, engine.DirClientToTarget, up, client)
	}()
	go func() {
		defer wg.Done()
		errs[1] = pipe(s, engine.DirTargetToClient, client, up)
	}()
	wg.Wait()
	return errors.Join(errs...)
}

// pipe copies src to dst until EOF, then half-closes dst so the other
// direction can finish (the protocol decides when the session ends).
func pipe(s *engine.Session, dir string, dst, src net.Conn) error {
	for {
		n, err := io.CopyN(dst, src, chunk)
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
