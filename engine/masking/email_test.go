package masking

import (
	"strings"
	"testing"

	"github.com/interlockhq/interlock/engine/policy"
)

func TestEmail(t *testing.T) {
	long := strings.Repeat("a", 65)
	testDetector(t, policy.DetectorEmail, []detCase{
		in("contact alice@example.com today", "alice@example.com"),
		in("<bob.smith+tag@mail.example.co.uk>", "bob.smith+tag@mail.example.co.uk"),
		in("mailto:carol_99@sub-domain.example.org", "carol_99@sub-domain.example.org"),
		in("Write to dave@example.com.", "dave@example.com"),
		in("x,EVE@EXAMPLE.COM,y", "EVE@EXAMPLE.COM"),
		one("jörg@bücher.de"),
		one("user%foo@example.net"),
		one("a@b.co"),
		in("Key (email)=(a@b.com) already exists.", "a@b.com"),
		in("(frank@example.xn--p1ai)", "frank@example.xn--p1ai"),
		in("two: a@x.io and b@y.io", "a@x.io", "b@y.io"),
		in(`{"email":"g@h.dev"}`, "g@h.dev"),
		in("...leading.dots@example.com", "leading.dots@example.com"),
		in("https://user:pass@host.example.com/path", "pass@host.example.com"),
		in(strings.Repeat("a", 64)+"@example.com", strings.Repeat("a", 64)+"@example.com"),
		one("4111111111111111@example.com"),
	}, []detCase{
		none("user@localhost"),
		none("npm install pkg@1.2.3"),
		none("ssh git@10.0.0.1"),
		none("@example.com"),
		none("alice@"),
		none("alice@example"),
		none("alice@example.c"),
		none("alice@-example.com"),
		none("alice@example-.com"),
		none("hello @ world.com"),
		none("a@b..com"),
		none("name@[10.0.0.1]"),
		none(long + "@example.com"),
		none("...@example.com"),
		none("Price: 5 @ $3.00"),
		none("alice@example.c0m"),
		none("postgres://app@db.example.com:5432/app"),
	})
}
