package postgres

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

func encode(msgs ...interface{ Encode([]byte) ([]byte, error) }) []byte {
	var b []byte
	for _, m := range msgs {
		b, _ = m.Encode(b)
	}
	return b
}

// FuzzClientStream feeds arbitrary bytes as the agent's side of an
// established session: no panic, no hang, whatever arrives.
func FuzzClientStream(f *testing.F) {
	f.Add(encode(&pgproto3.Query{String: "select 1"}))
	f.Add(encode(&pgproto3.Query{String: "drop table x; select 1"}))
	f.Add(encode(&pgproto3.Parse{Name: "a", Query: "select $1"}, &pgproto3.Bind{PreparedStatement: "a", Parameters: [][]byte{[]byte("1")}}, &pgproto3.Execute{}, &pgproto3.Sync{}))
	f.Add(encode(&pgproto3.CopyData{Data: []byte("x\n")}, &pgproto3.CopyDone{}))
	f.Add(encode(&pgproto3.FunctionCall{Function: 1}))
	f.Add([]byte{'Q', 0, 0, 0, 3})
	f.Add([]byte{'Q', 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{'P', 0, 0, 0, 5, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		ps := newPipeSession(t)
		ps.feed(t, ps.agent, data, "client")
	})
}

// feed writes data from one end of ps (the agent's or the server's) and
// closes it, discarding what the session sends to either, and fails if the
// session has not ended 5 s later.
func (ps *pipeSession) feed(t *testing.T, end net.Conn, data []byte, side string) {
	go io.Copy(io.Discard, ps.server)
	go io.Copy(io.Discard, ps.agent)
	go func() {
		end.Write(data)
		end.Close()
	}()
	select {
	case err := <-ps.done:
		ps.done <- err
	case <-time.After(5 * time.Second):
		t.Fatalf("session hangs on %s input", side)
	}
}

// FuzzServerStream feeds arbitrary bytes as the server's answers.
func FuzzServerStream(f *testing.F) {
	f.Add(encode(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'}))
	f.Add(encode(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: `syntax error at or near "interlock_blocked_x_1"`}))
	f.Add(encode(&pgproto3.DataRow{Values: [][]byte{[]byte("a"), nil}}))
	f.Add([]byte{'E', 0, 0, 0, 5, 'M'})
	f.Add([]byte{'Z', 0, 0, 0, 4})
	f.Add(binary.BigEndian.AppendUint32([]byte{'D'}, 1<<31))
	f.Fuzz(func(t *testing.T, data []byte) {
		ps := newPipeSession(t)
		ps.feed(t, ps.server, data, "server")
	})
}
