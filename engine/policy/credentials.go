package policy

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// ErrNoPassword is returned (wrapped) when the configured password source is
// missing or empty.
var ErrNoPassword = errors.New("no password")

// Password reads the secret from its source now, at dial time, so that a
// rotated secret is picked up without a policy reload. Errors name the
// source, never the secret. A single trailing newline (as left by editors
// and `echo`) is removed from files.
func (c Credentials) Password() (string, error) {
	switch {
	case c.PasswordEnv != "":
		v, ok := os.LookupEnv(c.PasswordEnv)
		if !ok || v == "" {
			return "", fmt.Errorf("read password from environment variable %s: %w (unset or empty)", c.PasswordEnv, ErrNoPassword)
		}
		return v, nil
	case c.PasswordFile != "":
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			// The *PathError names the file and the errno; it carries no
			// file content.
			return "", fmt.Errorf("read password: %w", err)
		}
		v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if v == "" {
			return "", fmt.Errorf("read password from file %s: %w (file is empty)", c.PasswordFile, ErrNoPassword)
		}
		return v, nil
	}
	return "", fmt.Errorf("read password: %w: neither password_env nor password_file is set", ErrNoPassword)
}
