package approvals

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"
)

// startProvider runs mockoidc: a real OIDC provider on loopback with
// discovery, JWKS and RS256-signed tokens.
func startProvider(t testing.TB) *mockoidc.MockOIDC {
	t.Helper()
	m, err := mockoidc.Run()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	return m
}

// idToken logs user in through the provider's authorization-code flow and
// returns the ID token it issues.
func idToken(t testing.TB, m *mockoidc.MockOIDC, user *mockoidc.MockUser) string {
	t.Helper()
	m.QueueUser(user)
	cb := "http://127.0.0.1/callback"
	q := url.Values{"client_id": {m.ClientID}, "response_type": {"code"}, "scope": {"openid email groups"},
		"redirect_uri": {cb}, "state": {"st"}, "nonce": {"n"}}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(m.AuthorizationEndpoint() + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("authorize: %s %q", resp.Status, resp.Header.Get("Location"))
	}
	resp, err = http.PostForm(m.TokenEndpoint(), url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
		"client_id": {m.ClientID}, "client_secret": {m.ClientSecret}, "redirect_uri": {cb}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct {
		IDToken string `json:"id_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || tr.IDToken == "" {
		t.Fatalf("token: %s %v", resp.Status, err)
	}
	return tr.IDToken
}

func user(sub string, groups ...string) *mockoidc.MockUser {
	return &mockoidc.MockUser{Subject: sub, Email: sub + "@example.com", EmailVerified: true, Groups: groups}
}

// apiEnv is the approver API over HTTP with OIDC in front of a manager
// holding one statement.
type apiEnv struct {
	idp *mockoidc.MockOIDC
	srv *httptest.Server
	m   *Manager
	h   *held
	r   *Request
}

func newAPIEnv(t *testing.T) *apiEnv {
	idp := startProvider(t)
	auth, err := NewOIDC(OIDCConfig{Issuer: idp.Issuer(), ClientID: idp.ClientID, RolesClaim: "groups",
		RoleMap: map[string][]string{"db-admins": {"dba"}, "engineering": {"viewer"}}})
	if err != nil {
		t.Fatal(err)
	}
	m := newTestManager(t, nil)
	srv := httptest.NewServer(Handler(m, auth, quietLog()))
	t.Cleanup(srv.Close)
	e := &apiEnv{idp: idp, srv: srv, m: m}
	e.h = hold(m, "sess", "delete from orders where id = 7", time.Minute, context.Background())
	e.r = e.h.request(t)
	return e
}

func (e *apiEnv) call(t *testing.T, method, path, token string, body any) (int, string) {
	t.Helper()
	var b bytes.Buffer
	if body != nil {
		json.NewEncoder(&b).Encode(body)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, &b)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	out.ReadFrom(resp.Body)
	return resp.StatusCode, out.String()
}

func TestAPITokenChecks(t *testing.T) {
	e := newAPIEnv(t)
	other := startProvider(t) // another real provider: another issuer and key
	now := time.Now()
	forge := func(c jwt.RegisteredClaims) string {
		tok, err := e.idp.Keypair.SignJWT(&c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	valid := jwt.RegisteredClaims{Issuer: e.idp.Issuer(), Subject: "x", Audience: jwt.ClaimStrings{e.idp.ClientID},
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}
	wrongIss, wrongAud := valid, valid
	wrongIss.Issuer = other.Issuer()
	wrongAud.Audience = jwt.ClaimStrings{"someone-else"}
	e.idp.AccessTTL = -10 * time.Minute
	expired := idToken(t, e.idp, user("carol", "db-admins"))
	e.idp.AccessTTL = 10 * time.Minute

	approve := "/v1/approvals/" + e.r.ID + "/approve"
	for _, tc := range []struct {
		name, token string
		want        int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"garbage", "not-a-jwt", http.StatusUnauthorized},
		{"another provider's token", idToken(t, other, user("carol", "db-admins")), http.StatusUnauthorized},
		{"wrong issuer, right key", forge(wrongIss), http.StatusUnauthorized},
		{"wrong audience", forge(wrongAud), http.StatusUnauthorized},
		{"expired", expired, http.StatusUnauthorized},
		{"no approver role", idToken(t, e.idp, user("dave", "marketing")), http.StatusForbidden},
		{"approver role, not this rule's", idToken(t, e.idp, user("erin", "engineering")), http.StatusForbidden},
	} {
		if code, body := e.call(t, "POST", approve, tc.token, DecideRequest{}); code != tc.want {
			t.Errorf("%s: HTTP %d %s, want %d", tc.name, code, body, tc.want)
		}
	}
	e.h.stillHeld(t)

	tok := idToken(t, e.idp, user("carol", "db-admins", "engineering"))
	code, body := e.call(t, "GET", "/v1/approvals", tok, nil)
	if code != 200 || !strings.Contains(body, e.r.ID) || !strings.Contains(body, `"statement": "delete from orders where id = 7"`) {
		t.Fatalf("list: %d %s", code, body)
	}
	if code, body := e.call(t, "GET", "/v1/approvals/"+e.r.ID, tok, nil); code != 200 || !strings.Contains(body, e.r.Digest) {
		t.Fatalf("show: %d %s", code, body)
	}
	if code, _ := e.call(t, "GET", "/v1/approvals/nope", tok, nil); code != http.StatusNotFound {
		t.Fatalf("show unknown: %d", code)
	}
	if code, _ := e.call(t, "POST", approve, tok, DecideRequest{Digest: strings.Repeat("0", 64)}); code != http.StatusConflict {
		t.Fatalf("approve with another digest: %d", code)
	}
	if code, body := e.call(t, "POST", approve, tok, DecideRequest{Reason: "ticket 42", Digest: e.r.Digest}); code != 200 || !strings.Contains(body, `"outcome": "approved"`) {
		t.Fatalf("approve: %d %s", code, body)
	}
	if d := e.h.outcome(t, time.Second); d.Outcome != Approved || d.By != "carol@example.com (carol)" || d.Reason != "ticket 42" {
		t.Fatalf("outcome %+v", d)
	}
	if code, _ := e.call(t, "POST", approve, tok, DecideRequest{}); code != http.StatusConflict {
		t.Fatalf("second approval: %d, want 409", code)
	}
}

func TestAPIDenyAndSelfApproval(t *testing.T) {
	e := newAPIEnv(t)
	// The agent's own subject (its oidc_subject in the policy) with an
	// approver role is still refused.
	self := idToken(t, e.idp, user("agent-sub", "db-admins"))
	if code, body := e.call(t, "POST", "/v1/approvals/"+e.r.ID+"/approve", self, DecideRequest{}); code != http.StatusForbidden || !strings.Contains(body, "own request") {
		t.Fatalf("self approval: %d %s", code, body)
	}
	tok := idToken(t, e.idp, user("carol", "db-admins"))
	if code, _ := e.call(t, "POST", "/v1/approvals/"+e.r.ID+"/deny", tok, DecideRequest{}); code != http.StatusBadRequest {
		t.Fatalf("deny without reason: %d", code)
	}
	if code, body := e.call(t, "POST", "/v1/approvals/"+e.r.ID+"/deny", tok, DecideRequest{Reason: "use a WHERE on the date"}); code != 200 {
		t.Fatalf("deny: %d %s", code, body)
	}
	if d := e.h.outcome(t, time.Second); d.Outcome != Denied || d.Reason != "use a WHERE on the date" {
		t.Fatalf("outcome %+v", d)
	}
}
