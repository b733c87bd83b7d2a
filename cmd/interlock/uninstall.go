package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/interlockhq/interlock/redirect"
)

func newUninstallCmd(load func() (*Config, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "uninstall",
		Short: "Detach every Interlock program and remove its pins",
		Long: `Uninstall removes the pinned links and maps under redirect.pin_dir, which detaches the
programs: agents then connect to targets directly, without Interlock. Stop the daemon first
(its open links would otherwise keep the programs attached until it exits). Cgroup labels
are left in place.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			if _, running := fetchStatus(cfg.API.Socket); running {
				return fmt.Errorf("the daemon is running (socket %s); stop it before uninstalling", cfg.API.Socket)
			}
			if err := redirect.Uninstall(cfg.Redirect.PinDir); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed Interlock's programs and pins from %s\n", cfg.Redirect.PinDir)
			return nil
		},
	}
}
