package masking

import (
	"testing"

	"github.com/interlockhq/interlock/engine/policy"
)

func TestPEM(t *testing.T) {
	body := "\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF0qFJ4ZhIbjMUO1xK5Hq\nAbCd==\n"
	block := func(label string) string {
		return "-----BEGIN " + label + "-----" + body + "-----END " + label + "-----"
	}
	testDetector(t, policy.DetectorPEM, []detCase{
		one(block("RSA PRIVATE KEY")),
		one(block("PRIVATE KEY")),
		one(block("EC PRIVATE KEY")),
		one(block("OPENSSH PRIVATE KEY")),
		one(block("ENCRYPTED PRIVATE KEY")),
		one(block("DSA PRIVATE KEY")),
		one(block("PGP PRIVATE KEY BLOCK")),
		in("key:\n"+block("RSA PRIVATE KEY")+"\ncert follows", block("RSA PRIVATE KEY")),
		one("-----BEGIN PRIVATE KEY-----" + body + "truncated"),
		one(`-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----`),
		one("-----BEGIN RSA PRIVATE KEY-----" + body + "-----END PRIVATE KEY-----\nMore\n-----END RSA PRIVATE KEY-----"),
		in(block("EC PRIVATE KEY")+" and "+block("PRIVATE KEY"), block("EC PRIVATE KEY"), block("PRIVATE KEY")),
	}, []detCase{
		none(block("CERTIFICATE")),
		none(block("PUBLIC KEY")),
		none(block("RSA PUBLIC KEY")),
		none("BEGIN RSA PRIVATE KEY"),
		none("------BEGIN PRIVATE KEY-----"),
		none("-----BEGIN private key-----"),
		none("-----BEGIN PRIVATE KEY"),
		none("-----END PRIVATE KEY-----"),
		none("--- BEGIN PRIVATE KEY ---"),
		none(block("SSH2 PUBLIC KEY")),
		none(block("X509 CRL")),
		none("-----BEGIN  -----"),
	})
}
