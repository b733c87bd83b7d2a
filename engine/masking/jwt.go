package masking

import (
	"bytes"
	"encoding/base64"
)

// JSON Web Tokens.
//
// A JWS in compact form: three base64url segments joined by dots, the first
// (the header) starting "eyJ" and decoding to a JSON object ({…}) with an
// "alg" member holding a string; the payload is not empty; the signature may
// be (alg "none"). A JWE (five segments, same header rule) is masked too.
// Nothing is verified: an expired or forged token is masked all the same.

const (
	minJWTHeader = 10   // base64url of `{"alg":""}` is longer
	maxJWTHeader = 4096 // longer headers (x5c chains) are checked on their first 4 KiB
)

// jwtAt returns the end of the JWT starting at s[i] ("eyJ"), or -1.
func jwtAt(s []byte, i int) int {
	if i > 0 && (class[s[i-1]]&cB64URL != 0 || s[i-1] == '.') {
		return -1
	}
	var ends [5]int
	n, p := 0, i
	for n < len(ends) {
		for p < len(s) && class[s[p]]&cB64URL != 0 {
			p++
		}
		ends[n] = p
		n++
		if p+1 < len(s) && s[p] == '.' && class[s[p+1]]&cB64URL != 0 {
			p++
			continue
		}
		if n == 2 && p < len(s) && s[p] == '.' { // empty signature
			p++
			ends[n] = p
			n++
		}
		break
	}
	if n != 3 && n != 5 {
		return -1
	}
	e := ends[n-1]
	if e < len(s) && (class[s[e]]&cB64URL != 0 || s[e] == '@') ||
		e+1 < len(s) && s[e] == '.' && class[s[e+1]]&cB64URL != 0 {
		return -1
	}
	if ends[0]-i < minJWTHeader || ends[1] == ends[0]+1 && n == 3 {
		return -1
	}
	if !jwtHeaderOK(s[i:ends[0]]) {
		return -1
	}
	return e
}

// jwtHeaderOK reports whether seg decodes to a JSON object naming an "alg"
// with a string value. The object is not validated further: that would
// allocate for every near miss, and "eyJ…" followed by two more base64url
// segments and such a header is a JWT in practice.
func jwtHeaderOK(seg []byte) bool {
	if len(seg) > maxJWTHeader {
		seg = seg[:maxJWTHeader]
	}
	if len(seg)%4 == 1 {
		return false // not base64 (the alphabet is checked by the caller)
	}
	var buf [maxJWTHeader / 4 * 3]byte
	n, err := base64.RawURLEncoding.Decode(buf[:], seg)
	if err != nil {
		return false
	}
	h := bytes.TrimSpace(buf[:n])
	if len(h) < 2 || h[0] != '{' || len(seg) < maxJWTHeader && h[len(h)-1] != '}' {
		return false
	}
	for {
		k := bytes.Index(h, []byte(`"alg"`))
		if k < 0 {
			return false
		}
		h = bytes.TrimLeft(h[k+len(`"alg"`):], " \t\r\n")
		if len(h) > 0 && h[0] == ':' {
			h = bytes.TrimLeft(h[1:], " \t\r\n")
			return len(h) > 0 && h[0] == '"'
		}
	}
}
