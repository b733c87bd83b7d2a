package masking

// US social security numbers.
//
// The dashed form AAA-GG-SSSS matches anywhere. Nine digits without dashes
// ("123456789") or with spaces ("123 45 6789") match only after a keyword in
// the 32 bytes before them: "ssn", "ss#", "social security" (any case).
// Without that context a nine-digit number is far more often an order id, a
// ZIP+4 or an amount than an SSN, and masking every one would make results
// unusable; SSNs stored undashed belong under a column rule.
//
// Valid numbers only: area 001–899 except 666, group 01–99, serial
// 0001–9999.

var ssnKeywords = [...]string{"ssn", "ss#", "social security"}

const ssnContext = 32

// ssnAt returns the end of the SSN starting at s[i], whose first run of
// digits is s[i:j], or -1.
func ssnAt(s []byte, i, j int) int {
	wl := j - i
	if wl == 3 && j+8 <= len(s) && s[j] == '-' && s[j+3] == '-' &&
		digitsAt(s, j+1, 2) && digitsAt(s, j+4, 4) {
		e := j + 8
		if numRight(s, e) && ssnOK(s[i:j], s[j+1:j+3], s[j+4:e]) {
			return e
		}
		return -1
	}
	// Undashed forms need a keyword before them.
	switch {
	case wl == 9:
		if numRight(s, j) && ssnOK(s[i:i+3], s[i+3:i+5], s[i+5:j]) && ssnKeywordBefore(s, i) {
			return j
		}
	case wl == 3 && j+8 <= len(s) && s[j] == ' ' && s[j+3] == ' ' &&
		digitsAt(s, j+1, 2) && digitsAt(s, j+4, 4):
		e := j + 8
		if numRight(s, e) && (e == len(s) || !(s[e] == ' ' && e+1 < len(s) && isDigit(s[e+1]))) &&
			ssnOK(s[i:j], s[j+1:j+3], s[j+4:e]) && ssnKeywordBefore(s, i) {
			return e
		}
	}
	return -1
}

// digitsAt reports whether s[p:p+n] are n digits not followed by another.
func digitsAt(s []byte, p, n int) bool {
	if p+n > len(s) {
		return false
	}
	for k := p; k < p+n; k++ {
		if !isDigit(s[k]) {
			return false
		}
	}
	return p+n == len(s) || !isDigit(s[p+n])
}

func ssnOK(area, group, serial []byte) bool {
	a := atoi(area)
	return a != 0 && a != 666 && a < 900 && atoi(group) != 0 && atoi(serial) != 0
}

func atoi(b []byte) int {
	n := 0
	for _, c := range b {
		n = n*10 + int(c-'0')
	}
	return n
}

func ssnKeywordBefore(s []byte, i int) bool {
	w := s[max(0, i-ssnContext):i]
	for _, kw := range ssnKeywords {
		if containsFold(w, kw) {
			return true
		}
	}
	return false
}
