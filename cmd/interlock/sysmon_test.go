package main

import (
	"slices"
	"testing"
)

func TestSysmonEnv(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want []string // nil: no re-exec
	}{
		{"no GODEBUG", []string{"PATH=/bin"}, []string{"PATH=/bin", "GODEBUG=" + sysmonSetting}},
		{"empty GODEBUG", []string{"GODEBUG=", "A=1"}, []string{"GODEBUG=" + sysmonSetting, "A=1"}},
		{"other settings kept", []string{"GODEBUG=http2client=0"}, []string{"GODEBUG=http2client=0," + sysmonSetting}},
		{"operator's schedtrace wins", []string{"GODEBUG=gctrace=1,schedtrace=0"}, nil},
		{"only the first GODEBUG counts", []string{"GODEBUG=x=1", "GODEBUG=schedtrace=5"}, []string{"GODEBUG=x=1," + sysmonSetting, "GODEBUG=schedtrace=5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := sysmonEnv(tc.in)
			if ok != (tc.want != nil) || !slices.Equal(got, tc.want) {
				t.Errorf("sysmonEnv(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
			}
		})
	}
}
