// Package bpf holds Interlock's eBPF programs (redirect.c) and the Go
// bindings bpf2go generates from them. The generated object is committed, so
// building Interlock needs no clang; `make generate` rebuilds it and CI fails
// when the committed object differs from a fresh build.
//
// Loading these programs needs root (CAP_BPF, CAP_NET_ADMIN) and a kernel
// with bpf_link for cgroup programs (5.7 or newer); package redirect does
// the loading, attaching and pinning.
package bpf

//go:generate go tool bpf2go -tags linux -target bpfel -type addr_key -type egress_key -type agent_info -type conn_record Redirect redirect.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu
