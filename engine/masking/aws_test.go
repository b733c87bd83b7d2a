package masking

import (
	"testing"

	"github.com/interlockhq/interlock/engine/policy"
)

func TestAWSKey(t *testing.T) {
	const id, secret = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	testDetector(t, policy.DetectorAWSKey, []detCase{
		one(id),
		one("ASIAY34FZKBOKMUTVV7A"),
		in("aws_access_key_id=AKIAIOSFODNN7EXAMPLE", id),
		in("aws_secret_access_key = "+secret, secret),
		in(id+","+secret, id, secret),
		in(`{"AccessKeyId": "`+id+`", "SecretAccessKey": "`+secret+`"}`, id, secret),
		in(secret+" "+id, secret, id),
		in("AWS_SECRET_ACCESS_KEY="+secret+"\n", secret),
		in("key: "+id+" secret: "+secret, id, secret),
		in("export SECRET="+"+Jalr/XUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEK1", "+Jalr/XUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEK1"),
		in("("+id+")", id),
	}, []detCase{
		none("AKIAIOSFODNN7EXAMPL"),
		none("AKIAIOSFODNN7EXAMPLEX"),
		none("AKIAiosfodnn7example"),
		none("XKIAIOSFODNN7EXAMPLE"),
		none("my AKIA key"),
		none(secret),
		none("secret da39a3ee5e6b4b0d3255bfef95601890afd80709"),
		none("secret " + secret + "A"),
		none("secret " + secret + "="),
		none("secret abcdefghijklmnopqrstuvwxyzabcdefghijklmn"),
		none("AKIAIOSFODNN7EXAMPLE_1"),
		none("path/" + secret + " secret"),
	})
}
