package masking

import (
	"testing"

	"github.com/interlockhq/interlock/engine/policy"
)

func TestCard(t *testing.T) {
	testDetector(t, policy.DetectorCard, []detCase{
		one("4111111111111111"),
		in("card 4111 1111 1111 1111 exp", "4111 1111 1111 1111"),
		one("4111-1111-1111-1111"),
		in("Amex 3782 822463 10005", "3782 822463 10005"),
		one("5555555555554444"),
		one("2221000000000009"),
		one("30569309025904"),
		one("3530111333300000"),
		one("6011 0009 9013 9424"),
		one("4222222222222"),
		one("4000000000000000006"),
		in("4111 1111 1111 1111 12/27", "4111 1111 1111 1111"),
		in("(4111111111111111)", "4111111111111111"),
		in("pan=4012888888881881;", "4012888888881881"),
		in("cards 5105105105105100, 378282246310005.", "5105105105105100", "378282246310005"),
		one("2200000000000004"),
	}, []detCase{
		none("4111111111111112"),
		none("4111 1111 1111 1112"),
		none("1234567812345670"),     // Luhn-valid, no issuer starts with 1
		none("9999999999999995"),     // nor 9
		none("3700000000000007"),     // Amex prefix, 16 digits
		none("510000000000003"),      // Mastercard prefix, 15 digits
		none("40000000000002"),       // Visa, 14 digits
		none("2721000000000004"),     // past the Mastercard 2-series
		none("41111111111111111111"), // 20 digits
		none("3.4111111111111111"),
		none("x4111111111111111"),
		none("4111111111111111x"),
		none("550e8400-e29b-41d4-a716-446655440000"),
		none("4111-1111-1111-1111-1111"),
		none("2024-01-15 10:30:00"),
		none("4111 11 11 1111 1111"),
		none("order 1700000000000 at 1700000000000000000"),
	})
}

func TestLuhn(t *testing.T) {
	for s, want := range map[string]bool{"79927398713": true, "79927398710": false, "0": true, "18": true, "19": false} {
		d := make([]byte, len(s))
		for k := range s {
			d[k] = s[k] - '0'
		}
		if luhn(d) != want {
			t.Errorf("luhn(%s) = %v", s, !want)
		}
	}
}
