package masking

// API tokens with a well-known prefix.
//
// Each kind is a prefix and a body of a given alphabet and length; the body
// must hold at least one digit and one letter (so "xoxb-your-token-here" in
// documentation is not masked), and for the short, generic "sk-" prefix
// upper case, lower case and digits. The token stands as a word of its own.

type tokenKind struct {
	prefix   string
	alphabet uint16 // class of body bytes
	dot      bool   // the body may contain dots (SendGrid)
	min, max int    // body length
	mixed    bool   // the body needs upper case, lower case and digits
}

var tokenKinds = [...]tokenKind{
	// GitHub: personal, OAuth, user-to-server, server-to-server, refresh;
	// fine-grained personal access tokens.
	{prefix: "ghp_", alphabet: cAlnum, min: 30, max: 255},
	{prefix: "gho_", alphabet: cAlnum, min: 30, max: 255},
	{prefix: "ghu_", alphabet: cAlnum, min: 30, max: 255},
	{prefix: "ghs_", alphabet: cAlnum, min: 30, max: 255},
	{prefix: "ghr_", alphabet: cAlnum, min: 30, max: 255},
	{prefix: "github_pat_", alphabet: cB64URL, min: 22, max: 255},
	// GitLab personal access tokens.
	{prefix: "glpat-", alphabet: cB64URL, min: 20, max: 255},
	// Slack bot, user, app-level, refresh and configuration tokens.
	{prefix: "xoxb-", alphabet: cAlnum | cB64URL, min: 10, max: 255},
	{prefix: "xoxp-", alphabet: cAlnum | cB64URL, min: 10, max: 255},
	{prefix: "xoxa-", alphabet: cAlnum | cB64URL, min: 10, max: 255},
	{prefix: "xoxr-", alphabet: cAlnum | cB64URL, min: 10, max: 255},
	{prefix: "xoxs-", alphabet: cAlnum | cB64URL, min: 10, max: 255},
	{prefix: "xoxe-", alphabet: cAlnum | cB64URL, min: 10, max: 255},
	{prefix: "xapp-", alphabet: cAlnum | cB64URL, min: 10, max: 255},
	// Stripe secret, restricted and (live) publishable keys; webhook secrets.
	{prefix: "sk_live_", alphabet: cAlnum, min: 16, max: 255},
	{prefix: "rk_live_", alphabet: cAlnum, min: 16, max: 255},
	{prefix: "pk_live_", alphabet: cAlnum, min: 16, max: 255},
	{prefix: "sk_test_", alphabet: cAlnum, min: 16, max: 255},
	{prefix: "rk_test_", alphabet: cAlnum, min: 16, max: 255},
	{prefix: "whsec_", alphabet: cAlnum, min: 24, max: 255},
	// OpenAI ("sk-", "sk-proj-") and Anthropic ("sk-ant-") keys.
	{prefix: "sk-", alphabet: cB64URL, min: 32, max: 255, mixed: true},
	// Google API keys.
	{prefix: "AIza", alphabet: cB64URL, min: 35, max: 35},
	// npm, PyPI and Hugging Face tokens.
	{prefix: "npm_", alphabet: cAlnum, min: 36, max: 255},
	{prefix: "pypi-", alphabet: cB64URL, min: 50, max: 1024},
	{prefix: "hf_", alphabet: cAlnum, min: 30, max: 255},
	// SendGrid API keys: SG.<22>.<43>.
	{prefix: "SG.", alphabet: cB64URL, dot: true, min: 60, max: 80},
	// Shopify access tokens and shared secrets.
	{prefix: "shpat_", alphabet: cAlnum, min: 32, max: 64},
	{prefix: "shpss_", alphabet: cAlnum, min: 32, max: 64},
	{prefix: "shpca_", alphabet: cAlnum, min: 32, max: 64},
	{prefix: "shppa_", alphabet: cAlnum, min: 32, max: 64},
	// DigitalOcean personal, OAuth and refresh tokens.
	{prefix: "dop_v1_", alphabet: cAlnum, min: 64, max: 64},
	{prefix: "doo_v1_", alphabet: cAlnum, min: 64, max: 64},
	{prefix: "dor_v1_", alphabet: cAlnum, min: 64, max: 64},
}

// tokenFirst marks the bytes that start a token prefix.
var tokenFirst = func() (t [256]bool) {
	for _, k := range tokenKinds {
		t[k.prefix[0]] = true
	}
	return t
}()

// head is the length of the prefix's first word (letters and digits):
// "ghp" for "ghp_", all of "AIza".
func (t *tokenKind) head() int {
	for k := 0; k < len(t.prefix); k++ {
		if !isAlnum(t.prefix[k]) {
			return k
		}
	}
	return len(t.prefix)
}

// tokenAt returns the end of the API token whose first word is s[i:j], or
// -1.
func tokenAt(s []byte, i, j int) int {
	if !tokenFirst[s[i]] || !wordLeft(s, i) {
		return -1
	}
	for k := range tokenKinds {
		t := &tokenKinds[k]
		if h := t.head(); h < len(t.prefix) && j-i != h || j-i < h {
			continue
		}
		if len(s)-i < len(t.prefix) || string(s[i:i+len(t.prefix)]) != t.prefix {
			continue
		}
		if e := t.body(s, i+len(t.prefix)); e > 0 {
			return e
		}
	}
	return -1
}

// body returns the end of the token body starting at s[p], or -1.
func (t *tokenKind) body(s []byte, p int) int {
	e := p
	var upper, lower, digit bool
	for ; e < len(s) && e-p <= t.max; e++ {
		c := s[e]
		if class[c]&t.alphabet == 0 && (c != '.' || !t.dot) {
			break
		}
		upper = upper || isUpper(c)
		lower = lower || class[c]&cLower != 0
		digit = digit || isDigit(c)
	}
	n := e - p
	if n < t.min || n > t.max || !digit || !upper && !lower || t.mixed && !(upper && lower) {
		return -1
	}
	if !wordRight(s, e) {
		return -1
	}
	return e
}
