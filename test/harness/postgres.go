package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a throwaway PostgreSQL server on a loopback port.
type Postgres struct {
	Bin  string // directory of initdb, pg_ctl, postgres
	Dir  string // data directory
	Port int
	// Superuser is "postgres"; its password is Password (SCRAM for TCP).
	Password string
}

// PostgresBinDir finds Debian's PostgreSQL server binaries (the newest
// major version installed), or "" when none is.
func PostgresBinDir() string {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	best, bestVer := "", 0
	for _, m := range matches {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(m))))
		if v > bestVer {
			best, bestVer = filepath.Dir(m), v
		}
	}
	return best
}

// StartPostgres initialises a cluster in a temporary directory owned by the
// postgres system user (the server refuses to run as root), listening on
// 127.0.0.1 and ::1 at a free port, with password authentication over TCP
// (md5 in pg_hba.conf: SCRAM for SCRAM-stored passwords, md5 for md5 ones). It
// is stopped and removed at cleanup.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	bin := PostgresBinDir()
	Require(t, bin != "", "needs PostgreSQL server binaries (apt-get install postgresql)")
	u, err := user.Lookup("postgres")
	Require(t, err == nil, "needs the postgres system user (apt-get install postgresql)")
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	base, err := os.MkdirTemp("", "interlock-pg-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chown(base, uid, gid)
	pg := &Postgres{Bin: bin, Dir: filepath.Join(base, "data"), Port: FreePort(t), Password: "interlock-test-pw"}
	pwfile := filepath.Join(base, "pw")
	os.WriteFile(pwfile, []byte(pg.Password+"\n"), 0o600)
	os.Chown(pwfile, uid, gid)

	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--"}, args...)...)
		cmd.Dir = base
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run(filepath.Join(bin, "initdb"), "-D", pg.Dir, "-U", "postgres", "--pwfile", pwfile,
		"--auth-local=trust", "--auth-host=md5", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
	conf := fmt.Sprintf("listen_addresses = '127.0.0.1,127.0.0.2,::1'\nport = %d\nunix_socket_directories = '%s'\n"+
		"fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\nshared_buffers = 128MB\n",
		pg.Port, base)
	f, err := os.OpenFile(filepath.Join(pg.Dir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(conf)
	f.Close()
	run(filepath.Join(bin, "pg_ctl"), "-D", pg.Dir, "-l", filepath.Join(base, "log"), "-w", "-t", "30", "start")
	t.Cleanup(func() {
		cmd := exec.Command("runuser", "-u", "postgres", "--", filepath.Join(bin, "pg_ctl"), "-D", pg.Dir, "-m", "immediate", "-w", "stop")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("stop postgres: %v\n%s", err, out)
		}
		os.RemoveAll(base)
	})
	return pg
}

// Addr is the server's IPv4 address.
func (pg *Postgres) Addr() string { return fmt.Sprintf("127.0.0.1:%d", pg.Port) }

// DSN is a libpq URL for the superuser over TCP to host (an IP literal).
func (pg *Postgres) DSN(host string) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("postgres://postgres:%s@%s:%d/postgres?sslmode=disable", pg.Password, host, pg.Port)
}

// CreateDatabase creates an empty database on the server and returns the
// superuser's libpq URL for it (over IPv4 loopback).
func (pg *Postgres) CreateDatabase(t testing.TB, name string) string {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, pg.DSN("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	return fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/%s?sslmode=disable", pg.Password, pg.Port, name)
}

// FreePort returns a currently free TCP port on loopback.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// WaitFor polls cond until it is true or timeout passes.
func WaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
