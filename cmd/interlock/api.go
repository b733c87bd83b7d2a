package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/interlockhq/interlock/engine"
	"github.com/interlockhq/interlock/engine/policy"
	"github.com/interlockhq/interlock/redirect"
)

// statusReport is what `interlock status` prints; the daemon serves it on
// its control socket.
type statusReport struct {
	Running  bool                      `json:"running"`
	Version  string                    `json:"version"`
	Cgroup   string                    `json:"cgroup,omitempty"`
	Engine   []string                  `json:"engine,omitempty"`
	Policy   string                    `json:"policy,omitempty"`
	Kernel   *redirect.Status          `json:"kernel,omitempty"`
	Labels   []redirect.LabelledCgroup `json:"labelled_cgroups"`
	Targets  []targetStatus            `json:"targets"`
	Sessions []engine.SessionInfo      `json:"sessions"`
}

type targetStatus struct {
	Name      string   `json:"name"`
	Protocol  string   `json:"protocol"`
	Address   string   `json:"address"`
	Addresses []string `json:"resolved"`
}

// controlAPI serves the daemon's local control socket. Only root may
// connect (the socket is 0600 in a 0700 directory).
type controlAPI struct {
	srv *http.Server
	ln  net.Listener
}

func startAPI(socket, policyPath string, es *engine.Server, ks *kernelSync, r *redirect.Redirector, store *policy.Store, log *slog.Logger, appr *approvalsService) (*controlAPI, error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		return nil, fmt.Errorf("api.socket: create directory: %w", err)
	}
	// A stale socket from a killed daemon: remove it, but never steal a
	// live daemon's socket.
	if c, err := net.DialTimeout("unix", socket, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("api.socket %s: another interlock daemon is running", socket)
	}
	os.Remove(socket)
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("api.socket: %w", err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("api.socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		st, labels := ks.snapshot()
		p4, p6 := es.Ports()
		rep := statusReport{
			Running:  true,
			Version:  version,
			Cgroup:   r.Config().CgroupPath,
			Engine:   []string{fmt.Sprintf("127.0.0.1:%d", p4), fmt.Sprintf("[::1]:%d", p6)},
			Policy:   policyPath,
			Labels:   labels,
			Sessions: es.Sessions(),
		}
		if ks, err := redirect.ReadStatus(r.Config().PinDir); err == nil {
			rep.Kernel = &ks
		}
		byName := map[string][]string{}
		for ap, name := range st.Targets {
			byName[name] = append(byName[name], ap.String())
		}
		for _, t := range store.Current().Targets() {
			addrs := byName[t.Name]
			sort.Strings(addrs)
			rep.Targets = append(rep.Targets, targetStatus{Name: t.Name, Protocol: t.Protocol, Address: t.Address, Addresses: addrs})
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(rep)
	})
	var handler http.Handler = mux
	if appr != nil {
		mux.Handle("/v1/approvals", appr.local)
		mux.Handle("/v1/approvals/", appr.local)
		if appr.gid >= 0 {
			if err := shareSocket(socket, appr.gid); err != nil {
				ln.Close()
				return nil, err
			}
			handler = approvalsOnlyForGroup(mux)
		}
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, ConnContext: withPeerCred}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("control API stopped", "error", err)
		}
	}()
	return &controlAPI{srv: srv, ln: ln}, nil
}

func (a *controlAPI) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return a.srv.Shutdown(ctx)
}

// apiClient talks to the daemon's control socket.
func apiClient(socket string) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}},
	}
}

// fetchStatus asks the running daemon; ok is false when none answers.
func fetchStatus(socket string) (statusReport, bool) {
	var rep statusReport
	resp, err := apiClient(socket).Get("http://interlock/v1/status")
	if err != nil {
		return rep, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&rep) != nil {
		return rep, false
	}
	return rep, true
}

// The approvals routes of the control socket authenticate their caller by
// its peer credentials (see localAuthenticator in approvals.go).

type peerCredKey struct{}

type peerCred struct {
	pid, uid, gid uint32
}

// withPeerCred puts the connecting process's SO_PEERCRED in the context
// of every request on the connection.
func withPeerCred(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	var serr error
	raw.Control(func(fd uintptr) { cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if serr != nil || cred == nil {
		return ctx
	}
	return context.WithValue(ctx, peerCredKey{}, &peerCred{pid: uint32(cred.Pid), uid: cred.Uid, gid: cred.Gid})
}

// inGroup reports whether the peer's primary or supplementary groups
// include gid (from /proc: SO_PEERCRED carries the primary group only).
func (p *peerCred) inGroup(gid int) bool {
	if int(p.gid) == gid {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			for _, g := range strings.Fields(rest) {
				if g == strconv.Itoa(gid) {
					return true
				}
			}
		}
	}
	return false
}

// shareSocket lets approvals.local_group reach the socket: group
// read/write on it, and group search on its directory.
func shareSocket(socket string, gid int) error {
	dir := filepath.Dir(socket)
	for _, step := range []func() error{
		func() error { return os.Chown(dir, 0, gid) },
		func() error { return os.Chmod(dir, 0o750) },
		func() error { return os.Chown(socket, 0, gid) },
		func() error { return os.Chmod(socket, 0o660) },
	} {
		if err := step(); err != nil {
			return fmt.Errorf("approvals.local_group: share the control socket: %w", err)
		}
	}
	return nil
}

// approvalsOnlyForGroup keeps non-root peers (approvals.local_group) to
// the approvals routes.
func approvalsOnlyForGroup(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cred, ok := r.Context().Value(peerCredKey{}).(*peerCred)
		if !ok || (cred.uid != 0 && r.URL.Path != "/v1/approvals" && !strings.HasPrefix(r.URL.Path, "/v1/approvals/")) {
			http.Error(w, "root only", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}
