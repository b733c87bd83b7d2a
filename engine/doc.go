// Package engine is the user-space half of Interlock's data path: it accepts
// the connections the kernel redirected, recovers who is calling (agent,
// roles, cgroup, pid, executable) and where they meant to go, and hands the
// session to the protocol handler of the target, which enforces the policy.
//
// The engine owns its listeners and every session's pair of sockets. Its
// upstream dials carry SO_MARK (needs CAP_NET_ADMIN), which the kernel
// programs treat as a second loop guard besides the engine never running in
// an agent cgroup.
package engine
