package masking

// IP addresses.
//
// IPv4: four decimal octets 0–255 without leading zeros ("10.0.0.1", not
// "010.0.0.1"), as net/netip parses them, not inside a longer dotted
// sequence ("1.2.3.4.5", "10.0.0.1.example.com") or a word ("v1.2.3.4"). A port (":5432") or prefix
// length ("/24") after it stays visible. Four-part version numbers with small
// parts ("4.2.1.0") are indistinguishable from addresses and are masked.
//
// IPv6: a run of hex digits, colons and dots that net/netip accepts as an
// IPv6 address and that holds a decimal digit: "::" alone ("x :: Int") and
// letter-only forms ("a::b", "dead::beef") are taken for code, not
// addresses. MAC addresses and times have no "::" and too few groups. A zone
// ("%eth0") stays visible.

const maxIPv6 = 45 // "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"

// ipv4At returns the end of the IPv4 address starting at s[i], or -1.
func ipv4At(s []byte, i int) int {
	p := ipv4Len(s[i:])
	if p < 0 {
		return -1
	}
	e := i + p
	if e < len(s) {
		switch c := s[e]; {
		case isWord(c) || c == '@':
			return -1
		case c == '.' && e+1 < len(s) && isWord(s[e+1]):
			return -1
		}
	}
	return e
}

// ipv4Len returns the length of the dotted quad at the start of b, or -1.
func ipv4Len(b []byte) int {
	p := 0
	for k := range 4 {
		if k > 0 {
			if p >= len(b) || b[p] != '.' {
				return -1
			}
			p++
		}
		st, v := p, 0
		for p < len(b) && isDigit(b[p]) && p-st < 3 {
			v = v*10 + int(b[p]-'0')
			p++
		}
		if p == st || v > 255 || p-st > 1 && b[st] == '0' || p < len(b) && isDigit(b[p]) {
			return -1
		}
	}
	return p
}

// ipv6At returns the end of the IPv6 address starting at s[i] (a hex digit
// or "::"), or -1.
func ipv6At(s []byte, i int) int {
	if i > 0 {
		if p := s[i-1]; isWord(p) || p == ':' || p == '.' {
			return -1
		}
	}
	e := i
	for e < len(s) && (isHex(s[e]) || s[e] == ':' || s[e] == '.') {
		if e-i > maxIPv6 {
			return -1
		}
		e++
	}
	if e < len(s) && (isWord(s[e]) || s[e] == '@') {
		return -1
	}
	if !hasDigit(s[i:e]) {
		return -1
	}
	// A trailing dot or single colon ends the sentence, not the address.
	for range 2 {
		if ipv6OK(s[i:e]) {
			return e
		}
		switch {
		case e-i > 2 && s[e-1] == '.':
			e--
		case e-i > 2 && s[e-1] == ':' && s[e-2] != ':':
			e--
		default:
			return -1
		}
	}
	return -1
}

// ipv6OK reports whether b is an IPv6 address as net/netip.ParseAddr reads
// one (without a zone), with at least one hex digit.
func ipv6OK(b []byte) bool {
	groups, ellipsis, hex := 0, -1, false
	p := 0
	if len(b) >= 2 && b[0] == ':' && b[1] == ':' {
		ellipsis, p = 0, 2
	}
	for p < len(b) {
		st := p
		for p < len(b) && isHex(b[p]) && p-st < 5 {
			p++
		}
		if p == st || p-st > 4 {
			return false
		}
		hex = true
		if p < len(b) && b[p] == '.' { // embedded IPv4 in the last 32 bits
			if groups > 6 || ipv4Len(b[st:]) != len(b)-st {
				return false
			}
			groups += 2
			break
		}
		groups++
		if p == len(b) {
			break
		}
		if b[p] != ':' {
			return false
		}
		p++
		if p < len(b) && b[p] == ':' {
			if ellipsis >= 0 {
				return false
			}
			ellipsis = groups
			p++
			continue
		}
		if p == len(b) {
			return false // trailing single colon
		}
	}
	if !hex {
		return false
	}
	if ellipsis < 0 {
		return groups == 8
	}
	return groups <= 7
}

func hasDigit(b []byte) bool {
	for _, c := range b {
		if isDigit(c) {
			return true
		}
	}
	return false
}
