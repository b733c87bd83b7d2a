package main

import (
	"slices"
	"testing"
)

func TestAgentEnv(t *testing.T) {
	caller := []string{"PATH=/usr/bin", "HOME=/root", "AWS_SECRET_ACCESS_KEY=k", "LC_ALL=C", "TOKEN=t", "TERM=xterm"}
	user := []string{"HOME=/home/bot", "USER=bot", "LOGNAME=bot", "SHELL=/bin/sh"}
	got, err := agentEnv(caller, user, []string{"TOKEN", "MODE=ro", "MISSING"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"PATH=/usr/bin", "LC_ALL=C", "TERM=xterm", "HOME=/home/bot", "USER=bot", "LOGNAME=bot", "SHELL=/bin/sh", "TOKEN=t", "MODE=ro"}
	if !slices.Equal(got, want) {
		t.Errorf("agentEnv = %q\nwant %q", got, want)
	}
	// Running as the caller (root with --allow-root): its own HOME.
	got, _ = agentEnv(caller, nil, nil)
	if !slices.Contains(got, "HOME=/root") || slices.Contains(got, "AWS_SECRET_ACCESS_KEY=k") {
		t.Errorf("agentEnv as the caller = %q", got)
	}
	if _, err := agentEnv(caller, user, []string{"=x"}); err == nil {
		t.Error("--env =x accepted")
	}
}
