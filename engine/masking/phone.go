package masking

// Telephone numbers.
//
// Three shapes match, read as groups of digits separated by single spaces,
// dashes or dots, one group possibly in parentheses:
//
//   - International: '+', then 8 to 15 digits (E.164), the first not 0, with
//     or without separators: "+4915112345678", "+1 (555) 123-4567",
//     "+44 (0)20 7946 0958". "00" instead of '+' counts too, with separators:
//     "0049 30 1234567".
//   - North American: "(555) 123-4567", "555-123-4567", "555.123.4567",
//     "1-800-555-0199": 3-3-4 digits, the area code starting with 2–9, one
//     kind of separator (the exchange is not checked: test data is full of
//     555-123-4567, and the 3-3-4 shape is distinctive enough).
//   - National with a trunk prefix: a first group of 2–5 digits starting
//     with a single 0, then groups of two or more digits, one kind of
//     separator, 9–12 digits in all: "020 7946 0958", "(030) 1234567",
//     "06-12345678", "01 23 45 67 89".
//
// Plain runs of digits without '+' are never phone numbers (they are ids and
// amounts far more often), nor are dates (too few digits, or not starting
// with 0), IP addresses and versions (dots between groups of one to three
// digits do not make a valid shape), card numbers (too many digits) and UUIDs
// (letters). A number inside a longer dash- or dot-joined sequence is not
// taken.

const maxPhoneGroups = 8

type phoneRun struct {
	n      int
	start  [maxPhoneGroups]int  // offset of group k's first digit
	digits [maxPhoneGroups]int  // digits in group k
	end    [maxPhoneGroups]int  // offset after group k (after its ')')
	sep    [maxPhoneGroups]byte // separator before group k (0: none)
	paren  int                  // group in parentheses, or -1
}

// phoneAt returns the end of the phone number starting at s[i] ('+', '(' or
// the first digit), or -1.
func phoneAt(s []byte, i int) int {
	plus := s[i] == '+'
	if i > 0 {
		if p := s[i-1]; plus || s[i] == '(' {
			if isWord(p) || p == '+' || p == ')' {
				return -1
			}
		} else if !numLeft(s, i) {
			return -1
		}
	}
	r := phoneRun{paren: -1}
	p := i
	if plus {
		p++
	}
	over := false
	var sep byte
	for total := 0; r.n < maxPhoneGroups; {
		q := p
		open := q < len(s) && s[q] == '('
		if open {
			if r.paren >= 0 {
				break
			}
			q++
		}
		st := q
		for q < len(s) && isDigit(s[q]) && q-st <= 15 {
			q++
		}
		gl := q - st
		if gl == 0 {
			break
		}
		if total+gl > 15 {
			over = true
			break
		}
		if open {
			if q >= len(s) || s[q] != ')' {
				break
			}
			q++
			r.paren = r.n
		}
		r.start[r.n], r.digits[r.n], r.end[r.n], r.sep[r.n] = st, gl, q, sep
		r.n++
		total += gl
		p, sep = q, 0
		if p < len(s) && (s[p] == ' ' || s[p] == '-' || s[p] == '.') {
			sep = s[p]
			p++
		}
		if p >= len(s) || !isDigit(s[p]) && s[p] != '(' {
			break
		}
		if sep == 0 && (s[p] == '(' || r.paren != r.n-1) {
			break
		}
	}
	if r.n == maxPhoneGroups {
		over = true
	}
	for m := r.n; m >= 1; m-- {
		if m < r.n && r.sep[m] != ' ' {
			continue // only a space may end a number before its run does
		}
		e := r.end[m-1]
		if m == r.n && over && !(e < len(s) && s[e] == ' ') {
			continue // the digits go on
		}
		if !phoneRight(s, e) {
			continue
		}
		if r.valid(s, m, plus) {
			return e
		}
	}
	return -1
}

func phoneRight(s []byte, e int) bool {
	if e >= len(s) {
		return true
	}
	switch c := s[e]; c {
	case '-', '.', '/', ':', ',':
		return e+1 >= len(s) || !isDigit(s[e+1])
	default:
		return !isWord(c) && c != '@'
	}
}

// valid checks the first m groups against the three shapes.
func (r *phoneRun) valid(s []byte, m int, plus bool) bool {
	total := 0
	for k := range m {
		total += r.digits[k]
	}
	first := s[r.start[0]]
	if plus {
		return total >= 8 && total <= 15 && first != '0'
	}
	if m < 2 {
		return false
	}
	if first == '0' {
		if s[r.start[0]+1] == '0' { // "00" international prefix
			return r.digits[0] >= 3 && s[r.start[0]+2] != '0' && total-2 >= 8 && total-2 <= 15
		}
		return r.trunk(m, total)
	}
	return r.nanp(s, m)
}

// trunk checks a national number with a trunk prefix.
func (r *phoneRun) trunk(m, total int) bool {
	if total < 9 || total > 12 || r.digits[0] < 2 || r.digits[0] > 5 || r.paren > 0 {
		return false
	}
	var want byte
	for k := 1; k < m; k++ {
		if r.digits[k] < 2 {
			return false
		}
		sp := r.sep[k]
		if r.paren == k-1 {
			if sp != 0 && sp != ' ' {
				return false
			}
			continue
		}
		if sp == 0 || want != 0 && sp != want {
			return false
		}
		want = sp
	}
	return true
}

// nanp checks a North American number: [1] NXX XXX XXXX.
func (r *phoneRun) nanp(s []byte, m int) bool {
	k := 0
	if r.digits[0] == 1 && s[r.start[0]] == '1' {
		k = 1
	}
	if m-k != 3 || r.digits[k] != 3 || r.digits[k+1] != 3 || r.digits[k+2] != 4 || s[r.start[k]] < '2' {
		return false
	}
	switch r.paren {
	case k: // (NXX) NXX-XXXX
		if k == 1 && r.sep[1] != ' ' && r.sep[1] != '-' {
			return false
		}
		sp := r.sep[k+2]
		return (r.sep[k+1] == 0 || r.sep[k+1] == ' ') && sp != 0
	case -1:
		sp := r.sep[k+1]
		return sp != 0 && r.sep[k+2] == sp && (k == 0 || r.sep[1] == sp)
	}
	return false
}
