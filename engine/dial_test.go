package engine

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/interlockhq/interlock/test/harness"
)

const testMark = 0x494c

func needRoot(t *testing.T) {
	t.Helper()
	harness.Require(t, os.Geteuid() == 0, "upstream dials set SO_MARK, which needs CAP_NET_ADMIN (run as root)")
}

// The dialer connects in its control hook; Go's own connect() must then
// find the socket connected, on both families, with the mark in place
// before the kernel's connect hook ran.
func TestDialerConnectsEagerly(t *testing.T) {
	needRoot(t)
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			ln, err := net.Listen(network, map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network])
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				io.Copy(c, c)
			}()
			c, err := newDialer(testMark, 2*time.Second).Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.RemoteAddr().String(); got != ln.Addr().String() {
				t.Errorf("connected to %s, want %s", got, ln.Addr())
			}
			if mark := sockMark(t, c); mark != testMark {
				t.Errorf("SO_MARK = %#x, want %#x", mark, testMark)
			}
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("echo = %q, %v", buf, err)
			}
		})
	}
}

// A refused connect is reported as Go reports it (callers look for
// ECONNREFUSED), not as a control-hook failure of another kind.
func TestDialerRefused(t *testing.T) {
	needRoot(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = newDialer(testMark, 2*time.Second).Dial("tcp", addr)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial a closed port: %v, want ECONNREFUSED", err)
	}
}

// A handshake that is not complete when the hook's connect() returns is
// left to Go: it waits for it (here: the SYN is dropped until the
// listener's queue has room and is sent again a second later) and still
// honours the dial timeout.
func TestDialerHandshakeInProgress(t *testing.T) {
	needRoot(t)
	ln, addr := fullListener(t)
	start := time.Now()
	_, err := newDialer(testMark, 300*time.Millisecond).Dial("tcp", addr)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("dial while the listener's queue is full: %v, want a timeout", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("dial gave up after %v, before its 300ms timeout", d)
	}

	// The same, but room is made while the dial waits: it completes.
	done := make(chan error, 1)
	go func() {
		c, err := newDialer(testMark, 5*time.Second).Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("dial returned before the listener had room: %v", err)
	default:
	}
	drain(t, ln)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dial after the listener made room: %v", err)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("dial did not complete after the listener made room")
	}
}

// fullListener returns a listening socket (backlog 0) whose accept queue
// is full, so that the kernel drops further SYNs.
func fullListener(t *testing.T) (int, string) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*unix.SockaddrInet4).Port}).String()
	// Backlog 0 holds one connection; a second SYN is dropped. Fill it
	// with plain dials that are never accepted until drain.
	for range 2 {
		c, err := net.DialTimeout("tcp4", addr, 100*time.Millisecond)
		if err != nil {
			break // the queue is full
		}
		t.Cleanup(func() { c.Close() })
	}
	return fd, addr
}

// drain accepts and closes what is queued on the listener fd.
func drain(t *testing.T, fd int) {
	t.Helper()
	for {
		nfd, _, err := unix.Accept4(fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			return
		}
		unix.Close(nfd)
		unix.SetNonblock(fd, true)
	}
}

func sockMark(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var (
		mark int
		serr error
	)
	if err := rc.Control(func(fd uintptr) { mark, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return mark
}

func TestReadProc(t *testing.T) {
	big := make([]byte, 5000)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	path := t.TempDir() + "/big"
	if err := os.WriteFile(path, big, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, "/proc/self/cgroup", "/proc/self/status"} {
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := readProc(p)
		if err != nil {
			t.Fatalf("readProc(%s): %v", p, err)
		}
		g, w := string(got), string(want)
		if p == "/proc/self/status" {
			// It holds changing counters; its first line is stable.
			g, _, _ = strings.Cut(g, "\n")
			w, _, _ = strings.Cut(w, "\n")
		}
		if g != w {
			t.Errorf("readProc(%s) = %d bytes, os.ReadFile %d bytes, contents differ", p, len(got), len(want))
		}
	}
	if _, err := readProc("/proc/0/cgroup"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("readProc of a missing file: %v, want ErrNotExist", err)
	}
}

// Accepted agent connections carry no keepalive timers (see listen).
func TestListenerNoKeepalive(t *testing.T) {
	ln, err := listen("tcp4", "127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	rc, err := a.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var (
		ka   int
		serr error
	)
	rc.Control(func(fd uintptr) { ka, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE) })
	if serr != nil || ka != 0 {
		t.Fatalf("SO_KEEPALIVE on an accepted connection = %d, %v; want 0", ka, serr)
	}
}
