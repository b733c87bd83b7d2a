package postgres

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/interlockhq/interlock/engine"
	"github.com/interlockhq/interlock/engine/policy"
)

// upstream is the engine's connection to the target database, after
// authentication, ready for the relay.
type upstream struct {
	conn      net.Conn
	r         *bufio.Reader
	pid       uint32
	secret    []byte
	params    map[string]string
	txStatus  byte
	key       cancelKey // the key data the agent was given
	agentUser string    // the user name the agent asked for, for logs
	dbUser    string    // the user the engine is connected as
	database  string
}

// pinnedParams are sent upstream whatever the agent asked for: the
// classifier's view of a statement holds only with these (see doc.go).
var pinnedParams = map[string]string{
	"client_encoding":             "UTF8",
	"standard_conforming_strings": "on",
	"search_path":                 "public",
}

// passedParams are the agent's startup parameters relayed upstream. Others
// (options, role, search_path, session_authorization …) are dropped: they
// would change who the session is or how names resolve.
var passedParams = map[string]bool{
	"application_name":   true,
	"DateStyle":          true,
	"datestyle":          true,
	"TimeZone":           true,
	"timezone":           true,
	"IntervalStyle":      true,
	"intervalstyle":      true,
	"extra_float_digits": true,
	"lc_messages":        false, // server-side messages stay parseable
}

func upstreamParams(startup *pgproto3.StartupMessage) map[string]string {
	out := map[string]string{}
	for k, v := range startup.Parameters {
		if passedParams[k] {
			out[k] = v
		}
	}
	for k, v := range pinnedParams {
		out[k] = v
	}
	return out
}

// connectUpstream authenticates to the target and completes the agent's
// handshake: AuthenticationOk, the server's ParameterStatus messages, a
// mapped BackendKeyData and ReadyForQuery.
func (h *Handler) connectUpstream(ctx context.Context, s *engine.Session, cc *clientConn, t *policy.Target, startup *pgproto3.StartupMessage) (*upstream, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.HandshakeTimeout)
	defer cancel()
	var (
		up  *upstream
		err error
	)
	if t.Auth == policy.AuthPassthrough {
		up, err = h.passthrough(ctx, s, cc, t, startup)
	} else {
		up, err = h.inject(ctx, s, t, startup)
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			// The server's own refusal (bad database, too many clients)
			// is what the agent would have seen: pass it on.
			cc.w.send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: pgErr.Code, Message: pgErr.Message, Detail: pgErr.Detail, Hint: pgErr.Hint})
		} else if !errors.Is(err, errAuthRelayed) {
			cc.fatal("08006", "Interlock: cannot connect to target "+t.Name+": "+err.Error())
		}
		return nil, fmt.Errorf("connect to target %s: %w", t.Name, err)
	}
	up.agentUser = startup.Parameters["user"]

	key := h.cancels.register(s, up)
	up.key = key
	msgs := []pgproto3.BackendMessage{}
	if t.Auth != policy.AuthPassthrough {
		msgs = append(msgs, &pgproto3.AuthenticationOk{})
		for k, v := range up.params {
			msgs = append(msgs, &pgproto3.ParameterStatus{Name: k, Value: v})
		}
	}
	msgs = append(msgs, &pgproto3.BackendKeyData{ProcessID: key.pid, SecretKey: key.secret}, &pgproto3.ReadyForQuery{TxStatus: up.txStatus})
	if err := cc.w.send(msgs...); err != nil {
		up.conn.Close()
		h.cancels.unregister(key)
		return nil, fmt.Errorf("finish handshake with agent: %w", err)
	}
	s.Log.Info("postgres session ready", "auth", authMode(t), "agent_user", up.agentUser, "db_user", up.dbUser, "database", up.database, "backend_pid", up.pid)
	return up, nil
}

func authMode(t *policy.Target) string {
	if t.Auth == "" {
		return policy.AuthInject
	}
	return t.Auth
}

// inject connects with the target's own credentials through pgconn (TLS,
// SCRAM-SHA-256 or md5 as the server demands), then takes the raw
// connection over.
func (h *Handler) inject(ctx context.Context, s *engine.Session, t *policy.Target, startup *pgproto3.StartupMessage) (*upstream, error) {
	creds := t.CredentialsFor(s.Identity.Roles)
	password, err := creds.Password()
	if err != nil {
		return nil, err
	}
	db := t.Database
	if db == "" {
		db = startup.Parameters["database"]
	}
	if db == "" {
		db = creds.User
	}
	cfg, err := pgconn.ParseConfig(connString(s.Identity.OrigDst.Addr().String(), s.Identity.OrigDst.Port(), creds.User, db, t.TLS.Mode))
	if err != nil {
		return nil, fmt.Errorf("upstream config: %w", err)
	}
	cfg.Password = password
	cfg.DialFunc = s.DialContext
	cfg.RuntimeParams = upstreamParams(startup)
	if err := applyTLS(cfg, t); err != nil {
		return nil, err
	}
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	hj, err := pc.Hijack()
	if err != nil {
		return nil, fmt.Errorf("take over upstream connection: %w", err)
	}
	up := &upstream{
		conn: hj.Conn, r: h.bufs.reader(hj.Conn, upstreamBufSize),
		pid: hj.PID, secret: hj.SecretKey, params: hj.ParameterStatuses, txStatus: hj.TxStatus,
		dbUser: creds.User, database: db,
	}
	if up.txStatus == 0 {
		up.txStatus = 'I'
	}
	return up, nil
}

// connString builds a keyword/value connection string with every value
// quoted, so no part of it can inject another keyword.
func connString(host string, port uint16, user, db, sslmode string) string {
	if sslmode == "" {
		sslmode = policy.TLSPrefer
	}
	q := func(v string) string {
		return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
	}
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=%s connect_timeout=15",
		q(host), port, q(user), q(db), q(sslmode))
}

// applyTLS adds the target's CA bundle for verify-full.
func applyTLS(cfg *pgconn.Config, t *policy.Target) error {
	if t.TLS.CAFile == "" || cfg.TLSConfig == nil {
		return nil
	}
	pem, err := os.ReadFile(t.TLS.CAFile)
	if err != nil {
		return fmt.Errorf("target %s tls.ca_file: %w", t.Name, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("target %s tls.ca_file %s: no PEM certificates", t.Name, t.TLS.CAFile)
	}
	cfg.TLSConfig.RootCAs = pool
	for _, fb := range cfg.Fallbacks {
		if fb.TLSConfig != nil {
			fb.TLSConfig.RootCAs = pool
		}
	}
	return nil
}

// errAuthRelayed marks a failure the agent already heard about from the
// server (a wrong password in passthrough mode).
var errAuthRelayed = errors.New("authentication failed (relayed to the agent)")

// passthrough relays the agent's own authentication to the server: the
// agent's user, and its cleartext, md5 or SCRAM-SHA-256 exchange, byte for
// byte. SCRAM channel binding cannot survive a proxy that terminates TLS,
// so the -PLUS mechanisms are withheld from the agent.
func (h *Handler) passthrough(ctx context.Context, s *engine.Session, cc *clientConn, t *policy.Target, startup *pgproto3.StartupMessage) (*upstream, error) {
	conn, err := s.DialContext(ctx, "tcp", s.Identity.OrigDst.String())
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	if dl, has := ctx.Deadline(); has {
		conn.SetDeadline(dl)
	}
	conn, err = upstreamTLS(conn, t, s.Identity.OrigDst.Addr().String())
	if err != nil {
		return nil, err
	}
	fe := pgproto3.NewFrontend(bufio.NewReaderSize(conn, 64<<10), conn)
	params := upstreamParams(startup)
	params["user"] = startup.Parameters["user"]
	params["database"] = startup.Parameters["database"]
	if t.Database != "" {
		params["database"] = t.Database
	}
	if params["database"] == "" {
		params["database"] = params["user"]
	}
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params})
	if err := fe.Flush(); err != nil {
		return nil, fmt.Errorf("send startup: %w", err)
	}
	up := &upstream{conn: conn, params: map[string]string{}, dbUser: params["user"], database: params["database"]}
	for {
		msg, err := fe.Receive()
		if err != nil {
			return nil, fmt.Errorf("read from server during authentication: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.AuthenticationOk:
			if err := cc.w.send(m); err != nil {
				return nil, err
			}
		case *pgproto3.AuthenticationCleartextPassword, *pgproto3.AuthenticationMD5Password:
			if err := relayAuth(cc, fe, m.(pgproto3.BackendMessage)); err != nil {
				return nil, err
			}
		case *pgproto3.AuthenticationSASL:
			var mechs []string
			for _, mech := range m.AuthMechanisms {
				if !strings.HasSuffix(mech, "-PLUS") {
					mechs = append(mechs, mech)
				}
			}
			if len(mechs) == 0 {
				return nil, errors.New("server offers only SASL mechanisms with channel binding, which cannot pass through a TLS-terminating proxy")
			}
			if err := relayAuth(cc, fe, &pgproto3.AuthenticationSASL{AuthMechanisms: mechs}); err != nil {
				return nil, err
			}
		case *pgproto3.AuthenticationSASLContinue:
			if err := relayAuth(cc, fe, m); err != nil {
				return nil, err
			}
		case *pgproto3.AuthenticationSASLFinal:
			if err := cc.w.send(m); err != nil {
				return nil, err
			}
		case *pgproto3.ParameterStatus:
			up.params[m.Name] = m.Value
			if err := cc.w.send(m); err != nil {
				return nil, err
			}
		case *pgproto3.BackendKeyData:
			up.pid, up.secret = m.ProcessID, append([]byte(nil), m.SecretKey...)
		case *pgproto3.NoticeResponse:
			cc.w.send(m)
		case *pgproto3.ReadyForQuery:
			up.txStatus = m.TxStatus
			conn.SetDeadline(time.Time{})
			up.r = h.bufs.reader(conn, upstreamBufSize)
			// pgproto3's frontend may have read ahead; nothing follows
			// ReadyForQuery until we send, so its buffer is empty here.
			ok = true
			return up, nil
		case *pgproto3.ErrorResponse:
			cc.w.send(m)
			return nil, fmt.Errorf("%w: %s", errAuthRelayed, m.Message)
		default:
			return nil, fmt.Errorf("unexpected %T from server during authentication", msg)
		}
	}
}

// relayAuth forwards an authentication request to the agent and its answer
// back to the server.
func relayAuth(cc *clientConn, fe *pgproto3.Frontend, req pgproto3.BackendMessage) error {
	var authType uint32
	switch req.(type) {
	case *pgproto3.AuthenticationCleartextPassword:
		authType = pgproto3.AuthTypeCleartextPassword
	case *pgproto3.AuthenticationMD5Password:
		authType = pgproto3.AuthTypeMD5Password
	case *pgproto3.AuthenticationSASL:
		authType = pgproto3.AuthTypeSASL
	case *pgproto3.AuthenticationSASLContinue:
		authType = pgproto3.AuthTypeSASLContinue
	}
	if err := cc.be.SetAuthType(authType); err != nil {
		return err
	}
	if err := cc.w.send(req); err != nil {
		return fmt.Errorf("send authentication request to agent: %w", err)
	}
	msg, err := cc.be.Receive()
	if err != nil {
		return fmt.Errorf("read agent's authentication response: %w", err)
	}
	switch msg.(type) {
	case *pgproto3.PasswordMessage, *pgproto3.SASLInitialResponse, *pgproto3.SASLResponse:
	default:
		return fmt.Errorf("agent sent %T during authentication", msg)
	}
	fe.Send(msg)
	return fe.Flush()
}

// upstreamTLS negotiates TLS with the server as the target's tls.mode says
// (passthrough mode; pgconn does this itself for inject).
func upstreamTLS(conn net.Conn, t *policy.Target, host string) (net.Conn, error) {
	mode := t.TLS.Mode
	if mode == "" {
		mode = policy.TLSPrefer
	}
	if mode == policy.TLSDisable {
		return conn, nil
	}
	req, _ := (&pgproto3.SSLRequest{}).Encode(nil)
	if _, err := conn.Write(req); err != nil {
		return nil, fmt.Errorf("send SSLRequest: %w", err)
	}
	b := make([]byte, 1)
	if _, err := conn.Read(b); err != nil {
		return nil, fmt.Errorf("read SSLRequest answer: %w", err)
	}
	if b[0] != 'S' {
		if mode == policy.TLSPrefer {
			return conn, nil
		}
		return nil, fmt.Errorf("target %s refuses TLS but tls.mode is %s", t.Name, mode)
	}
	cfg := &tls.Config{InsecureSkipVerify: true, ServerName: host}
	if mode == policy.TLSVerifyFull {
		cfg = &tls.Config{ServerName: host}
		if t.TLS.CAFile != "" {
			pem, err := os.ReadFile(t.TLS.CAFile)
			if err != nil {
				return nil, fmt.Errorf("target %s tls.ca_file: %w", t.Name, err)
			}
			cfg.RootCAs = x509.NewCertPool()
			cfg.RootCAs.AppendCertsFromPEM(pem)
		}
	}
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("TLS handshake with target %s: %w", t.Name, err)
	}
	return tc, nil
}
