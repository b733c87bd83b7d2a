package masking

// Payment card numbers (PANs).
//
// A card number is 13 to 19 digits, written in one run or in groups of 3 to 6
// digits separated by single spaces or single dashes (the same separator
// throughout: "4111 1111 1111 1111", "3782-822463-10005"). It must pass the
// Luhn check and start with an issuer prefix of a card network, with a length
// that network issues:
//
//	Visa 4 (13, 16, 19) · Mastercard 51–55, 2221–2720 (16) · Amex 34, 37 (15)
//	Diners 300–305, 36, 38, 39 (14–19) · JCB 3528–3589 (16–19)
//	Discover, UnionPay, RuPay, Maestro: 50, 56–59, 6 (16–19) · Mir 2200–2204 (16–19)
//
// A number inside a longer run of digits, a decimal ("0.4111…") or a
// dash-joined sequence is not a card; when more space-separated groups
// follow ("4111 1111 1111 1111 12/27"), the longest group-aligned prefix that
// is a valid card is taken.

const maxCardGroups = 8

// cardAt returns the end of the card number starting at s[i], or -1.
func cardAt(s []byte, i int) int {
	var ends, cum [maxCardGroups]int
	ng, digits := 0, 0
	over := false // more digits follow the last group
	var sep byte
	for p := i; ng < maxCardGroups; {
		k := p
		for k < len(s) && isDigit(s[k]) && k-p <= 19 {
			k++
		}
		gl := k - p
		if ng > 0 && (gl < 3 || gl > 6) || digits+gl > 19 {
			over = true
			break
		}
		digits += gl
		ends[ng], cum[ng] = k, digits
		ng++
		if k+1 < len(s) && (s[k] == ' ' || s[k] == '-') && isDigit(s[k+1]) && (sep == 0 || sep == s[k]) {
			if ng == 1 && (gl < 3 || gl > 6) {
				break // one run of 13-19 digits followed by another number
			}
			sep, p = s[k], k+1
			continue
		}
		break
	}
	if ng == 0 {
		return -1
	}
	if ng == 1 {
		if over || !numRight(s, ends[0]) || !cardOK(s[i:ends[0]]) {
			return -1
		}
		return ends[0]
	}
	for k := ng; k >= 2; k-- {
		e := ends[k-1]
		if cum[k-1] < 13 {
			break
		}
		if k < ng || over {
			// More groups follow: only a space may end a card early.
			if sep != ' ' {
				continue
			}
		} else if !numRight(s, e) {
			continue
		}
		if cardOK(s[i:e]) {
			return e
		}
	}
	return -1
}

// cardOK reports whether the digits in b (separators skipped) are a plausible
// card number: issuer prefix and length, then Luhn.
func cardOK(b []byte) bool {
	var d [19]byte
	n := 0
	for _, c := range b {
		if isDigit(c) {
			if n == len(d) {
				return false
			}
			d[n] = c - '0'
			n++
		}
	}
	return n >= 13 && issuerOK(d[:n]) && luhn(d[:n])
}

// issuerOK checks the issuer identification number against the card
// networks' prefixes and lengths.
func issuerOK(d []byte) bool {
	n := len(d)
	p2 := int(d[0])*10 + int(d[1])
	p3 := p2*10 + int(d[2])
	p4 := p3*10 + int(d[3])
	switch d[0] {
	case 4: // Visa
		return n == 13 || n == 16 || n == 19
	case 5:
		if p2 >= 51 && p2 <= 55 { // Mastercard
			return n == 16
		}
		return n >= 16 // Maestro 50, 56-59
	case 2:
		if p4 >= 2221 && p4 <= 2720 { // Mastercard 2-series
			return n == 16
		}
		return p4 >= 2200 && p4 <= 2204 && n >= 16 // Mir
	case 3:
		switch {
		case p2 == 34 || p2 == 37: // American Express
			return n == 15
		case p3 >= 300 && p3 <= 305, p2 == 36, p2 == 38, p2 == 39: // Diners Club
			return n >= 14
		case p4 >= 3528 && p4 <= 3589: // JCB
			return n >= 16
		}
		return false
	case 6: // Discover, UnionPay, RuPay, Maestro
		return n >= 16
	}
	return false
}

// luhn reports whether the digits pass the Luhn (mod 10) check.
func luhn(d []byte) bool {
	sum := 0
	double := false
	for k := len(d) - 1; k >= 0; k-- {
		v := int(d[k])
		if double {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
		double = !double
	}
	return sum%10 == 0
}
