package recording

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestRecordEncodeParse(t *testing.T) {
	rec := &Record{V: Version, Seq: 7, Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Host: "h\"ost", Type: TypeStatement,
		Session: "abc", Prev: strings.Repeat("0", 64), Data: json.RawMessage(`{"n":1,"text":"select 1"}`)}
	rec.encode()
	got, err := ParseRecord(rec.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != 7 || got.Host != `h"ost` || got.Session != "abc" || got.Hash != rec.Hash || !got.Time.Equal(rec.Time) {
		t.Errorf("round trip: %+v", got)
	}
	var st Statement
	if err := got.Decode(&st); err != nil || st.Text != "select 1" {
		t.Errorf("data: %+v %v", st, err)
	}
	// Any change of a byte is caught.
	for i := range rec.Raw {
		b := bytes.Clone(rec.Raw)
		b[i] ^= 0x01
		if _, err := ParseRecord(b); err == nil {
			t.Fatalf("flipping byte %d (%q) went unnoticed", i, rec.Raw[i])
		}
	}
}
