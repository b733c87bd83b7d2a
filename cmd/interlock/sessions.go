package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/interlockhq/interlock/engine/recording"
)

func newSessionsCmd(load func() (*Config, error)) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "Recorded agent sessions",
	}
	cmd.AddCommand(newSessionsListCmd(load))
	return cmd
}

func newSessionsListCmd(load func() (*Config, error)) *cobra.Command {
	var (
		agent, target, host, output string
		since                       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List recorded sessions, oldest first",
		Long: `List reads the recording (not the daemon) and shows each session that started in the
--since window: its id (give a prefix of it to "interlock replay"), agent, target, process,
how many statements it ran and how many were refused, and how it ended.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, st, err := readRecording(cmd.Context(), load)
			if err != nil {
				return err
			}
			defer st.Close()
			opts := recording.ListOptions{Host: host, Agent: agent, Target: target}
			if since > 0 {
				opts.Since = time.Now().Add(-since)
			}
			list, err := recording.ListSessions(cmd.Context(), st, opts)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if list == nil {
					list = []recording.SessionSummary{}
				}
				return enc.Encode(list)
			}
			printSessions(termSafe{cmd.OutOrStdout()}, list)
			return nil
		},
	}
	cmd.Flags().StringVar(&agent, "agent", "", "only this agent's sessions")
	cmd.Flags().StringVar(&target, "target", "", "only sessions to this target")
	cmd.Flags().StringVar(&host, "host", "", "only this host's sessions (postgres store)")
	cmd.Flags().DurationVar(&since, "since", 24*time.Hour, "sessions started within this long (0: all)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func printSessions(w io.Writer, list []recording.SessionSummary) {
	if len(list) == 0 {
		fmt.Fprintln(w, "no sessions recorded in that window")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SESSION\tSTARTED\tAGENT\tTARGET\tPID\tEXE\tSTATEMENTS\tREFUSED\tDURATION\tEND")
	for _, s := range list {
		dur, end := "open", ""
		if s.Ended != nil {
			dur = (time.Duration(s.DurationMS * float64(time.Millisecond))).Round(time.Millisecond).String()
			end = s.Reason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%s\t%s\n", s.ID[:min(12, len(s.ID))], s.Started.Local().Format(time.DateTime),
			s.Agent, s.Target, s.PID, s.Exe, s.Statements, s.Refused, dur, end)
	}
	tw.Flush()
}
