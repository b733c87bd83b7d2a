// Package redirect loads Interlock's eBPF programs, attaches them to a
// cgroup with bpf_link, pins links and maps in bpffs, and keeps the kernel's
// view of agents, targets and egress rules in step with the policy.
//
// Lifetime: links and maps are pinned under the pin directory
// (/sys/fs/bpf/interlock by default) and outlive the process on purpose.
// While no engine listens, agent connections to targets are redirected to a
// closed port and refused: Interlock fails closed. A restarted engine finds
// the pinned links and swaps in its freshly loaded programs atomically
// (link.Update); Uninstall removes the pins, which detaches everything.
//
// Privilege: loading and attaching needs root (CAP_BPF, CAP_NET_ADMIN and
// CAP_SYS_ADMIN for bpffs and cgroup xattrs) and a kernel with cgroup
// bpf_link support (5.7 or newer); cgroup/getpeername needs 5.8.
package redirect
