package harness

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Netns is a private network namespace for one test, joined to the root
// namespace by a veth pair: a second "host" on a /30 of 10.213.0.0/16 that
// only the test's own traffic uses. Nothing is routed beyond the pair.
type Netns struct {
	Name     string     // ip netns name
	HostIf   string     // the veth end in the root namespace
	PeerIf   string     // the veth end inside the namespace
	HostAddr netip.Addr // address of HostIf
	PeerAddr netip.Addr // address of PeerIf
}

// NewNetns creates the namespace and the veth pair, picks a /30 that no
// interface of the root namespace uses, and deletes all of it at cleanup.
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	_, err := exec.LookPath("ip")
	Require(t, err == nil, "needs the ip command (apt-get install iproute2)")
	pid := os.Getpid()
	var n *Netns
	// A second namespace in the same test process gets a letter.
	for i := 0; n == nil; i++ {
		if i == 26 {
			t.Fatalf("no free network namespace name for pid %d", pid)
		}
		name := fmt.Sprintf("ilt%d", pid)
		if i > 0 {
			name += string(rune('a' + i - 1))
		}
		c := &Netns{Name: name, HostIf: name + "h", PeerIf: name + "n"}
		if !netnsTaken(c) {
			n = c
		}
	}
	n.HostAddr, n.PeerAddr = freeSubnet(t, pid)

	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", n.Name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", n.Name, err, out)
		}
	})
	ip("link", "add", n.HostIf, "type", "veth", "peer", "name", n.PeerIf)
	t.Cleanup(func() {
		// Deleting either end deletes the pair (deleting the namespace
		// would too, once nothing in it holds the peer).
		if _, err := net.InterfaceByName(n.HostIf); err == nil {
			if out, err := exec.Command("ip", "link", "del", n.HostIf).CombinedOutput(); err != nil {
				t.Errorf("ip link del %s: %v\n%s", n.HostIf, err, out)
			}
		}
	})
	ip("link", "set", n.PeerIf, "netns", n.Name)
	ip("addr", "add", n.HostAddr.String()+"/30", "dev", n.HostIf)
	ip("link", "set", n.HostIf, "up")
	ip("-n", n.Name, "addr", "add", n.PeerAddr.String()+"/30", "dev", n.PeerIf)
	ip("-n", n.Name, "link", "set", n.PeerIf, "up")
	ip("-n", n.Name, "link", "set", "lo", "up")
	return n
}

func netnsTaken(n *Netns) bool {
	if Exists(filepath.Join("/run/netns", n.Name)) {
		return true
	}
	_, err := net.InterfaceByName(n.HostIf)
	return err == nil
}

// freeSubnet picks a /30 of 10.213.0.0/16 derived from pid that overlaps
// no address of the root namespace, and returns its two host addresses.
func freeSubnet(t testing.TB, pid int) (host, peer netip.Addr) {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1<<14; i++ {
		k := (pid + i) % (1 << 14)
		base := netip.AddrFrom4([4]byte{10, 213, byte(k >> 6), byte(k&63) * 4})
		prefix := netip.PrefixFrom(base, 30)
		used := false
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Overlaps(prefix) {
				used = true
			}
		}
		if !used {
			return base.Next(), base.Next().Next()
		}
	}
	t.Fatal("no free /30 in 10.213.0.0/16")
	return
}

// Command returns cmd set up to run inside the namespace (ip netns exec).
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// NetnsPostgres is a throwaway PostgreSQL server on its own test host: a
// network namespace, reached from the root namespace at PeerAddr:Port.
type NetnsPostgres struct {
	Postgres
	Netns *Netns
}

// Addr is the server's address as the root namespace reaches it.
func (pg *NetnsPostgres) Addr() string {
	return netip.AddrPortFrom(pg.Netns.PeerAddr, uint16(pg.Port)).String()
}

// StartPostgresIn initialises a cluster like StartPostgres and starts it
// inside the namespace, listening on the namespace's address at port 5432
// with SCRAM authentication for connections from the root namespace's end
// of the pair. It is stopped and removed at cleanup.
func StartPostgresIn(t testing.TB, n *Netns) *NetnsPostgres {
	t.Helper()
	bin := PostgresBinDir()
	Require(t, bin != "", "needs PostgreSQL server binaries (apt-get install postgresql)")
	u, err := user.Lookup("postgres")
	Require(t, err == nil, "needs the postgres system user (apt-get install postgresql)")
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	base, err := os.MkdirTemp("", "interlock-pg-netns-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chown(base, uid, gid)
	pg := &NetnsPostgres{
		Postgres: Postgres{Bin: bin, Dir: filepath.Join(base, "data"), Port: 5432, Password: "interlock-test-pw"},
		Netns:    n,
	}
	pwfile := filepath.Join(base, "pw")
	os.WriteFile(pwfile, []byte(pg.Password+"\n"), 0o600)
	os.Chown(pwfile, uid, gid)

	run := func(cmd *exec.Cmd) {
		t.Helper()
		cmd.Dir = base
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
		}
	}
	run(exec.Command("runuser", "-u", "postgres", "--", filepath.Join(bin, "initdb"), "-D", pg.Dir, "-U", "postgres", "--pwfile", pwfile,
		"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"))
	conf := fmt.Sprintf("listen_addresses = '%s'\nport = %d\nunix_socket_directories = '%s'\n"+
		"fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\nshared_buffers = 128MB\n",
		n.PeerAddr, pg.Port, base)
	appendFile(t, filepath.Join(pg.Dir, "postgresql.conf"), conf)
	appendFile(t, filepath.Join(pg.Dir, "pg_hba.conf"), fmt.Sprintf("host all all %s/32 scram-sha-256\n", n.HostAddr))
	run(n.Command("runuser", "-u", "postgres", "--", filepath.Join(bin, "pg_ctl"), "-D", pg.Dir, "-l", filepath.Join(base, "log"), "-w", "-t", "30", "start"))
	t.Cleanup(func() {
		cmd := exec.Command("runuser", "-u", "postgres", "--", filepath.Join(bin, "pg_ctl"), "-D", pg.Dir, "-m", "immediate", "-w", "stop")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("stop postgres in %s: %v\n%s", n.Name, err, out)
		}
		os.RemoveAll(base)
	})
	return pg
}

func appendFile(t testing.TB, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}
