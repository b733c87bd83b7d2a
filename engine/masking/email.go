package masking

import (
	"unicode"
	"unicode/utf8"
)

// E-mail addresses, anchored on the '@' at s[at].
//
// Local part: up to 64 bytes of ASCII letters, digits and . _ % + -, or
// Unicode letters and digits, ending at the '@'; leading dots are not part of
// it, and it holds at least one letter or digit. A longer run is not an
// address (RFC 5321 caps the local part at 64). Quoted local parts are not
// recognised.
//
// Domain: two or more labels of letters, digits and inner hyphens (at most 63
// bytes each, 253 in all); the last label (the TLD) is letters only, at least
// two of them, or an "xn--" punycode label. A trailing dot ends the sentence,
// not the domain. So "user@localhost", "pkg@1.2.3" and "a@10.0.0.1" are not
// addresses, and IP-literal domains ("a@[10.0.0.1]") are left to the IP
// detector. The user name of a URL ("postgres://app@db.example.com") is not
// an address; a password ("https://user:secret@host.example.com") is masked
// with the host, as if it were one.

const (
	maxLocal  = 64
	maxDomain = 253
	maxLabel  = 63
)

// emailAt returns the address around s[at] == '@' as s[start:end], or
// end = -1. The local part does not extend before floor.
func emailAt(s []byte, at, floor int) (start, end int) {
	lo := max(floor, at-maxLocal)
	k := at
	for k > lo {
		c := s[k-1]
		if c < utf8.RuneSelf {
			if class[c]&cLocal == 0 {
				break
			}
			k--
			continue
		}
		r, size := utf8.DecodeLastRune(s[lo:k])
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) {
			break
		}
		k -= size
	}
	if k == at-maxLocal && k > floor && localByteBefore(s, k) {
		return 0, -1 // local part longer than 64 bytes
	}
	for k < at && s[k] == '.' {
		k++
	}
	if k >= 2 && s[k-1] == '/' && s[k-2] == '/' {
		return 0, -1 // user@host of a URL ("postgres://app@db.internal")
	}
	alnum := false
	for p := k; p < at; p++ {
		if s[p] >= utf8.RuneSelf || isAlnum(s[p]) {
			alnum = true
			break
		}
	}
	if !alnum {
		return 0, -1
	}
	if e := domainAt(s, at+1); e > 0 {
		return k, e
	}
	return 0, -1
}

// localByteBefore reports whether the local part would go on before s[k].
func localByteBefore(s []byte, k int) bool {
	if c := s[k-1]; c < utf8.RuneSelf {
		return class[c]&cLocal != 0
	}
	r, _ := utf8.DecodeLastRune(s[:k])
	return unicode.IsLetter(r) || unicode.IsDigit(r)
}

// domainAt returns the end of the longest valid domain name starting at
// s[p], or -1.
func domainAt(s []byte, p int) int {
	start, end, labels := p, -1, 0
	for p-start <= maxDomain {
		ls := p
		ascii := true
		for p < len(s) {
			c := s[p]
			if c < utf8.RuneSelf {
				if !isAlnum(c) && c != '-' {
					break
				}
				p++
				continue
			}
			r, size := utf8.DecodeRune(s[p:])
			if !unicode.IsLetter(r) && !unicode.IsDigit(r) {
				break
			}
			ascii = false
			p += size
		}
		n := p - ls
		if n == 0 || n > maxLabel || s[ls] == '-' || s[p-1] == '-' || p-start > maxDomain {
			break
		}
		labels++
		if labels >= 2 && tldOK(s[ls:p], ascii) {
			end = p
		}
		if p+1 < len(s) && s[p] == '.' {
			p++
			continue
		}
		break
	}
	return end
}

// tldOK reports whether label can be a top-level domain: letters only (at
// least two), or punycode.
func tldOK(label []byte, ascii bool) bool {
	if len(label) >= 5 && (label[0] == 'x' || label[0] == 'X') && (label[1] == 'n' || label[1] == 'N') && label[2] == '-' && label[3] == '-' {
		return true
	}
	if ascii {
		if len(label) < 2 {
			return false
		}
		for _, c := range label {
			if class[c]&(cUpper|cLower) == 0 {
				return false
			}
		}
		return true
	}
	n := 0
	for len(label) > 0 {
		r, size := utf8.DecodeRune(label)
		if !unicode.IsLetter(r) {
			return false
		}
		label = label[size:]
		n++
	}
	return n >= 2
}
