// Package e2e runs Interlock end to end: the real interlock binary, real
// BPF programs attached to a private cgroup subtree, a real PostgreSQL
// server, and real clients (psql, the test binary itself as a raw TCP
// client) started inside agent cgroups. The tests need root; they skip
// without it, and fail under CI=true.
package e2e
