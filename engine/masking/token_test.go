package masking

import (
	"strings"
	"testing"

	"github.com/interlockhq/interlock/engine/policy"
)

func TestAPIToken(t *testing.T) {
	b36 := "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5"
	testDetector(t, policy.DetectorAPIToken, []detCase{
		one("ghp_" + b36),
		in("GITHUB_TOKEN=gho_"+b36, "gho_"+b36),
		one("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab"),
		one("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
		in("Bearer sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
		one("rk_live_51H8abcDEFghiJKLmnoPQRstu"),
		one("pk_live_51H8abcDEFghiJKLmnoPQRstu"),
		one("sk-proj-" + b36 + "_" + b36),
		one("AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"),
		one("npm_" + b36),
		one("glpat-xY3zAbCdEf12GhIjKlMn"),
		one("hf_" + b36),
		one("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"),
		one("shpat_" + strings.Repeat("a1b2", 8)),
		one("dop_v1_" + strings.Repeat("0a1b", 16)),
		in(`"token": "ghs_`+b36+`"`, "ghs_"+b36),
	}, []detCase{
		none("ghp_short1"),
		none("xoxb-your-token-here"),
		none("sk_live_"),
		none("sk-learn-is-a-machine-learning-library-for-python"),
		none("my_ghp_" + b36),
		none("ghp_" + strings.Repeat("abcdef", 6)),
		none("AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"),
		none("sk_live_abc"),
		none("github_pat_short"),
		none("npm_install"),
		none("ghp_" + b36 + "@example.com"),
		none("dop_v1_" + strings.Repeat("0a1b", 15)),
		none("xghp_" + b36),
	})
}
