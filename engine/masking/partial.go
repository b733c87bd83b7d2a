package masking

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"unicode/utf8"

	"github.com/interlockhq/interlock/engine/policy"
)

// The partial masker keeps what identifies a value's kind or lets a person
// recognise their own, and stars the rest, keeping separators:
//
//	email      ****@example.com          (the domain)
//	card       **** **** **** 1111       (the last 4 digits)
//	ssn        ***-**-6789               (the last 4 digits)
//	iban       DE** **** **** **** **30 00 (country and last 4)
//	phone      +** **** ***-**67         (the last 2 digits)
//	ip         192.168.1.*, 2001:db8:85a3:* (the /24 or /48 network)
//	jwt        <header>.*****            (the header: algorithm, key id)
//	aws_key    AKIA************MPLE; secret keys all stars
//	api_token  ghp_*****                 (the prefix)
//	pem        BEGIN and END lines, the body starred
//
// Partial output never matches its detector again, so masking twice changes
// nothing.

const stars = "*****"

// appendPartial appends the partial mask of the hit b of detector d.
func appendPartial(dst []byte, d policy.Detector, b []byte) []byte {
	switch d {
	case policy.DetectorEmail:
		return append(append(dst, "****"...), b[bytes.LastIndexByte(b, '@'):]...)
	case policy.DetectorCard, policy.DetectorSSN:
		return appendKeepLast(dst, b, 4, isDigit)
	case policy.DetectorPhone:
		return appendKeepLast(dst, b, 2, isDigit)
	case policy.DetectorIBAN:
		dst = append(dst, b[:2]...)
		return appendKeepLast(dst, b[2:], 4, isAlnum)
	case policy.DetectorIP:
		return appendPartialIP(dst, b)
	case policy.DetectorJWT:
		return append(append(dst, b[:bytes.IndexByte(b, '.')+1]...), stars...)
	case policy.DetectorAWSKey:
		if len(b) == 20 && b[0] == 'A' { // access key id
			dst = append(dst, b[:4]...)
			dst = append(dst, "************"...)
			return append(dst, b[16:]...)
		}
		return append(dst, "****************************************"...)
	case policy.DetectorAPIToken:
		for k := range tokenKinds {
			if p := tokenKinds[k].prefix; bytes.HasPrefix(b, []byte(p)) {
				return append(append(dst, p...), stars...)
			}
		}
		return append(dst, stars...)
	case policy.DetectorPEM:
		label := pemLabel(b)
		dst = append(dst, pemBegin...)
		dst = append(dst, label...)
		dst = append(dst, pemDash...)
		dst = append(dst, "\n"+stars...)
		if !bytes.Contains(b[len(pemBegin):], pemEnd) {
			return dst // no END line: truncated
		}
		dst = append(dst, '\n')
		dst = append(dst, pemEnd...)
		dst = append(dst, label...)
		return append(dst, pemDash...)
	}
	return append(dst, stars...)
}

// appendKeepLast appends b with every byte that keep accepts starred but the
// last n of them.
func appendKeepLast(dst, b []byte, n int, keep func(byte) bool) []byte {
	total := 0
	for _, c := range b {
		if keep(c) {
			total++
		}
	}
	k := 0
	for _, c := range b {
		if keep(c) {
			if k < total-n {
				c = '*'
			}
			k++
		}
		dst = append(dst, c)
	}
	return dst
}

// appendPartialIP keeps the /24 of an IPv4 address, the /48 of an IPv6 one.
func appendPartialIP(dst, b []byte) []byte {
	if bytes.IndexByte(b, ':') < 0 {
		return append(append(dst, b[:bytes.LastIndexByte(b, '.')+1]...), '*')
	}
	a, err := netip.ParseAddr(string(b))
	if err != nil {
		return append(dst, stars...)
	}
	v := a.As16()
	for k := 0; k < 6; k += 2 {
		dst = hexGroup(dst, uint16(v[k])<<8|uint16(v[k+1]))
		dst = append(dst, ':')
	}
	return append(dst, '*')
}

func hexGroup(dst []byte, g uint16) []byte {
	const digits = "0123456789abcdef"
	started := false
	for shift := 12; shift >= 0; shift -= 4 {
		d := g >> shift & 0xf
		if d != 0 || started || shift == 0 {
			dst = append(dst, digits[d])
			started = true
		}
	}
	return dst
}

// appendPartialWhole partially masks a whole column value: the partial mask
// of its detector when a detector recognises the entire value, otherwise
// every letter and digit starred but the last quarter, at most 4.
func (m *Masker) appendPartialWhole(dst, src []byte) []byte {
	sc := newScanner(src, 0, allDetectors)
	if h, ok := sc.next(); ok && h.start == 0 && h.end == len(src) {
		return appendPartial(dst, h.det, src)
	}
	total := 0
	for p := 0; p < len(src); {
		r, size := utf8.DecodeRune(src[p:])
		if isLetterOrDigit(r) {
			total++
		}
		p += size
	}
	keep := min(4, total/4)
	k := 0
	for p := 0; p < len(src); {
		r, size := utf8.DecodeRune(src[p:])
		if isLetterOrDigit(r) {
			if k < total-keep {
				dst = append(dst, '*')
				k++
				p += size
				continue
			}
			k++
		}
		dst = append(dst, src[p:p+size]...)
		p += size
	}
	return dst
}

// hashLen is the number of hex digits of a hash token: 64 bits, enough for
// joins and grouping over billions of distinct values.
const hashLen = 16

// appendHash appends "h:" and the truncated HMAC-SHA256 of b.
func (m *Masker) appendHash(dst, b []byte) []byte {
	mac := hmac.New(sha256.New, m.key)
	mac.Write(b)
	var sum [sha256.Size]byte
	dst = append(dst, "h:"...)
	return hex.AppendEncode(dst, mac.Sum(sum[:0])[:hashLen/2])
}
