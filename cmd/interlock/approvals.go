package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/interlockhq/interlock/engine/approvals"
	"github.com/interlockhq/interlock/engine/policy"
	"github.com/interlockhq/interlock/engine/recording"
	"github.com/interlockhq/interlock/protocols/postgres"
	"github.com/interlockhq/interlock/redirect"
)

// approvalsService is the daemon's approval stage: the manager, its
// observer in the PostgreSQL handler, the approver API listener and the
// routes on the control socket.
type approvalsService struct {
	m        *approvals.Manager
	obs      *postgres.Approvals
	store    approvals.Store
	webhooks *approvals.Webhooks
	ln       net.Listener // approver API; nil without approvals.listen
	srv      *http.Server
	local    http.Handler // the approvals routes of the control socket
	gid      int          // approvals.local_group, -1 when unset
	log      *slog.Logger
}

// startApprovals builds the approval stage (nil when approvals.enabled is
// false) and opens the approver API's listener; serve starts serving it.
func startApprovals(ctx context.Context, cfg *Config, rec *recording.Recorder, pol *policy.Store, mount string, reg prometheus.Registerer, log *slog.Logger) (*approvalsService, error) {
	ac := cfg.Approvals
	if !ac.Enabled {
		log.Warn("approvals.enabled is false: statements that need an approval are refused")
		return nil, nil
	}
	a := &approvalsService{gid: -1, log: log}
	metrics := approvals.NewMetrics(reg)
	if ac.Store == "postgres" {
		st, err := approvals.OpenPostgres(ctx, ac.DSN, 5*time.Second, log)
		if err != nil {
			return nil, fmt.Errorf("approvals.dsn: %w", err)
		}
		a.store = st
	} else {
		a.store = approvals.NewMemory()
	}
	mcfg := approvals.Config{Store: a.store, Metrics: metrics, Log: log}
	if rec != nil {
		mcfg.Recorder = approvals.RecordingEvents{R: rec}
	}
	if len(ac.Webhooks) > 0 {
		hooks := make([]approvals.Webhook, len(ac.Webhooks))
		for i, w := range ac.Webhooks {
			hooks[i] = approvals.Webhook{URL: w.URL, Format: w.Format}
		}
		command := "interlock approvals"
		if ac.Listen != "" {
			scheme := "http"
			if ac.TLSCert != "" {
				scheme = "https"
			}
			command += " --api " + scheme + "://" + ac.Listen
		}
		a.webhooks = approvals.NewWebhooks(approvals.WebhookConfig{Hooks: hooks, Command: command, Metrics: metrics, Log: log})
		mcfg.Notifier = a.webhooks
	}
	m, err := approvals.New(mcfg)
	if err != nil {
		a.Close()
		return nil, err
	}
	a.m = m
	a.obs = postgres.NewApprovals(m, cfg.Recording.Redaction, pol.Current)
	a.local = approvals.Handler(m, &localAuthenticator{mount: mount, pol: pol.Current, gid: -1}, log)
	if ac.LocalGroup != "" {
		g, err := user.LookupGroup(ac.LocalGroup)
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("approvals.local_group: %w", err)
		}
		a.gid, _ = strconv.Atoi(g.Gid)
		a.local = approvals.Handler(m, &localAuthenticator{mount: mount, pol: pol.Current, gid: a.gid}, log)
	}
	if ac.Listen != "" {
		var client *http.Client
		if ac.OIDC.CAFile != "" {
			pem, err := os.ReadFile(ac.OIDC.CAFile)
			if err != nil {
				a.Close()
				return nil, fmt.Errorf("approvals.oidc.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				a.Close()
				return nil, fmt.Errorf("approvals.oidc.ca_file %s: no PEM certificates", ac.OIDC.CAFile)
			}
			client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		}
		var roleMap map[string][]string
		if len(ac.OIDC.RoleMap) > 0 {
			roleMap = map[string][]string{}
			for _, rm := range ac.OIDC.RoleMap {
				roleMap[rm.Value] = append(roleMap[rm.Value], rm.Roles...)
			}
		}
		auth, err := approvals.NewOIDC(approvals.OIDCConfig{Issuer: ac.OIDC.Issuer, ClientID: ac.OIDC.ClientID, RolesClaim: ac.OIDC.RolesClaim, RoleMap: roleMap, Client: client})
		if err != nil {
			a.Close()
			return nil, err
		}
		if a.ln, err = net.Listen("tcp", ac.Listen); err != nil {
			a.Close()
			return nil, fmt.Errorf("approvals.listen: %w", err)
		}
		a.srv = &http.Server{Handler: approvals.Handler(m, auth, log), ReadHeaderTimeout: 5 * time.Second}
		if ac.TLSCert != "" {
			cert, err := tls.LoadX509KeyPair(ac.TLSCert, ac.TLSKey)
			if err != nil {
				a.Close()
				return nil, fmt.Errorf("approvals.tls_cert: %w", err)
			}
			a.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
	}
	return a, nil
}

// chain puts the approval stage after prev (the recording) in the
// PostgreSQL handler's observers.
func (a *approvalsService) chain(prev postgres.Observer) postgres.Observer {
	if prev == nil {
		return a.obs
	}
	return postgres.Observers{prev, a.obs}
}

// ports are the approver API's ports, which the kernel denies to agents.
func (a *approvalsService) ports() []uint16 {
	if a.ln == nil {
		return nil
	}
	return []uint16{uint16(a.ln.Addr().(*net.TCPAddr).Port)}
}

// serve starts the approver API (once the kernel keeps agents off it).
func (a *approvalsService) serve() {
	if a.srv == nil {
		return
	}
	go func() {
		var err error
		if a.srv.TLSConfig != nil {
			err = a.srv.ServeTLS(a.ln, "", "")
		} else {
			err = a.srv.Serve(a.ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("approver API stopped", "error", err)
		}
	}()
	a.log.Info("approver API listening", "addr", a.ln.Addr().String(), "tls", a.srv.TLSConfig != nil)
}

// Close stops the API, the webhooks and the store.
func (a *approvalsService) Close() {
	if a.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		a.srv.Shutdown(ctx)
		cancel()
	} else if a.ln != nil {
		a.ln.Close()
	}
	if a.webhooks != nil {
		a.webhooks.Close()
	}
	if a.store != nil {
		a.store.Close()
	}
}

// localAuthenticator authenticates the control socket's peers by their
// credentials (SO_PEERCRED): root, or a member of approvals.local_group,
// and never a process inside an agent cgroup. Local operators hold every
// approver role.
type localAuthenticator struct {
	mount string
	pol   func() *policy.Policy
	gid   int
}

// Authenticate implements approvals.Authenticator.
func (l *localAuthenticator) Authenticate(r *http.Request) (approvals.Approver, error) {
	cred, ok := r.Context().Value(peerCredKey{}).(*peerCred)
	if !ok {
		return approvals.Approver{}, fmt.Errorf("%w: no peer credentials", approvals.ErrUnauthenticated)
	}
	if cred.uid != 0 && (l.gid < 0 || !cred.inGroup(l.gid)) {
		return approvals.Approver{}, fmt.Errorf("%w: uid %d is neither root nor in approvals.local_group", approvals.ErrForbidden, cred.uid)
	}
	if agent := l.agentOf(int(cred.pid)); agent != "" {
		return approvals.Approver{}, fmt.Errorf("%w: the caller (pid %d) runs in a cgroup of agent %q", approvals.ErrSelfApproval, cred.pid, agent)
	}
	name := strconv.Itoa(int(cred.uid))
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	return approvals.Approver{Subject: "local:" + name, Name: "local:" + name, Roles: []string{approvals.AnyRole}}, nil
}

// agentOf names the agent whose cgroup (labelled, or listed in the
// policy) holds pid, "" for none. A process it cannot place counts as an
// agent: fail closed.
func (l *localAuthenticator) agentOf(pid int) string {
	rel, err := redirect.CgroupOf(pid)
	if err != nil {
		return "unknown (cgroup unreadable)"
	}
	if a := labelledAncestor(l.mount, rel); a != "" {
		return a
	}
	for _, ag := range l.pol().Agents() {
		for _, c := range ag.Cgroups {
			if rel == c || strings.HasPrefix(rel, strings.TrimSuffix(c, "/")+"/") {
				return ag.Name
			}
		}
	}
	return ""
}

// ---- CLI ----

type approvalsClient struct {
	base   string
	http   *http.Client
	token  string
	output string
}

func newApprovalsCmd(load func() (*Config, error)) *cobra.Command {
	var (
		api, tokenFile, caFile string
		c                      = &approvalsClient{}
	)
	cmd := &cobra.Command{
		Use:   "approvals",
		Short: "List, show, approve and deny statements held for a human approval",
		Long: `Approvals talks to the daemon's control socket (root, or approvals.local_group) or, with
--api, to an approver API with an OIDC ID token from --token-file or INTERLOCK_TOKEN. An
approver may decide only requests whose rule names one of their approver roles; the
requesting agent never can.`,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if api == "" {
				cfg, err := load()
				if err != nil {
					return err
				}
				c.base, c.http = "http://interlock", apiClient(cfg.API.Socket)
				return nil
			}
			c.base = strings.TrimSuffix(api, "/")
			tr := http.DefaultTransport.(*http.Transport).Clone()
			if caFile != "" {
				pem, err := os.ReadFile(caFile)
				if err != nil {
					return fmt.Errorf("--ca-file: %w", err)
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return fmt.Errorf("--ca-file %s: no PEM certificates", caFile)
				}
				tr.TLSClientConfig = &tls.Config{RootCAs: pool}
			}
			c.http = &http.Client{Timeout: 10 * time.Second, Transport: tr}
			c.token = os.Getenv("INTERLOCK_TOKEN")
			if tokenFile != "" {
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return fmt.Errorf("--token-file: %w", err)
				}
				c.token = strings.TrimSpace(string(b))
			}
			if c.token == "" {
				return errors.New("--api needs an OIDC ID token: --token-file or INTERLOCK_TOKEN")
			}
			return nil
		},
	}
	cmd.PersistentFlags().StringVar(&api, "api", "", "approver API URL (e.g. https://host:9470); default: the local control socket")
	cmd.PersistentFlags().StringVar(&tokenFile, "token-file", "", "file holding an OIDC ID token (default: $INTERLOCK_TOKEN)")
	cmd.PersistentFlags().StringVar(&caFile, "ca-file", "", "CA bundle for an approver API with a private certificate")
	cmd.PersistentFlags().StringVarP(&c.output, "output", "o", "text", "output format: text or json")

	var reason, digest string
	approve := &cobra.Command{
		Use: "approve ID", Short: "Approve a held statement: it runs at once", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.decide(cmd.OutOrStdout(), args[0], true, reason, digest)
		},
	}
	approve.Flags().StringVar(&reason, "reason", "", "why (recorded)")
	approve.Flags().StringVar(&digest, "digest", "", "refuse unless the request's statement digest is this (from show)")
	deny := &cobra.Command{
		Use: "deny ID --reason TEXT", Short: "Deny a held statement: the agent gets the reason", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.decide(cmd.OutOrStdout(), args[0], false, reason, "")
		},
	}
	deny.Flags().StringVar(&reason, "reason", "", "why (required; the agent sees it)")
	deny.MarkFlagRequired("reason")
	cmd.AddCommand(
		&cobra.Command{Use: "list", Short: "List pending requests", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return c.list(c.out(cmd)) }},
		&cobra.Command{Use: "show ID", Short: "Show one request", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error { return c.show(c.out(cmd), args[0]) }},
		approve, deny,
	)
	return cmd
}

func (c *approvalsClient) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("approvals API: %w (is the daemon running, with approvals enabled?)", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != http.StatusOK {
		var e approvals.APIError
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("HTTP %d: %s", resp.StatusCode, e.Error)
		}
		return fmt.Errorf("HTTP %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return json.Unmarshal(b, out)
}

func (c *approvalsClient) list(w io.Writer) error {
	var reqs []*approvals.Request
	if err := c.do("GET", "/v1/approvals", nil, &reqs); err != nil {
		return err
	}
	if c.output == "json" {
		return printJSON(w, reqs)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw, "ID\tAGENT\tTARGET\tRULE\tAPPROVERS\tEXPIRES IN\tSTATEMENT")
	for _, r := range reqs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Agent, r.Target, r.Rule, strings.Join(r.Approvers, ","),
			time.Until(r.ExpiresAt).Round(time.Second), oneLine(r.Statement, 60))
	}
	return nil
}

func (c *approvalsClient) show(w io.Writer, id string) error {
	var r approvals.Request
	if err := c.do("GET", "/v1/approvals/"+id, nil, &r); err != nil {
		return err
	}
	if c.output == "json" {
		return printJSON(w, r)
	}
	printRequest(w, &r)
	return nil
}

func (c *approvalsClient) decide(w io.Writer, id string, approve bool, reason, digest string) error {
	verb := "deny"
	if approve {
		verb = "approve"
	}
	var r approvals.Request
	if err := c.do("POST", "/v1/approvals/"+id+"/"+verb, approvals.DecideRequest{Reason: reason, Digest: digest}, &r); err != nil {
		return err
	}
	if c.output == "json" {
		return printJSON(w, r)
	}
	if d := r.Decision; d != nil {
		fmt.Fprintf(w, "%s %s by %s\n", r.ID, d.Outcome, d.By)
	}
	return nil
}

func printRequest(w io.Writer, r *approvals.Request) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	status := "pending, expires in " + time.Until(r.ExpiresAt).Round(time.Second).String()
	if d := r.Decision; d != nil {
		status = fmt.Sprintf("%s by %s at %s", d.Outcome, d.By, d.At.Format(time.RFC3339))
		if d.Reason != "" {
			status += ": " + d.Reason
		}
	} else if !r.Pending(time.Now()) {
		status = "expired"
	}
	var objs []string
	for _, o := range r.Objects {
		objs = append(objs, o.Action+" "+o.Kind+" "+o.Name)
	}
	for _, kv := range [][2]string{
		{"id", r.ID}, {"status", status}, {"agent", r.Agent + " (roles " + strings.Join(r.Roles, ", ") + ")"},
		{"target", r.Target}, {"session", r.Session + " on " + r.Host}, {"rule", r.Rule + " (approvers " + strings.Join(r.Approvers, ", ") + ")"},
		{"action", r.Action}, {"objects", strings.Join(objs, "; ")}, {"in transaction", strconv.FormatBool(r.InTransaction)},
		{"requested", r.RequestedAt.Format(time.RFC3339)}, {"digest", r.Digest}, {"statement", "(" + r.Redaction + ")"},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	tw.Flush()
	fmt.Fprintln(w, r.Statement)
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// out is where list and show print: agents' statement text is shown
// terminal-safe unless JSON was asked for.
func (c *approvalsClient) out(cmd *cobra.Command) io.Writer {
	if c.output == "json" {
		return cmd.OutOrStdout()
	}
	return termSafe{cmd.OutOrStdout()}
}
