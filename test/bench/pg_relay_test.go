package bench

import (
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pgDelayRelay stands in for a network between a client and a database on
// another host (this kernel has no netem): a TCP relay that forwards every
// chunk it reads after a fixed delay, per direction, in order. Each
// direction is a time-stamped queue: a reader stamps chunks as they arrive,
// a writer sends each one when its time has come, so the delay adds to the
// round trip without limiting bandwidth or pipelining.
//
// Go's timers wake up with millisecond granularity when the process is
// otherwise idle (a 0.5 ms sleep takes about 1.1 ms), so the writers wait
// on a timerfd through the network poller instead, which is precise to
// tens of microseconds and blocks no thread.
type pgDelayRelay struct {
	ln    net.Listener
	to    string
	delay time.Duration

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// pgStartDelayRelay listens on 127.0.0.1 and forwards each connection to
// upstream with delay added in each direction. It stops at cleanup.
func pgStartDelayRelay(tb testing.TB, upstream string, delay time.Duration) *pgDelayRelay {
	tb.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r := &pgDelayRelay{ln: ln, to: upstream, delay: delay, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.accept()
	tb.Cleanup(r.close)
	return r
}

// Addr is the relay's listening address.
func (r *pgDelayRelay) Addr() *net.TCPAddr { return r.ln.Addr().(*net.TCPAddr) }

func (r *pgDelayRelay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.serve(c)
		}()
	}
}

func (r *pgDelayRelay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		c.Close()
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *pgDelayRelay) untrack(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	c.Close()
}

func (r *pgDelayRelay) serve(client net.Conn) {
	if !r.track(client) {
		return
	}
	defer r.untrack(client)
	server, err := net.DialTimeout("tcp", r.to, 5*time.Second)
	if err != nil {
		return
	}
	if !r.track(server) {
		return
	}
	defer r.untrack(server)
	for _, c := range []net.Conn{client, server} {
		c.(*net.TCPConn).SetNoDelay(true)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.pipe(server, client) }()
	go func() { defer wg.Done(); r.pipe(client, server) }()
	wg.Wait()
}

// pgChunk is one read, due for writing at due (nil data: end of stream).
type pgChunk struct {
	data []byte
	due  time.Time
}

// pipe copies src to dst through a delay line and half-closes dst at the
// end of src. An error on either side ends both directions.
func (r *pgDelayRelay) pipe(dst, src net.Conn) {
	q := make(chan pgChunk, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		timer, err := pgNewTimer()
		if err != nil {
			dst.Close()
			src.Close()
			for range q {
			}
			return
		}
		defer timer.Close()
		for c := range q {
			if err == nil {
				if wait := time.Until(c.due); wait > 10*time.Microsecond {
					err = timer.Sleep(wait)
				}
			}
			if err == nil && c.data == nil {
				err = dst.(*net.TCPConn).CloseWrite()
			} else if err == nil {
				_, err = dst.Write(c.data)
			}
			if err != nil {
				dst.Close()
				src.Close()
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			q <- pgChunk{data: slices.Clone(buf[:n]), due: time.Now().Add(r.delay)}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				q <- pgChunk{due: time.Now().Add(r.delay)}
			} else {
				dst.Close()
			}
			break
		}
	}
	close(q)
	<-done
}

func (r *pgDelayRelay) close() {
	r.ln.Close()
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// pgTimer is a timerfd read through Go's network poller.
type pgTimer struct {
	fd int
	f  *os.File
}

func pgNewTimer() (*pgTimer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("timerfd_create", err)
	}
	// A non-blocking descriptor is registered with the poller; the raw fd
	// stays valid for as long as f is open (never call f.Fd, which would
	// make it blocking).
	return &pgTimer{fd: fd, f: os.NewFile(uintptr(fd), "timerfd")}, nil
}

// Sleep blocks the calling goroutine for d.
func (t *pgTimer) Sleep(d time.Duration) error {
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(d.Nanoseconds())}
	if err := unix.TimerfdSettime(t.fd, 0, &spec, nil); err != nil {
		return os.NewSyscallError("timerfd_settime", err)
	}
	var b [8]byte
	_, err := t.f.Read(b[:])
	return err
}

func (t *pgTimer) Close() error { return t.f.Close() }

// TestPgDelayRelay checks the relay the network benchmark depends on: a
// round trip through it takes the delay twice (and not Go's millisecond
// timer granularity), and a large stream arrives intact and in order.
func TestPgDelayRelay(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	const delay = 500 * time.Microsecond
	r := pgStartDelayRelay(t, ln.Addr().String(), delay)

	c, err := net.Dial("tcp4", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	var rtts []time.Duration
	b := []byte{0}
	for i := 0; i < 300; i++ {
		start := time.Now()
		b[0] = byte(i)
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		if b[0] != byte(i) {
			t.Fatalf("echo %d came back as %d", i, b[0])
		}
		rtts = append(rtts, time.Since(start))
	}
	slices.Sort(rtts)
	p10, p50 := rtts[len(rtts)/10], rtts[len(rtts)/2]
	t.Logf("round trip through the relay: min %v p10 %v p50 %v max %v", rtts[0], p10, p50, rtts[len(rtts)-1])
	if rtts[0] < 2*delay {
		t.Errorf("fastest round trip %v, want at least %v", rtts[0], 2*delay)
	}
	// Go's timers would make it about 2.2 ms; p10 stays put when other
	// work on the machine delays some wake-ups.
	if p10 > 2*delay+500*time.Microsecond {
		t.Errorf("p10 round trip %v, want close to %v", p10, 2*delay)
	}

	// 8 MiB of a counting pattern, written while it echoes back.
	const size = 8 << 20
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i * 7 / 5)
	}
	go c.Write(want)
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatal("stream through the relay arrived altered or out of order")
	}
}
