// Package harness holds the fixtures Interlock's privileged tests share:
// a skip-or-fail gate for root and BPF, a private cgroup subtree, a private
// bpffs mount, processes started inside a cgroup, and a throwaway
// PostgreSQL server. Every fixture removes what it created in t.Cleanup.
//
// Under CI=true a missing prerequisite fails the test instead of skipping
// it, so a CI run can never pass by skipping the end-to-end suite.
package harness
