package recording

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
)

// failAppends fails the next n appends of the store it wraps.
type failAppends struct {
	*Files
	n atomic.Int32
}

func (f *failAppends) Append(ctx context.Context, recs []*Record) error {
	if f.n.Add(-1) >= 0 {
		return errors.New("disk on fire")
	}
	return f.Files.Append(ctx, recs)
}

// TestConnectedRecordedBeforeFirstStatement: the connected record is queued
// without waiting; when its write fails, the session's first statement
// writes it again before its own record, or is refused if that fails too.
func TestConnectedRecordedBeforeFirstStatement(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		failures  int32
		wantError bool
	}{
		{"written at once", 0, false},
		{"first write fails, written again", 1, false},
		{"both writes fail, statement refused", 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files, err := OpenFiles(FilesConfig{Dir: t.TempDir(), Log: quietLog()})
			if err != nil {
				t.Fatal(err)
			}
			st := &failAppends{Files: files}
			r := openRecorder(t, st, nil)
			s := testSession("a")
			if err := r.SessionStarted(s); err != nil {
				t.Fatal(err)
			}
			l, err := r.Session(s)
			if err != nil {
				t.Fatal(err)
			}
			st.n.Store(tc.failures)
			l.Connected(&Connected{Database: "orders", DBUser: "app", Auth: "inject"})
			err = l.Statement(ctx, &Statement{Text: "select 1", Action: "read", Verdict: "allow", Forwarded: true}, false)
			if (err != nil) != tc.wantError {
				t.Fatalf("Statement = %v, want error %v", err, tc.wantError)
			}
			r.Close()
			var types []Type
			ro, err := OpenFilesReadOnly(files.cfg.Dir)
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close()
			if err := ro.Scan(ctx, Filter{}, func(rec *Record, _ string, err error) error {
				if err != nil {
					return err
				}
				if rec.Type != TypeCheckpoint {
					types = append(types, rec.Type)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			want := []Type{TypeSessionStart, TypeConnected, TypeStatement}
			if tc.wantError {
				want = []Type{TypeSessionStart}
			}
			if len(types) != len(want) {
				t.Fatalf("records %v, want %v", types, want)
			}
			for i := range want {
				if types[i] != want[i] {
					t.Fatalf("records %v, want %v", types, want)
				}
			}
		})
	}
}
