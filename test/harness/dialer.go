package harness

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dialEnv makes a test binary act as a tiny client process: tests start
// their own binary inside an agent cgroup with this variable set, since a
// goroutine cannot be moved into a cgroup on its own.
const dialEnv = "INTERLOCK_TEST_DIAL"

// DialResult is what the dialing child saw.
type DialResult struct {
	Remote string `json:"remote"` // getpeername() as the agent sees it
	Local  string `json:"local"`
	// Peer is the socket's real peer in the kernel's socket table, which
	// no hook rewrites: the engine's listener when the connection was
	// redirected, "" when it could not be read.
	Peer  string `json:"peer"`
	Reply string `json:"reply"`
	Err   string `json:"err"`
	PID   int    `json:"pid"`
}

// MaybeDial is called first in TestMain; when the process was started by
// Dial it dials, reports as JSON on stdout and exits.
func MaybeDial() {
	spec := os.Getenv(dialEnv)
	if spec == "" {
		return
	}
	var req struct {
		Network, Addr string
		Payload       []byte
	}
	json.Unmarshal([]byte(spec), &req)
	res := DialResult{PID: os.Getpid()}
	var (
		c   net.Conn
		err error
	)
	switch req.Network {
	case "tcp6-mapped":
		c, err = dialMapped(req.Addr)
	case "tcp4-fastopen":
		c, err = dialFastOpen(req.Addr)
	case "tcp4-io_uring", "tcp4-io_uring-async", "tcp4-io_uring-sqpoll":
		mode := strings.TrimPrefix(strings.TrimPrefix(req.Network, "tcp4-io_uring"), "-")
		if mode == "" {
			mode = "inline"
		}
		c, err = dialIOUring(req.Addr, mode)
	case "udp4-sendto":
		res.Err = sendtoUDP(req.Addr)
		json.NewEncoder(os.Stdout).Encode(res)
		os.Exit(0)
	case "tcp4-late-byte":
		// Raw mode, and one more byte half a second later: bytes the
		// server has not read yet when the client goes away.
		c, err = net.DialTimeout("tcp4", req.Addr, 3*time.Second)
		if err == nil {
			c.Write(req.Payload)
			time.Sleep(500 * time.Millisecond)
			c.Write([]byte{0})
			req.Payload = []byte{} // read until quiet below, send nothing more
		}
	case "raw4-socket", "ping4-socket":
		res.Err = openSocket(req.Network)
		json.NewEncoder(os.Stdout).Encode(res)
		os.Exit(0)
	default:
		c, err = net.DialTimeout(req.Network, req.Addr, 3*time.Second)
	}
	if err != nil {
		res.Err = err.Error()
	} else {
		res.Remote = c.RemoteAddr().String()
		res.Local = c.LocalAddr().String()
		res.Peer = kernelPeer(c)
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if req.Payload != nil {
			// Raw mode: send the bytes, read everything until the peer
			// closes or goes quiet.
			if req.Network != "tcp4-late-byte" {
				c.Write(req.Payload)
			}
			b, _ := io.ReadAll(c)
			res.Reply = string(b)
		} else {
			fmt.Fprintf(c, "ping\n")
			buf := make([]byte, 64)
			n, _ := c.Read(buf)
			res.Reply = string(buf[:n])
		}
		c.Close()
	}
	json.NewEncoder(os.Stdout).Encode(res)
	os.Exit(0)
}

// dialMapped connects an AF_INET6 socket to a v4-mapped address, which
// Go's dialer refuses to do for "tcp6" but any C client happily does.
func dialMapped(addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	fd, err := syscall.Socket(syscall.AF_INET6, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "mapped")
	defer f.Close()
	sa := &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: netip.AddrFrom16(ap.Addr().As16()).As16()}
	if err := syscall.Connect(fd, sa); err != nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp6", Err: os.NewSyscallError("connect", err)}
	}
	return net.FileConn(f)
}

// dialFastOpen opens a TCP connection with sendto(MSG_FASTOPEN) and no
// connect(): an agent trying to slip past the connect hooks. The first
// "ping\n" rides on the SYN.
func dialFastOpen(addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "fastopen")
	defer f.Close()
	sa := &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	if err := syscall.Sendto(fd, []byte("ping\n"), 0x20000000 /* MSG_FASTOPEN */, sa); err != nil {
		return nil, &net.OpError{Op: "sendto", Net: "tcp4", Err: os.NewSyscallError("sendto", err)}
	}
	return net.FileConn(f)
}

// sendtoUDP sends one datagram without connect() and returns the error.
func sendtoUDP(addr string) string {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return err.Error()
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err.Error()
	}
	defer syscall.Close(fd)
	if err := syscall.Sendto(fd, []byte("x"), 0, &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		return "sendto: " + err.Error()
	}
	return ""
}

// openSocket creates (and closes) a socket that needs no connect() or
// sendmsg hook to send: a raw IPv4 socket (root has CAP_NET_RAW), or a ping
// socket in a network namespace of its own where net.ipv4.ping_group_range
// lets every group have one (the systemd default on most hosts). It returns
// the error, "" when the socket was created.
func openSocket(kind string) string {
	typ, proto := syscall.SOCK_RAW, syscall.IPPROTO_ICMP
	if kind == "ping4-socket" {
		typ = syscall.SOCK_DGRAM
		// Namespaces and /proc/sys/net belong to the thread.
		runtime.LockOSThread()
		if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
			return "unshare: " + err.Error()
		}
		// /proc/sys/net is the opening thread's namespace.
		if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 2147483647"), 0); err != nil {
			return "ping_group_range: " + err.Error()
		}
	}
	fd, err := syscall.Socket(syscall.AF_INET, typ|syscall.SOCK_CLOEXEC, proto)
	if err != nil {
		return err.Error()
	}
	syscall.Close(fd)
	return ""
}

// Dial starts this test binary inside cgroupPath to dial addr and returns
// what it saw.
func Dial(t testing.TB, cgroupPath, network, addr string) DialResult {
	t.Helper()
	return DialRaw(t, cgroupPath, network, addr, nil)
}

// DialRaw is Dial sending payload instead of "ping\n" and reading until the
// peer closes (or 3 s pass).
func DialRaw(t testing.TB, cgroupPath, network, addr string, payload []byte) DialResult {
	t.Helper()
	spec, _ := json.Marshal(struct {
		Network, Addr string
		Payload       []byte
	}{network, addr, payload})
	cmd := Command(t, cgroupPath, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), dialEnv+"="+string(spec))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dial helper in %s: %v (%s)", cgroupPath, err, errOutput(err))
	}
	var res DialResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("dial helper output %q: %v", out, err)
	}
	return res
}

func errOutput(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
