package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCredentialsPassword(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("INTERLOCK_TEST_PW", "from-env")
	t.Setenv("INTERLOCK_TEST_EMPTY", "")

	for _, tt := range []struct {
		name    string
		c       Credentials
		want    string
		wantErr string
	}{
		{"env", Credentials{PasswordEnv: "INTERLOCK_TEST_PW"}, "from-env", ""},
		{"file", Credentials{PasswordFile: file}, "s3cret", ""},
		{"unset env", Credentials{PasswordEnv: "INTERLOCK_TEST_UNSET_X"}, "", "environment variable INTERLOCK_TEST_UNSET_X"},
		{"empty env", Credentials{PasswordEnv: "INTERLOCK_TEST_EMPTY"}, "", "environment variable INTERLOCK_TEST_EMPTY"},
		{"missing file", Credentials{PasswordFile: filepath.Join(dir, "nope")}, "", filepath.Join(dir, "nope")},
		{"empty file", Credentials{PasswordFile: empty}, "", "file " + empty},
		{"nothing", Credentials{}, "", "neither password_env nor password_file"},
	} {
		got, err := tt.c.Password()
		if tt.wantErr == "" {
			if err != nil || got != tt.want {
				t.Errorf("%s: Password() = %q, %v", tt.name, got, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: error %v, want it to name %q", tt.name, err, tt.wantErr)
		}
		if tt.name != "missing file" && !errors.Is(err, ErrNoPassword) {
			t.Errorf("%s: error %v is not ErrNoPassword", tt.name, err)
		}
	}
}
