package postgres

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// FuzzMaskedServerStream feeds arbitrary bytes as the server's answers to a
// masked simple Query, a masked COPY and a masked extended batch whose
// Describe the relay injected: no panic, no hang.
func FuzzMaskedServerStream(f *testing.F) {
	row := customerRow()
	f.Add(encode(&pgproto3.RowDescription{Fields: customerFields}, row, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'}))
	f.Add(encode(&pgproto3.RowDescription{Fields: customerFields}, &pgproto3.DataRow{Values: [][]byte{[]byte("a")}}))
	f.Add(encode(&pgproto3.ReadyForQuery{TxStatus: 'I'},
		&pgproto3.CopyOutResponse{ColumnFormatCodes: []uint16{0, 0}}, &pgproto3.CopyData{Data: []byte("1\ta@b.co\n")}, &pgproto3.CopyData{Data: []byte("1\n")}, &pgproto3.CopyDone{},
		&pgproto3.CommandComplete{CommandTag: []byte("COPY 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'}))
	f.Add(encode(&pgproto3.ReadyForQuery{TxStatus: 'I'}, &pgproto3.ReadyForQuery{TxStatus: 'I'},
		&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.RowDescription{Fields: binaryFields(customerFields)}, row,
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'}))
	f.Add(encode(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "23505", Detail: "Key (email)=(a@b.co) already exists."},
		&pgproto3.NotificationResponse{Channel: "c", Payload: `{"email":"a@b.co"}`}, &pgproto3.NoticeResponse{Message: "a@b.co"},
		&pgproto3.ReadyForQuery{TxStatus: 'I'}, &pgproto3.ParseComplete{}, &pgproto3.ErrorResponse{Message: "x"}, &pgproto3.ReadyForQuery{TxStatus: 'I'}))
	f.Add([]byte{})
	f.Add([]byte("Z\x00\x00\x00\x05I"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ps := newMaskPipeSession(t, &MaskingConfig{})
		ps.send(t,
			&pgproto3.Query{String: "select * from customers"},
			&pgproto3.Query{String: "copy customers (id, email) to stdout"},
			&pgproto3.Parse{Query: "select * from customers"}, &pgproto3.Bind{ResultFormatCodes: []int16{1}}, &pgproto3.Execute{}, &pgproto3.Sync{})
		for range 7 { // the two queries, Parse, Bind, the injected Describe, Execute, Sync
			ps.serverReceive(t)
		}
		ps.feed(t, ps.server, data, "server")
	})
}
