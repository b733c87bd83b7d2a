package masking

import "bytes"

// AWS credentials.
//
// Access key ids: "AKIA" (long-term) or "ASIA" (temporary) and 16 more
// upper-case letters or digits, 20 in all, as a word of its own.
//
// Secret access keys are 40 characters of base64 (letters, digits, '+', '/')
// with no other base64 or '=' around them, mixing upper case, lower case and
// digits or symbols. That shape alone also fits many random identifiers, so a
// candidate is masked only with context: an access key id matched within 256
// bytes before it, "AKIA"/"ASIA" within 256 bytes after it, or the word
// "secret" (any case: aws_secret_access_key, SecretAccessKey) within 48 bytes
// before it. A secret key alone in a value, without any of these, is not
// found; git commit hashes and other hex strings never match (no upper case).

const (
	awsSecretLen     = 40
	awsSecretNear    = 256
	awsSecretKeyword = 48
)

// awsKeyIDAt returns the end of the access key id s[i:j] (20 bytes starting
// with 'A'), or -1.
func awsKeyIDAt(s []byte, i, j int) int {
	if !wordLeft(s, i) || !wordRight(s, j) {
		return -1
	}
	if s[i+1] != 'K' && s[i+1] != 'S' || s[i+2] != 'I' || s[i+3] != 'A' {
		return -1
	}
	for _, c := range s[i+4 : j] {
		if !isUpper(c) && !isDigit(c) {
			return -1
		}
	}
	return j
}

// isB64Ext reports whether c may be part of a longer base64-like token.
func isB64Ext(c byte) bool { return class[c]&(cB64|cB64URL) != 0 }

// awsSecretAt returns the end of the secret access key starting at s[i], or
// -1.
func (sc *scanner) awsSecretAt(i int) int {
	s := sc.s
	if i > 0 && isB64Ext(s[i-1]) {
		return -1
	}
	e := i
	for e < len(s) && class[s[e]]&cB64 != 0 && e-i <= awsSecretLen {
		e++
	}
	if e-i != awsSecretLen || e < len(s) && (isB64Ext(s[e]) || s[e] == '=' || s[e] == '@') {
		return -1
	}
	var upper, lower, other bool
	for _, c := range s[i:e] {
		switch {
		case isUpper(c):
			upper = true
		case class[c]&cLower != 0:
			lower = true
		default:
			other = true
		}
	}
	if !upper || !lower || !other {
		return -1
	}
	if sc.awsEnd >= 0 && i-sc.awsEnd <= awsSecretNear ||
		containsFold(s[max(0, i-awsSecretKeyword):i], "secret") {
		return e
	}
	after := s[e:min(len(s), e+awsSecretNear)]
	if bytes.Contains(after, []byte("AKIA")) || bytes.Contains(after, []byte("ASIA")) {
		return e
	}
	return -1
}
