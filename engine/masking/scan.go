package masking

import "github.com/interlockhq/interlock/engine/policy"

// The scanner walks a value once, left to right. Bytes that cannot start a
// match (spaces, most punctuation) cost one table lookup; a run of letters
// and digits is skipped in one tight loop after the detectors that may start
// at its first byte had a look. Detectors then parse forward from their
// anchor with bounded look-around, so the whole scan stays linear in the
// length of the value. E-mail addresses are anchored on their '@' and
// extend backwards over at most 64 bytes.

// Byte classes.
const (
	cDigit  uint16 = 1 << iota
	cUpper         // A-Z
	cLower         // a-z
	cHex           // 0-9 A-F a-f
	cLocal         // e-mail local part: letters, digits and . _ % + -
	cB64           // base64: letters, digits, + /
	cB64URL        // base64url: letters, digits, - _
	cTrig          // the scanner stops here to try detectors

	cAlnum = cDigit | cUpper | cLower
)

var class = func() (t [256]uint16) {
	for c := '0'; c <= '9'; c++ {
		t[c] |= cDigit | cHex | cLocal | cB64 | cB64URL | cTrig
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] |= cUpper | cLocal | cB64 | cB64URL | cTrig
		t[c+'a'-'A'] |= cLower | cLocal | cB64 | cB64URL | cTrig
	}
	for c := 'A'; c <= 'F'; c++ {
		t[c] |= cHex
		t[c+'a'-'A'] |= cHex
	}
	for _, c := range "._%+-" {
		t[c] |= cLocal
	}
	t['+'] |= cB64
	t['/'] |= cB64
	t['-'] |= cB64URL
	t['_'] |= cB64URL
	for _, c := range "@+(-:/" {
		t[c] |= cTrig
	}
	return t
}()

func isDigit(c byte) bool { return c-'0' < 10 }
func isUpper(c byte) bool { return c-'A' < 26 }
func isAlnum(c byte) bool { return class[c]&cAlnum != 0 }
func isHex(c byte) bool   { return class[c]&cHex != 0 }

// isWord reports whether c continues an identifier: a match may neither
// start nor end next to one.
func isWord(c byte) bool { return class[c]&cAlnum != 0 || c == '_' }

// wordLeft reports whether a match may start at s[i]: not inside a word.
func wordLeft(s []byte, i int) bool { return i == 0 || !isWord(s[i-1]) }

// wordRight reports whether a match may end at s[e]: not inside a word and
// not in the local part of an e-mail address (which the e-mail detector
// masks whole).
func wordRight(s []byte, e int) bool {
	return e >= len(s) || (!isWord(s[e]) && s[e] != '@')
}

// numLeft reports whether a number may start at s[i]: not inside a word, and
// not the continuation of a decimal, a date or another dash-, dot-, slash- or
// colon-joined number.
func numLeft(s []byte, i int) bool {
	if i == 0 {
		return true
	}
	switch p := s[i-1]; p {
	case ',', ':':
		// Separators, never inside a number a detector looks for:
		// PostgreSQL's array and row output and string_agg put values
		// side by side with bare commas ({123-45-6789,234-56-7890}), and
		// thousands separators and times ("12:30") leave groups too short
		// for any detector.
		return true
	case '.', '-', '/':
		return i < 2 || !isDigit(s[i-2])
	case '+':
		return false // a signed number, or a phone number already tried
	default:
		return !isWord(p)
	}
}

// numRight is numLeft's counterpart at the end of a number.
func numRight(s []byte, e int) bool {
	if e >= len(s) {
		return true
	}
	switch c := s[e]; c {
	case ',', ':':
		return true // see numLeft
	case '.', '-', '/':
		return e+1 >= len(s) || !isDigit(s[e+1])
	default:
		return !isWord(c) && c != '@'
	}
}

// detSet is a set of detectors.
type detSet uint16

func (d detSet) has(x policy.Detector) bool { return d&(1<<x) != 0 }

// allDetectors turns every detector on.
const allDetectors = detSet(1<<NumDetectors - 1)

// hit is one match: s[start:end] found by det.
type hit struct {
	start, end int
	det        policy.Detector
}

// scanner finds the matches of the detectors in on, left to right, without
// overlaps. s[:pos] is context only: boundaries look at it, matches do not
// start in it.
type scanner struct {
	s       []byte
	pos     int
	lastEnd int // end of the previous match (e-mail local parts stop there)
	awsEnd  int // end of the last AWS access key id, or -1
	on      detSet
}

func newScanner(s []byte, from int, on detSet) scanner {
	return scanner{s: s, pos: from, lastEnd: from, awsEnd: -1, on: on}
}

// next returns the next match.
func (sc *scanner) next() (hit, bool) {
	s := sc.s
	i := sc.pos
	for i < len(s) {
		cl := class[s[i]]
		if cl&cTrig == 0 {
			i++
			continue
		}
		var h hit
		var ok bool
		if cl&cAlnum != 0 {
			j := i + 1
			for j < len(s) && class[s[j]]&cAlnum != 0 {
				j++
			}
			// Most words are lower-case prose followed by a space or
			// punctuation that starts nothing: skip them at once.
			if cl&cLower != 0 && s[i] != 'e' && j-i != 40 && (j == len(s) || !wordNext[s[j]]) {
				i = j
				continue
			}
			if h, ok = sc.word(i, j); !ok {
				i = j
				continue
			}
		} else if h, ok = sc.punct(i); !ok {
			i++
			continue
		}
		sc.pos, sc.lastEnd = h.end, h.end
		return h, true
	}
	sc.pos = len(s)
	return hit{}, false
}

// wordNext marks the bytes after a word that may continue a match starting
// with it: token prefixes (ghp_, xoxb-, sk_live_), IPv6 groups, base64
// secrets. Every detector that can start with a lower-case word but "eyJ"
// (JWT) or a whole 40-byte word (AWS secret) needs one of them.
var wordNext = func() (t [256]bool) {
	for _, c := range "_-.:/+" {
		t[c] = true
	}
	return t
}()

// word tries the detectors that can start at the run of letters and digits
// s[i:j].
func (sc *scanner) word(i, j int) (hit, bool) {
	s, on := sc.s, sc.on
	var next byte
	if j < len(s) {
		next = s[j]
	}
	wl := j - i
	digits := isDigit(s[i])
	if digits {
		for k := i + 1; k < j; k++ {
			if !isDigit(s[k]) {
				digits = false
				break
			}
		}
	}
	switch {
	case digits && !numLeft(s, i):
	case digits:
		if on.has(policy.DetectorIP) && next == '.' && wl <= 3 {
			if e := ipv4At(s, i); e > 0 {
				return hit{i, e, policy.DetectorIP}, true
			}
		}
		if on.has(policy.DetectorSSN) && (wl == 9 || wl == 3 && (next == '-' || next == ' ')) {
			if e := ssnAt(s, i, j); e > 0 {
				return hit{i, e, policy.DetectorSSN}, true
			}
		}
		// A group separator must be followed by a digit (or a parenthesis
		// for phone numbers).
		sepDigit := (next == ' ' || next == '-' || next == '.') && j+1 < len(s) && (isDigit(s[j+1]) || s[j+1] == '(')
		if on.has(policy.DetectorCard) && (wl >= 13 && wl <= 19 || wl >= 3 && wl <= 6 && sepDigit && next != '.') {
			if e := cardAt(s, i); e > 0 {
				return hit{i, e, policy.DetectorCard}, true
			}
		}
		if on.has(policy.DetectorPhone) && wl <= 5 && sepDigit {
			if e := phoneAt(s, i); e > 0 {
				return hit{i, e, policy.DetectorPhone}, true
			}
		}
	default:
		c := s[i]
		if on.has(policy.DetectorIBAN) && wl >= 4 && isUpper(c) && isUpper(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) && wordLeft(s, i) {
			if e := ibanAt(s, i); e > 0 {
				return hit{i, e, policy.DetectorIBAN}, true
			}
		}
		if on.has(policy.DetectorAWSKey) && wl == 20 && c == 'A' {
			if e := awsKeyIDAt(s, i, j); e > 0 {
				sc.awsEnd = e
				return hit{i, e, policy.DetectorAWSKey}, true
			}
		}
		if on.has(policy.DetectorJWT) && c == 'e' && wl >= 3 && s[i+1] == 'y' && s[i+2] == 'J' {
			if e := jwtAt(s, i); e > 0 {
				return hit{i, e, policy.DetectorJWT}, true
			}
		}
		if on.has(policy.DetectorAPIToken) && (next == '_' || next == '-' || next == '.' || c == 'A' && wl >= 4) {
			if e := tokenAt(s, i, j); e > 0 {
				return hit{i, e, policy.DetectorAPIToken}, true
			}
		}
	}
	if on.has(policy.DetectorIP) && next == ':' && wl <= 4 {
		if e := ipv6At(s, i); e > 0 {
			return hit{i, e, policy.DetectorIP}, true
		}
	}
	if on.has(policy.DetectorAWSKey) && (wl == 40 || wl < 40 && (next == '/' || next == '+')) {
		if e := sc.awsSecretAt(i); e > 0 {
			return hit{i, e, policy.DetectorAWSKey}, true
		}
	}
	return hit{}, false
}

// punct tries the detectors anchored on the punctuation at s[i].
func (sc *scanner) punct(i int) (hit, bool) {
	s, on := sc.s, sc.on
	switch s[i] {
	case '@':
		if on.has(policy.DetectorEmail) {
			if b, e := emailAt(s, i, sc.lastEnd); e > 0 {
				return hit{b, e, policy.DetectorEmail}, true
			}
		}
	case '+':
		if on.has(policy.DetectorPhone) {
			if e := phoneAt(s, i); e > 0 {
				return hit{i, e, policy.DetectorPhone}, true
			}
		}
		if on.has(policy.DetectorAWSKey) {
			if e := sc.awsSecretAt(i); e > 0 {
				return hit{i, e, policy.DetectorAWSKey}, true
			}
		}
	case '(':
		if on.has(policy.DetectorPhone) {
			if e := phoneAt(s, i); e > 0 {
				return hit{i, e, policy.DetectorPhone}, true
			}
		}
	case '-':
		if on.has(policy.DetectorPEM) {
			if e := pemAt(s, i); e > 0 {
				return hit{i, e, policy.DetectorPEM}, true
			}
		}
	case ':':
		if on.has(policy.DetectorIP) && i+1 < len(s) && s[i+1] == ':' {
			if e := ipv6At(s, i); e > 0 {
				return hit{i, e, policy.DetectorIP}, true
			}
		}
	case '/':
		if on.has(policy.DetectorAWSKey) {
			if e := sc.awsSecretAt(i); e > 0 {
				return hit{i, e, policy.DetectorAWSKey}, true
			}
		}
	}
	return hit{}, false
}

// containsFold reports whether hay contains needle (lower-case ASCII),
// ignoring ASCII case.
func containsFold(hay []byte, needle string) bool {
outer:
	for k := 0; k+len(needle) <= len(hay); k++ {
		for m := 0; m < len(needle); m++ {
			c := hay[k+m]
			if isUpper(c) {
				c += 'a' - 'A'
			}
			if c != needle[m] {
				continue outer
			}
		}
		return true
	}
	return false
}
