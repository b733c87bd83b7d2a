package masking

import "bytes"

// PEM private keys.
//
// A block from "-----BEGIN <label>-----", where the label (upper-case
// letters, digits and spaces) contains "PRIVATE KEY" (RSA, EC, DSA,
// ENCRYPTED, OPENSSH, PGP … PRIVATE KEY [BLOCK]), through the matching
// "-----END <label>-----". When the end line is missing (a truncated value),
// the rest of the value is masked: key material must not leak in pieces.
// Certificates and public keys are not masked.

const maxPEMLabel = 64

var (
	pemBegin = []byte("-----BEGIN ")
	pemEnd   = []byte("-----END ")
	pemDash  = []byte("-----")
)

// pemAt returns the end of the private key block starting at s[i] ('-'), or
// -1.
func pemAt(s []byte, i int) int {
	if i > 0 && s[i-1] == '-' || !bytes.HasPrefix(s[i:], pemBegin) {
		return -1
	}
	ls := i + len(pemBegin)
	le := ls
	for le < len(s) && le-ls <= maxPEMLabel && (isUpper(s[le]) || isDigit(s[le]) || s[le] == ' ') {
		le++
	}
	label := s[ls:le]
	if !bytes.HasPrefix(s[le:], pemDash) || !bytes.Contains(label, []byte("PRIVATE KEY")) {
		return -1
	}
	for p := le + len(pemDash); ; {
		k := bytes.Index(s[p:], pemEnd)
		if k < 0 {
			return len(s)
		}
		p += k + len(pemEnd)
		if bytes.HasPrefix(s[p:], label) && bytes.HasPrefix(s[p+len(label):], pemDash) {
			return p + len(label) + len(pemDash)
		}
	}
}

// pemLabel returns the label of the block b found by pemAt.
func pemLabel(b []byte) []byte {
	b = b[len(pemBegin):]
	return b[:bytes.Index(b, pemDash)]
}
