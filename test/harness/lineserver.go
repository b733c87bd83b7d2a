package harness

import (
	"bufio"
	"net"
	"testing"
)

// LineServer listens on addr and answers every connection's first line
// with reply, then closes it: a stand-in target or engine whose answer
// tells the dialer where it landed. It stops when the test ends.
func LineServer(t testing.TB, network, addr, reply string) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go ServeLine(ln, reply)
	return ln.(*net.TCPListener)
}

// ServeLine answers every connection ln accepts as LineServer does, until
// ln is closed.
func ServeLine(ln net.Listener, reply string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			bufio.NewReader(c).ReadString('\n')
			c.Write([]byte(reply))
		}()
	}
}
