package recording

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"testing"

	"github.com/interlockhq/interlock/engine"
)

var testKey = func() ed25519.PrivateKey {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	return k
}()

func testPub() ed25519.PublicKey { return testKey.Public().(ed25519.PublicKey) }

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

func openRecorder(t testing.TB, st Store, mod func(*Config)) *Recorder {
	t.Helper()
	cfg := Config{Store: st, Key: testKey, Host: "host-a", Log: quietLog()}
	if mod != nil {
		mod(&cfg)
	}
	r, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func testSession(agent string) *engine.Session {
	return engine.NewSession(engine.Identity{
		Agent: agent, Roles: []string{"writer"}, PID: 42, Target: "db", Protocol: "postgres",
		OrigDst: netip.MustParseAddrPort("10.0.0.5:5432"), Client: netip.MustParseAddrPort("10.0.0.9:40000"),
	}, quietLog())
}

// writeSessions records n sessions of k statements each (with results)
// and returns their ids.
func writeSessions(t testing.TB, r *Recorder, n, k int) []string {
	t.Helper()
	ctx := context.Background()
	var ids []string
	for i := range n {
		s := testSession(fmt.Sprintf("agent-%d", i%2))
		if err := r.SessionStarted(s); err != nil {
			t.Fatal(err)
		}
		l, err := r.Session(s)
		if err != nil {
			t.Fatal(err)
		}
		for j := range k {
			st := &Statement{Path: "simple", Text: fmt.Sprintf("insert into t values ($1) -- %d/%d", i, j), Redaction: RedactParameters,
				Action: "insert", Objects: []Object{{Kind: "table", Name: "public.t", Action: "insert"}},
				Verdict: "allow", Rule: "write", Forwarded: j%5 != 4}
			if !st.Forwarded {
				st.Verdict, st.Rule = "block", "no-t"
			}
			if err := l.Statement(ctx, st, true); err != nil {
				t.Fatal(err)
			}
			if st.Forwarded {
				l.Completed(&Result{Tag: "INSERT 0 1"})
			} else {
				l.Failed("42501", "Interlock: blocked")
			}
		}
		r.SessionEnded(s, nil)
		ids = append(ids, s.UID)
	}
	return ids
}

func mustVerify(t testing.TB, st Store) *VerifyReport {
	t.Helper()
	rep, err := Verify(context.Background(), st, VerifyOptions{Host: "host-a", PublicKey: testPub()})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return rep
}
