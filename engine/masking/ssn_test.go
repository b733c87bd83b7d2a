package masking

import (
	"testing"

	"github.com/interlockhq/interlock/engine/policy"
)

func TestSSN(t *testing.T) {
	testDetector(t, policy.DetectorSSN, []detCase{
		one("123-45-6789"),
		in("SSN: 123456789", "123456789"),
		in("ssn 123 45 6789", "123 45 6789"),
		in("Social Security Number 078-05-1120", "078-05-1120"),
		in("(555-12-3456)", "555-12-3456"),
		in("SS# 219099999", "219099999"),
		in("id=001-01-0001", "001-01-0001"),
		one("899-99-9999"),
		one("665-01-0001"),
		in(`{"ssn": "234567890"}`, "234567890"),
		in("a 667-45-6789 b 123-45-6789", "667-45-6789", "123-45-6789"),
	}, []detCase{
		none("000-12-3456"),
		none("666-12-3456"),
		none("900-12-3456"),
		none("999-12-3456"),
		none("123-00-4567"),
		none("123-45-0000"),
		none("123456789"),
		none("order 123 45 6789"),
		none("2023-01-15"),
		none("1123-45-6789"),
		none("123-45-67890"),
		none("123-45-6789-1"),
		none("abc123-45-6789"),
		none("SSN: 1234567890"),
		none("12-345-6789"),
		none("ssn 000000000"),
		none("1.123-45-6789"),
	})
}
