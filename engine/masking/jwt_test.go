package masking

import (
	"strings"
	"testing"

	"github.com/interlockhq/interlock/engine/policy"
)

const (
	jwtHeader  = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
	jwtPayload = "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
	jwtSig     = "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
	testJWT    = jwtHeader + "." + jwtPayload + "." + jwtSig
)

func TestJWT(t *testing.T) {
	none256 := "eyJhbGciOiJub25lIn0"
	rs := "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0"
	jwe := "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ"
	testDetector(t, policy.DetectorJWT, []detCase{
		one(testJWT),
		in("Authorization: Bearer "+testJWT, testJWT),
		in("token="+testJWT+"&x=1", testJWT),
		in(`{"jwt":"`+testJWT+`"}`, testJWT),
		one(none256 + "." + jwtPayload + "."),
		in(none256+"."+jwtPayload+". end", none256+"."+jwtPayload+"."),
		one(rs + "." + jwtPayload + "." + strings.Repeat("Ab-_9", 60)),
		one(jwe + ".OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTCVJRgckCL9kiMT03JGeipsEdY3mx_etLbbWSrFr05kLzcSr4qKAq7YN7e9jwQRb23nfa6c9d-StnImGyFDbSv04uVuxIp5Zms1gNxKKK2Da14B8S4rzVRltdYwam_lDp5XnZAYpQdb76FdIKLaVmqgfwX7XWRxv2322i-vDxRfqNzo_tETKzpVLzfiwQyeyPGLBIO56YJ7eObdv0je81860ppamavo35UgoRdbYaBcoh9QcfylQr66oc6vFWXRcZ_ZT2LawVCWTIy3brGPi6UklfCpIMfIjf7iGdXKHzg.48V1_ALb6US04U3b.5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6jiSdiwkIr3ajwQzaBtQD_A.XFBoMYUZodetZdvTiFvSkQ"),
		in("a "+testJWT+" b "+testJWT, testJWT, testJWT),
		one("eyJhbGciOiJFUzI1NiJ9.e30.sig"),
		in("("+testJWT+")", testJWT),
	}, []detCase{
		none("eyJ0eXAiOiJKV1QifQ." + jwtPayload + "." + jwtSig),  // no alg
		none("eyJhbGciOiJIUzI1NiI." + jwtPayload + "." + jwtSig), // header not JSON
		none(jwtHeader + "." + jwtPayload),
		none(jwtHeader),
		none(testJWT + ".extra"),
		none(jwtHeader + ".." + jwtSig),
		none("x" + testJWT),
		none("eyJhbGci.x.y"),
		none("eyJ!!!.x.y"),
		none("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9$.x.y"),
		none("eyeJ.a.b"),
		none("the eyJ word"),
	})
}
