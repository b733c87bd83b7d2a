package masking

import (
	"testing"

	"github.com/interlockhq/interlock/engine/policy"
)

func TestIBAN(t *testing.T) {
	testDetector(t, policy.DetectorIBAN, []detCase{
		one("DE89370400440532013000"),
		one("GB29NWBK60161331926819"),
		one("FR1420041010050500013M02606"),
		one("NL91ABNA0417164300"),
		one("BE68539007547034"),
		one("CH9300762011623852957"),
		one("NO9386011117947"),
		one("MT84MALT011000012345MTLCAST001S"),
		one("BR9700360305000010009795493P1"),
		in("IBAN: DE89 3704 0044 0532 0130 00 (EUR)", "DE89 3704 0044 0532 0130 00"),
		in("to GB29 NWBK 6016 1331 9268 19.", "GB29 NWBK 6016 1331 9268 19"),
		in("FR14 2004 1010 0505 0001 3M02 606,PL61109010140000071219812874", "FR14 2004 1010 0505 0001 3M02 606", "PL61109010140000071219812874"),
	}, []detCase{
		none("DE89370400440532013001"),
		none("GB28NWBK60161331926819"),
		none("DE8937040044053201300"),
		none("DE893704004405320130001"),
		none("XX89370400440532013000"),
		none("de89370400440532013000"),
		none("DE89 3704 0044 0532 0130 01"),
		none("ISBN 9780306406157"),
		none("US12345678901234567890"),
		none("DE89-3704-0044-0532-0130-00"),
		none("ADE89370400440532013000"),
		none("DE89 37040044 0532013000"),
		none("DE89370400440532013000X"),
	})
}

func TestIBANTable(t *testing.T) {
	n := 0
	for _, l := range ibanLen {
		if l != 0 {
			n++
			if l < 15 || l > maxIBAN {
				t.Errorf("length %d out of range", l)
			}
		}
	}
	if n != (len(ibanLengths)+1)/5 {
		t.Errorf("%d countries in the table, %d in the list", n, (len(ibanLengths)+1)/5)
	}
}
