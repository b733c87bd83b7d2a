package masking

// International bank account numbers.
//
// An IBAN is a country code, two check digits and the national account
// number (upper-case letters and digits), with exactly the length the
// country's format has, written in one run ("DE89370400440532013000") or in
// groups of four separated by single spaces ("DE89 3704 0044 0532 0130 00").
// Its ISO 7064 mod-97 check must hold, so a mistyped or made-up number is not
// masked. Lower-case IBANs are not recognised.

// ibanLengths are the IBAN lengths of the SWIFT IBAN registry, followed by
// national IBAN-like formats used outside it (mostly Africa; mod-97 keeps
// them as precise as the rest).
const ibanLengths = "" +
	"AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 " +
	"CY28 CZ24 DE22 DJ27 DK18 DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 " +
	"GE22 GI23 GL18 GR27 GT28 HN28 HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 " +
	"KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 MC27 MD24 ME22 MK19 MN20 " +
	"MR27 MT31 MU30 NI28 NL18 NO15 OM23 PK24 PL28 PS29 PT25 QA29 RO24 RS22 " +
	"RU33 SA24 SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 SV28 TL23 TN24 TR26 " +
	"UA29 VA22 VG24 XK20 YE30 " +
	"AO25 BF28 BJ28 CF27 CG27 CI28 CM27 CV25 DZ26 GA27 GQ27 GW25 IR26 KM27 " +
	"MA28 MG27 ML28 MZ25 NE28 SN28 TD27 TG28"

var ibanLen = func() (t [26 * 26]uint8) {
	for k := 0; k+4 <= len(ibanLengths); k += 5 {
		e := ibanLengths[k : k+4]
		t[int(e[0]-'A')*26+int(e[1]-'A')] = (e[2]-'0')*10 + e[3] - '0'
	}
	return t
}()

const maxIBAN = 34

// ibanAt returns the end of the IBAN starting at s[i] (two upper-case letters
// and two digits, already checked), or -1.
func ibanAt(s []byte, i int) int {
	n := int(ibanLen[int(s[i]-'A')*26+int(s[i+1]-'A')])
	if n == 0 {
		return -1
	}
	var b [maxIBAN]byte
	spaced := i+4 < len(s) && s[i+4] == ' '
	k, p := 0, i
	for k < n && p < len(s) {
		c := s[p]
		if spaced && k > 0 && k%4 == 0 && s[p-1] != ' ' {
			// A group of four ends here.
			if c != ' ' || p+1 >= len(s) || !isUpper(s[p+1]) && !isDigit(s[p+1]) {
				break
			}
			p++
			continue
		}
		if !isUpper(c) && !isDigit(c) {
			break
		}
		b[k] = c
		k++
		p++
	}
	if k != n || !wordRight(s, p) || !mod97(b[:n]) {
		return -1
	}
	return p
}

// mod97 reports whether the IBAN in b passes the ISO 7064 MOD 97-10 check:
// with its first four characters moved to the end and letters read as
// 10..35, the number is 1 modulo 97.
func mod97(b []byte) bool {
	r := 0
	for k := range b {
		c := b[(k+4)%len(b)]
		if isDigit(c) {
			r = (r*10 + int(c-'0')) % 97
		} else {
			r = (r*100 + int(c-'A') + 10) % 97
		}
	}
	return r == 1
}
