package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// sysmonSetting keeps the Go runtime's monitor thread (sysmon) out of deep
// sleep. When every P is idle, sysmon parks until the next syscall wakes
// it; a relay goes idle between nearly every request and response, so each
// of them paid one more thread wake-up (a context switch, an IPI to an idle
// vCPU) than the relay itself needs. Measured with pgbench -S -c1 through
// the engine: 4.1 context switches and 66 µs of engine CPU per transaction,
// 2.0 and 41 µs with this setting (PgBouncer: 2.0 and 34). The runtime has
// no knob for it but schedtrace, whose only other effect is a scheduler
// summary line on stderr every schedtrace milliseconds: the largest value
// is 24.8 days (the first line comes once the host has been up that long).
// Without deep sleep sysmon polls at most every 10 ms while idle.
const sysmonSetting = "schedtrace=2147483647"

// sysmonEnv returns the environment to re-execute the daemon with, or false
// when GODEBUG already sets schedtrace (the setting is read only at
// process start; an operator's own value wins).
func sysmonEnv(environ []string) ([]string, bool) {
	env := make([]string, 0, len(environ)+1)
	found := false
	for _, kv := range environ {
		v, ok := strings.CutPrefix(kv, "GODEBUG=")
		if !ok || found {
			env = append(env, kv) // the runtime reads the first GODEBUG only
			continue
		}
		found = true
		for _, f := range strings.Split(v, ",") {
			if strings.HasPrefix(f, "schedtrace=") {
				return nil, false
			}
		}
		if v != "" {
			v += ","
		}
		env = append(env, "GODEBUG="+v+sysmonSetting)
	}
	if !found {
		env = append(env, "GODEBUG="+sysmonSetting)
	}
	return env, true
}

// reexecForSysmon replaces the process (same pid) with itself under
// sysmonSetting; it returns only when that is not needed or fails.
func reexecForSysmon() error {
	env, ok := sysmonEnv(os.Environ())
	if !ok {
		return nil
	}
	// The binary's own path, not /proc/self/exe: the process name (comm,
	// what ps, top and pgrep show) is taken from the executed file's name.
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("re-execute with GODEBUG=%s: %w", sysmonSetting, err)
	}
	if err := syscall.Exec(exe, os.Args, env); err != nil {
		return fmt.Errorf("re-execute %s with GODEBUG=%s: %w", exe, sysmonSetting, err)
	}
	return nil
}
