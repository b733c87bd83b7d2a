package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/interlockhq/interlock/redirect"
)

func newLabelCmd(load func() (*Config, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "label CGROUP AGENT",
		Short: "Mark a cgroup (and everything below it) as an agent",
		Long: `Label sets the extended attribute user.interlock.agent=AGENT on a cgroup v2 directory.
CGROUP is a path relative to the cgroup2 mount (/agents/analyst) or an absolute path under
it. The running daemon picks the label up within a second; processes in the cgroup and in
all its descendants are then intercepted as AGENT.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := cgroupArg(args[0])
			if err != nil {
				return err
			}
			if err := redirect.SetLabel(path, args[1]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "labelled %s as agent %q\n", path, args[1])
			return nil
		},
	}
}

func newUnlabelCmd(load func() (*Config, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "unlabel CGROUP",
		Short: "Remove the agent label from a cgroup",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := cgroupArg(args[0])
			if err != nil {
				return err
			}
			if err := redirect.RemoveLabel(path); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed the agent label from %s\n", path)
			return nil
		},
	}
}

func cgroupArg(arg string) (string, error) {
	mount, err := redirect.Cgroup2Mount()
	if err != nil {
		return "", err
	}
	p, err := redirect.ResolveCgroup(mount, arg)
	if err != nil {
		return "", err
	}
	if st, err := os.Stat(p); err != nil || !st.IsDir() {
		return "", fmt.Errorf("cgroup %s does not exist (create it with mkdir %s)", p, p)
	}
	if p == mount {
		return "", fmt.Errorf("refusing to label the root cgroup: every process, the daemon included, would be an agent")
	}
	return p, nil
}
