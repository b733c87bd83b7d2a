// Command interlock is the Interlock daemon and its operator CLI: `run`
// starts the engine and keeps the kernel programs in step with the policy;
// the other verbs label agents, inspect and remove the installation.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/interlockhq/interlock/protocols/postgres"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// exitError carries a process exit code through cobra without printing a
// second error message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

func newRootCmd() *cobra.Command {
	var configPath string
	root := &cobra.Command{
		Use:           "interlock",
		Short:         "Segregation of duties for AI agents, enforced in the data path",
		Long:          "Interlock transparently intercepts the connections of agent processes (cgroups labelled as agents)\nto protected targets, identifies the agent, and enforces the policy on every statement.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVarP(&configPath, "config", "c", defaultConfigPath, "daemon configuration file (YAML); INTERLOCK_* environment variables override it")
	load := func() (*Config, error) { return LoadConfig(configPath) }
	root.AddCommand(
		newRunCmd(load),
		newLabelCmd(load),
		newUnlabelCmd(load),
		newExecCmd(load),
		newStatusCmd(load),
		newUninstallCmd(load),
		newVersionCmd(),
		newApprovalsCmd(load),
		newSessionsCmd(load),
		newReplayCmd(load),
		newAuditCmd(load),
		newPolicyCmdWith(policyOptions{sqlClassifier: sqlOperations(postgres.NewClassifier(256))}),
	)
	return root
}

func main() {
	err := newRootCmd().Execute()
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "interlock:", ee.err)
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "interlock:", err)
	os.Exit(1)
}
