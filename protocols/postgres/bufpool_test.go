package postgres

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// A recycled buffer must carry nothing of the session that used it before:
// neither bytes read ahead from its agent nor bytes not yet flushed to it.
func TestBufPoolRecycledBuffersCarryNothingOver(t *testing.T) {
	var p bufPool
	for _, size := range []int{clientBufSize, upstreamBufSize} {
		r := p.reader(strings.NewReader("first session: SELECT secret"), size)
		if b, _ := r.ReadByte(); b != 'f' {
			t.Fatalf("read %q", b)
		}
		p.putReader(r) // with read-ahead still buffered
		r2 := p.reader(strings.NewReader("second"), size)
		if r2 != r {
			t.Skip("the pool dropped the buffer (a GC ran); nothing to check")
		}
		got, _ := io.ReadAll(r2)
		if string(got) != "second" {
			t.Errorf("size %d: recycled reader read %q, want only the new session's bytes", size, got)
		}

		var first bytes.Buffer
		w := p.writer(&first, size)
		w.WriteString("unflushed row of the first session")
		p.putWriter(w)
		var second bytes.Buffer
		w2 := p.writer(&second, size)
		w2.WriteString("second")
		w2.Flush()
		if second.String() != "second" || first.Len() != 0 {
			t.Errorf("size %d: recycled writer wrote %q to the new session and %q to the old", size, second.String(), first.String())
		}
	}
}

// After release, a write to the agent's connection fails instead of
// landing in a buffer another session may be using.
func TestClientConnReleaseForgetsItsWriter(t *testing.T) {
	var p bufPool
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cc := newClientConn(a, 1<<20, &p)
	cc.release(&p)
	if err := cc.w.send(&pgproto3.ReadyForQuery{TxStatus: 'I'}); !errors.Is(err, errReleased) {
		t.Errorf("send after release = %v, want errReleased", err)
	}
}
