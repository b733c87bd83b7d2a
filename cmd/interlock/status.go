package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/interlockhq/interlock/redirect"
)

func newStatusCmd(load func() (*Config, error)) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show attached programs, labelled cgroups, targets and active sessions",
		Long: `Status asks the running daemon over its control socket. When no daemon answers it still
reports what is pinned in the kernel and which cgroups carry labels, so an operator can
see that agent connections are being refused (fail closed) rather than let through.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			rep, ok := fetchStatus(cfg.API.Socket)
			if !ok {
				rep = offlineStatus(cfg)
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printStatus(cmd.OutOrStdout(), rep)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func offlineStatus(cfg *Config) statusReport {
	rep := statusReport{Version: version}
	if ks, err := redirect.ReadStatus(cfg.Redirect.PinDir); err == nil {
		rep.Kernel = &ks
	}
	if mount, err := redirect.Cgroup2Mount(); err == nil {
		root := mount
		if cfg.Redirect.Cgroup != "" {
			root, _ = redirect.ResolveCgroup(mount, cfg.Redirect.Cgroup)
		}
		rep.Cgroup = root
		rep.Labels, _ = redirect.ScanLabels(mount, root)
	}
	return rep
}

func printStatus(w io.Writer, rep statusReport) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	defer tw.Flush()
	if rep.Running {
		fmt.Fprintf(tw, "daemon:\trunning (%s), engine %s\n", rep.Version, strings.Join(rep.Engine, " "))
		fmt.Fprintf(tw, "policy:\t%s\n", rep.Policy)
	} else {
		fmt.Fprintf(tw, "daemon:\tnot running\n")
	}
	if rep.Kernel == nil || len(rep.Kernel.Links) == 0 {
		fmt.Fprintf(tw, "kernel:\tno programs attached (agents are not intercepted)\n")
	} else {
		var hooks []string
		for _, l := range rep.Kernel.Links {
			hooks = append(hooks, fmt.Sprintf("%s(link %d, prog %d)", l.Hook, l.LinkID, l.ProgID))
		}
		fmt.Fprintf(tw, "kernel:\t%d programs on %s, pinned in %s\n", len(rep.Kernel.Links), rep.Cgroup, rep.Kernel.PinDir)
		fmt.Fprintf(tw, "\t%s\n", strings.Join(hooks, " "))
		if !rep.Running {
			fmt.Fprintf(tw, "\tagent connections to targets are refused until the daemon runs again\n")
		}
		if len(rep.Kernel.Verdicts) > 0 {
			fmt.Fprintf(tw, "verdicts:\tredirected=%d egress_denied=%d egress_allowed=%d engine_port_denied=%d\n",
				rep.Kernel.Verdicts["redirected"], rep.Kernel.Verdicts["egress_denied"],
				rep.Kernel.Verdicts["egress_allowed"], rep.Kernel.Verdicts["engine_port_denied"])
		}
	}
	fmt.Fprintf(tw, "\nLABELLED CGROUP\tAGENT\tSOURCE\n")
	for _, l := range rep.Labels {
		src := "xattr"
		if l.Static {
			src = "policy"
		}
		if l.Ignored != "" {
			src = "xattr, IGNORED: " + l.Ignored
		} else if l.Escapable != "" {
			src += ", ESCAPABLE: " + l.Escapable
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", l.Path, l.Agent, src)
	}
	if rep.Running {
		fmt.Fprintf(tw, "\nTARGET\tPROTOCOL\tADDRESS\tRESOLVED\n")
		for _, t := range rep.Targets {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.Protocol, t.Address, strings.Join(t.Addresses, ","))
		}
		fmt.Fprintf(tw, "\nSESSION\tAGENT\tPID\tEXE\tTARGET\tORIGINAL DST\tAGE\n")
		for _, s := range rep.Sessions {
			fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\n", s.ID, s.Identity.Agent, s.Identity.PID, s.Identity.Exe,
				s.Identity.Target, s.Identity.OrigDst, time.Since(s.Started).Round(time.Second))
		}
	}
}
