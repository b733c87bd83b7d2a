//go:build ignore

// SPDX-License-Identifier: GPL-2.0
//
// Interlock's kernel side: transparent redirect of agent connections.
//
// Attached to one cgroup (the cgroup2 root in production, a test subtree in
// tests); every program runs for every process below it and first decides
// whether the calling task belongs to an agent:
//
//   cgroup/connect4, cgroup/connect6  agent → target: remember the original
//                                     destination by socket cookie and
//                                     rewrite it to the engine's listener.
//                                     agent → anything else: egress policy.
//   cgroup/sendmsg4, cgroup/sendmsg6  egress policy for unconnected UDP
//                                     (sendto), which never calls connect.
//   cgroup/sock_create                egress: deny agents get TCP and UDP
//                                     sockets only (no ping, SCTP, raw).
//   cgroup/bind4, cgroup/bind6        only the engine binds its listener
//                                     ports.
//   cgroup/getpeername4|6             the agent sees the original peer.
//
// The engine finds a connection's record by the agent socket's cookie,
// which it reads with a sock_diag lookup of its accepted connection's peer
// (redirect/sockdiag.go), and deletes it when the session ends. There is
// deliberately no sockops program: once any sockops program is attached
// anywhere, every TCP socket on the host pays about 1 µs per connection for
// the kernel's sockops callbacks (measured), where the lookup costs each
// redirected connection 3 µs and nobody else anything.
//
// Verifier traps (kernel 6.18, clang 14), see the redirect prototype:
// read ctx fields into locals before branching on them, and
// bpf_sk_cgroup_id is not available to cgroup_sock_addr programs.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1

// Deepest cgroup level searched for an agent label. Deeper cgroups still
// match through their ancestors up to this level.
#define MAX_CGROUP_DEPTH 32

#define SYS_REJECT 0
#define SYS_PROCEED 1

char __license[] SEC("license") = "GPL";

// Set by the loader before the programs are loaded.
volatile const __u16 engine_port4 = 0; // engine listener on 127.0.0.1
volatile const __u16 engine_port6 = 0; // engine listener on ::1
volatile const __u32 engine_mark = 0;  // SO_MARK on the engine's own dials

// agent_info.flags
#define AGENT_EGRESS_ALLOW 1

struct agent_info {
	__u32 agent_id;
	__u32 flags;
};

// An IPv4 or IPv6 address and a port. IPv4 is stored v4-mapped
// (::ffff:a.b.c.d) so that connect4 and a v4-mapped connect6 find the same
// target, network byte order.
struct addr_key {
	__u32 ip6[4];
	__u16 port; // host byte order
	__u16 pad;
};

struct egress_key {
	__u32 agent_id;
	__u32 ip6[4];
	__u16 port; // host byte order; 0 = any port
	__u16 pad;
};

struct conn_record {
	__u32 orig_ip6[4]; // original destination as the agent gave it (v4 mapped)
	__u16 orig_port;   // host byte order
	__u16 family;      // family of the agent's socket
	__u32 target_id;
	__u32 agent_id;
	__u32 pid;         // tgid of the connecting task
	__u64 cgroup_id;   // the connecting task's own cgroup
	__u64 netns_cookie;
	__u64 cookie;      // the agent socket's cookie
};

enum verdict {
	V_REDIRECTED = 0,
	V_EGRESS_DENIED,
	V_EGRESS_ALLOWED,
	V_ENGINE_PORT_DENIED,
	V_LOOP_GUARD,
	V_ENGINE_BIND_DENIED,
	// A slot of the former sockops program's counters, kept so that the
	// pinned map keeps its size across an upgrade.
	V_RESERVED_6,
	V_MAX,
};

// Maps live in bpffs (pinned by name) so that a restarted engine, whose new
// programs replace the old ones in the pinned links, sees the same state.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); // cgroup v2 id (the directory's inode number)
	__type(value, struct agent_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} agent_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct addr_key);
	__type(value, __u32); // target id
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct egress_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} egress_allow SEC(".maps");

// Ports of the engine's own API, approval and metrics listeners: never
// reachable from an agent, on any address, whatever its egress mode.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16); // host byte order
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} engine_ports SEC(".maps");

// One record per redirected connection, by the agent socket's cookie.
// Cookies are never reused within a boot, so a record can only ever be
// found for the socket it was made for. The engine deletes a record when
// its session ends; records of connections it never accepted (engine down)
// leave through LRU eviction.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); // socket cookie
	__type(value, struct conn_record);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conn_by_cookie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, V_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} verdicts SEC(".maps");

static __always_inline void count(__u32 v)
{
	__u64 *n = bpf_map_lookup_elem(&verdicts, &v);
	if (n)
		*n += 1; // per-CPU slot: no atomics needed
}

// Levels of the cgroup tree that hold no labelled cgroup, one bit per
// level: find_agent skips them, so that a process outside every agent
// subtree usually costs one helper call. Pinned, so that it survives a
// restart together with agent_cgroups; 0 (a fresh map) skips nothing.
// User space clears a level's bit before it adds a label there and sets it
// only after the last label of that level is gone.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} unlabelled_levels SEC(".maps");

// find_agent returns the label of the nearest labelled ancestor (or the
// task's own cgroup). Nested cgroups inherit the label; a deeper label
// overrides a shallower one. Level 0 is the root and is never an agent.
static __always_inline struct agent_info *find_agent(void)
{
	struct agent_info *found = NULL;
	__u32 zero = 0, skip = 0;
	__u32 *s = bpf_map_lookup_elem(&unlabelled_levels, &zero);
	if (s)
		skip = *s;
	for (int level = 1; level < MAX_CGROUP_DEPTH; level++) {
		if ((~skip) >> level == 0)
			break; // no labels at this level or deeper
		if (skip & (1u << level))
			continue;
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);
		if (id == 0)
			break; // deeper than the task's cgroup
		struct agent_info *a = bpf_map_lookup_elem(&agent_cgroups, &id);
		if (a)
			found = a;
	}
	return found;
}

static __always_inline int egress_allowed(struct agent_info *a, struct addr_key *dst)
{
	if (a->flags & AGENT_EGRESS_ALLOW)
		return 1;
	struct egress_key k = {};
	k.agent_id = a->agent_id;
	k.ip6[0] = dst->ip6[0];
	k.ip6[1] = dst->ip6[1];
	k.ip6[2] = dst->ip6[2];
	k.ip6[3] = dst->ip6[3];
	k.port = dst->port;
	if (bpf_map_lookup_elem(&egress_allow, &k))
		return 1;
	k.port = 0;
	if (bpf_map_lookup_elem(&egress_allow, &k))
		return 1;
	return 0;
}

// decide is shared by the connect and sendmsg hooks. It returns the target
// id (> 0) when the connection must be redirected, 0 when it may proceed
// untouched, and -1 when it must fail with EPERM. 64-bit, so that every
// 32-bit target id stays positive.
static __always_inline __s64 decide(struct bpf_sock_addr *ctx, struct addr_key *dst,
				  struct agent_info **agent)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 0;
	__u32 mark = sk->mark;
	__u32 type = ctx->type;

	struct agent_info *a = find_agent();
	if (!a) {
		if (engine_mark != 0 && mark == engine_mark)
			count(V_LOOP_GUARD);
		return 0;
	}
	// An agent's socket is decided whatever its mark: a process with
	// CAP_NET_RAW (enough for SO_MARK since Linux 5.17) could otherwise
	// pass as the engine. The engine never runs in an agent cgroup; were
	// it moved into one, it refuses its own redirected dials.
	*agent = a;

	if (bpf_map_lookup_elem(&engine_ports, &dst->port)) {
		count(V_ENGINE_PORT_DENIED);
		return -1;
	}
	if (type == SOCK_STREAM) {
		__u32 *target = bpf_map_lookup_elem(&targets, dst);
		if (target)
			return *target;
	}
	if (egress_allowed(a, dst)) {
		count(V_EGRESS_ALLOWED);
		return 0;
	}
	count(V_EGRESS_DENIED);
	return -1;
}

static __always_inline void remember(struct bpf_sock_addr *ctx, struct addr_key *dst,
				     struct agent_info *a, __u32 target, __u16 family)
{
	struct conn_record r = {};
	r.orig_ip6[0] = dst->ip6[0];
	r.orig_ip6[1] = dst->ip6[1];
	r.orig_ip6[2] = dst->ip6[2];
	r.orig_ip6[3] = dst->ip6[3];
	r.orig_port = dst->port;
	r.family = family;
	r.target_id = target;
	r.agent_id = a->agent_id;
	r.pid = bpf_get_current_pid_tgid() >> 32;
	r.cgroup_id = bpf_get_current_cgroup_id();
	r.netns_cookie = bpf_get_netns_cookie(ctx);
	r.cookie = bpf_get_socket_cookie(ctx);
	bpf_map_update_elem(&conn_by_cookie, &r.cookie, &r, BPF_ANY);
}

static __always_inline void key4(struct bpf_sock_addr *ctx, struct addr_key *k)
{
	__u32 ip = ctx->user_ip4;
	__u32 port = ctx->user_port;
	k->ip6[2] = bpf_htonl(0x0000ffff);
	k->ip6[3] = ip;
	k->port = bpf_ntohs((__u16)port);
}

static __always_inline void key6(struct bpf_sock_addr *ctx, struct addr_key *k)
{
	__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1];
	__u32 a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
	__u32 port = ctx->user_port;
	k->ip6[0] = a0;
	k->ip6[1] = a1;
	k->ip6[2] = a2;
	k->ip6[3] = a3;
	k->port = bpf_ntohs((__u16)port);
}

SEC("cgroup/connect4")
int interlock_connect4(struct bpf_sock_addr *ctx)
{
	struct addr_key dst = {};
	struct agent_info *a = NULL;
	key4(ctx, &dst);
	__s64 v = decide(ctx, &dst, &a);
	if (v < 0)
		return SYS_REJECT;
	if (v == 0 || !a)
		return SYS_PROCEED;
	remember(ctx, &dst, a, (__u32)v, AF_INET);
	ctx->user_ip4 = bpf_htonl(0x7f000001);
	ctx->user_port = bpf_htons(engine_port4);
	count(V_REDIRECTED);
	return SYS_PROCEED;
}

SEC("cgroup/connect6")
int interlock_connect6(struct bpf_sock_addr *ctx)
{
	struct addr_key dst = {};
	struct agent_info *a = NULL;
	key6(ctx, &dst);
	__s64 v = decide(ctx, &dst, &a);
	if (v < 0)
		return SYS_REJECT;
	if (v == 0 || !a)
		return SYS_PROCEED;
	remember(ctx, &dst, a, (__u32)v, AF_INET6);
	int mapped = dst.ip6[0] == 0 && dst.ip6[1] == 0 && dst.ip6[2] == bpf_htonl(0x0000ffff);
	ctx->user_ip6[0] = 0;
	ctx->user_ip6[1] = 0;
	if (mapped) {
		// A dual-stack socket reaching an IPv4 target: stay v4-mapped,
		// land on the engine's IPv4 listener.
		ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
		ctx->user_ip6[3] = bpf_htonl(0x7f000001);
		ctx->user_port = bpf_htons(engine_port4);
	} else {
		ctx->user_ip6[2] = 0;
		ctx->user_ip6[3] = bpf_htonl(1);
		ctx->user_port = bpf_htons(engine_port6);
	}
	count(V_REDIRECTED);
	return SYS_PROCEED;
}

// Unconnected datagrams (sendto/sendmsg with an address) bypass connect();
// apply the same egress policy. Datagrams are never redirected.
SEC("cgroup/sendmsg4")
int interlock_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct addr_key dst = {};
	struct agent_info *a = NULL;
	key4(ctx, &dst);
	return decide(ctx, &dst, &a) < 0 ? SYS_REJECT : SYS_PROCEED;
}

// cgroup/sock_create: an agent with egress: deny may open TCP and UDP
// sockets only (and MPTCP, which the connect hooks see like TCP). The
// connect and sendmsg hooks run for those; ping sockets (ICMP echo from
// unprivileged users where net.ipv4.ping_group_range allows it, the
// systemd default), SCTP, raw sockets and others would send without them.
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_MPTCP 262
#define SOCK_DGRAM 2

SEC("cgroup/sock_create")
int interlock_sock_create(struct bpf_sock *ctx)
{
	__u32 type = ctx->type;
	__u32 protocol = ctx->protocol;

	if (type == SOCK_STREAM && (protocol == 0 || protocol == IPPROTO_TCP || protocol == IPPROTO_MPTCP))
		return SYS_PROCEED;
	if (type == SOCK_DGRAM && (protocol == 0 || protocol == IPPROTO_UDP))
		return SYS_PROCEED;
	struct agent_info *a = find_agent();
	if (!a || (a->flags & AGENT_EGRESS_ALLOW))
		return SYS_PROCEED;
	count(V_EGRESS_DENIED);
	return SYS_REJECT;
}

// The engine's cgroup, written by the daemon before it binds its ports
// (pinned: a restarted daemon writes it before the programs it replaces
// check its binds). 0: not known yet.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} engine_cgroup SEC(".maps");

// cgroup/bind4|6: while the daemon is down, the pinned connect hooks keep
// sending agents' target connections to the engine's listener ports, to be
// refused. Nobody else may listen there and receive them, nor on the
// engine's API and metrics ports: only tasks in the engine's cgroup bind
// those ports, on any address. (A mark is no proof: CAP_NET_RAW is enough
// to set one since Linux 5.17.) Before the daemon has written its cgroup,
// the engine's mark stands in.
static __always_inline int bind_allowed(struct bpf_sock_addr *ctx)
{
	__u32 port = ctx->user_port;
	__u16 p = bpf_ntohs((__u16)port);
	if (p == 0)
		return SYS_PROCEED;
	if (p != engine_port4 && p != engine_port6 && !bpf_map_lookup_elem(&engine_ports, &p))
		return SYS_PROCEED;
	__u32 zero = 0;
	__u64 *cg = bpf_map_lookup_elem(&engine_cgroup, &zero);
	if (cg && *cg != 0) {
		if (bpf_get_current_cgroup_id() == *cg)
			return SYS_PROCEED;
	} else {
		struct bpf_sock *sk = ctx->sk;
		if (sk) {
			__u32 mark = sk->mark;
			if (engine_mark != 0 && mark == engine_mark)
				return SYS_PROCEED;
		}
	}
	count(V_ENGINE_BIND_DENIED);
	return SYS_REJECT;
}

SEC("cgroup/bind4")
int interlock_bind4(struct bpf_sock_addr *ctx)
{
	return bind_allowed(ctx);
}

SEC("cgroup/bind6")
int interlock_bind6(struct bpf_sock_addr *ctx)
{
	return bind_allowed(ctx);
}

SEC("cgroup/sendmsg6")
int interlock_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct addr_key dst = {};
	struct agent_info *a = NULL;
	key6(ctx, &dst);
	return decide(ctx, &dst, &a) < 0 ? SYS_REJECT : SYS_PROCEED;
}

// redirected_port reports whether a peer port (network byte order) is one
// of the engine's listeners. Every redirected socket's real peer is; other
// sockets leave the hooks here without a socket cookie being made or a map
// being read, which is most of what these programs cost a host's other
// processes. A false positive only means the full lookup runs.
static __always_inline int redirected_port(__u32 port_be)
{
	__u16 p = (__u16)port_be;
	return p == bpf_htons(engine_port4) || p == bpf_htons(engine_port6);
}

SEC("cgroup/getpeername4")
int interlock_getpeername4(struct bpf_sock_addr *ctx)
{
	if (!redirected_port(ctx->user_port))
		return 1;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct conn_record *r = bpf_map_lookup_elem(&conn_by_cookie, &cookie);
	if (!r)
		return 1;
	ctx->user_ip4 = r->orig_ip6[3];
	ctx->user_port = bpf_htons(r->orig_port);
	return 1;
}

SEC("cgroup/getpeername6")
int interlock_getpeername6(struct bpf_sock_addr *ctx)
{
	if (!redirected_port(ctx->user_port))
		return 1;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct conn_record *r = bpf_map_lookup_elem(&conn_by_cookie, &cookie);
	if (!r)
		return 1;
	ctx->user_ip6[0] = r->orig_ip6[0];
	ctx->user_ip6[1] = r->orig_ip6[1];
	ctx->user_ip6[2] = r->orig_ip6[2];
	ctx->user_ip6[3] = r->orig_ip6[3];
	ctx->user_port = bpf_htons(r->orig_port);
	return 1;
}
