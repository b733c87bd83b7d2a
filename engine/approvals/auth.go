package approvals

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Authenticator tells who sent an API request.
type Authenticator interface {
	// Authenticate returns the approver, an error wrapping
	// ErrUnauthenticated (401) or one wrapping ErrForbidden (403).
	Authenticate(r *http.Request) (Approver, error)
}

// OIDCConfig configures OIDC ID-token authentication.
type OIDCConfig struct {
	// Issuer is the provider's issuer URL (discovery is at
	// Issuer/.well-known/openid-configuration).
	Issuer string
	// ClientID is the audience the ID tokens must be issued for.
	ClientID string
	// RolesClaim names the claim holding the user's groups or roles
	// (default "groups"); a dotted path reaches into objects
	// ("realm_access.roles"). A string or a list of strings.
	RolesClaim string
	// RoleMap maps claim values to approver roles. Empty: the claim values
	// are the approver roles.
	RoleMap map[string][]string
	// Client is used for discovery and keys (custom CAs); default
	// http.DefaultClient.
	Client *http.Client
}

// OIDC verifies `Authorization: Bearer <ID token>` with go-oidc: the
// signature against the provider's published keys, the issuer, the
// audience and the expiry. Discovery happens on first use and is retried
// until it works, so the daemon starts while the provider is down.
type OIDC struct {
	cfg OIDCConfig

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier
}

// NewOIDC returns an authenticator for cfg.
func NewOIDC(cfg OIDCConfig) (*OIDC, error) {
	if cfg.Issuer == "" || cfg.ClientID == "" {
		return nil, errors.New("approvals: OIDC needs an issuer and a client id")
	}
	if cfg.RolesClaim == "" {
		cfg.RolesClaim = "groups"
	}
	if cfg.Client == nil {
		cfg.Client = http.DefaultClient
	}
	return &OIDC{cfg: cfg}, nil
}

func (o *OIDC) getVerifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.verifier != nil {
		return o.verifier, nil
	}
	// The provider keeps this context for fetching keys later: it must
	// outlive the request.
	pctx := oidc.ClientContext(context.Background(), o.cfg.Client)
	dctx, cancel := context.WithCancel(pctx)
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	p, err := oidc.NewProvider(dctx, o.cfg.Issuer)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("approvals: OIDC discovery at %s: %w", o.cfg.Issuer, err)
	}
	o.verifier = p.VerifierContext(pctx, &oidc.Config{ClientID: o.cfg.ClientID})
	return o.verifier, nil
}

// Authenticate implements Authenticator.
func (o *OIDC) Authenticate(r *http.Request) (Approver, error) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(token) == "" {
		return Approver{}, fmt.Errorf("%w: no bearer token (send an OIDC ID token as Authorization: Bearer …)", ErrUnauthenticated)
	}
	return o.Verify(r.Context(), strings.TrimSpace(token))
}

// Verify checks an ID token and maps its claims to an approver.
func (o *OIDC) Verify(ctx context.Context, token string) (Approver, error) {
	v, err := o.getVerifier(ctx)
	if err != nil {
		return Approver{}, err // not the caller's fault: a 5xx
	}
	idt, err := v.Verify(ctx, token)
	if err != nil {
		return Approver{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return Approver{}, fmt.Errorf("%w: claims: %v", ErrUnauthenticated, err)
	}
	a := Approver{Subject: idt.Subject}
	for _, k := range []string{"email", "preferred_username", "name"} {
		if s, ok := claims[k].(string); ok && s != "" {
			a.Name = s
			break
		}
	}
	for _, v := range claimStrings(claims, o.cfg.RolesClaim) {
		if len(o.cfg.RoleMap) == 0 {
			a.Roles = append(a.Roles, v)
			continue
		}
		a.Roles = append(a.Roles, o.cfg.RoleMap[v]...)
	}
	slices.Sort(a.Roles)
	a.Roles = slices.Compact(a.Roles)
	// A role named like the local wildcard is never taken from a token.
	a.Roles = slices.DeleteFunc(a.Roles, func(s string) bool { return s == AnyRole })
	if len(a.Roles) == 0 {
		return a, fmt.Errorf("%w: the token's %q claim maps to no approver role", ErrForbidden, o.cfg.RolesClaim)
	}
	return a, nil
}

// claimStrings reads a string or list-of-strings claim at a dotted path.
func claimStrings(claims map[string]any, path string) []string {
	var v any = claims
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	switch t := v.(type) {
	case string:
		return strings.Fields(strings.ReplaceAll(t, ",", " "))
	case []any:
		var out []string
		for _, e := range t {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}
