package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/interlockhq/interlock/engine/recording"
)

func newReplayCmd(load func() (*Config, error)) *cobra.Command {
	var (
		follow       bool
		host, output string
	)
	cmd := &cobra.Command{
		Use:   "replay SESSION",
		Short: "Show a recorded session as a timeline of statements, decisions and results",
		Long: `Replay prints what an agent did in one session, in order: the time since the session
started, each statement (as recorded, per recording.redaction), the policy's verdict and
deciding rule, and the result (command tag and rows, or the error code). SESSION is the id
from "interlock sessions list", or a unique prefix of it. --follow keeps printing a session
that is still open until it ends. -o json prints the records themselves.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, st, err := readRecording(cmd.Context(), load)
			if err != nil {
				return err
			}
			defer st.Close()
			ctx := cmd.Context()
			start, err := recording.FindSession(ctx, st, host, args[0])
			if err != nil {
				return err
			}
			p := &replayPrinter{w: cmd.OutOrStdout(), json: output == "json"}
			if !p.json {
				p.w = termSafe{p.w}
			}
			from := uint64(0)
			for {
				recs, err := recording.SessionRecords(ctx, st, start.Host, start.Session, from)
				if err != nil {
					return err
				}
				for _, r := range recs {
					p.print(r)
					from = r.Seq + 1
				}
				if !follow || p.ended {
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(300 * time.Millisecond):
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the session ends")
	cmd.Flags().StringVar(&host, "host", "", "the session's host (postgres store; default: any)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json (the records)")
	return cmd
}

type replayPrinter struct {
	w     io.Writer
	json  bool
	t0    time.Time
	ended bool
}

func (p *replayPrinter) print(r *recording.Record) {
	if r.Type == recording.TypeSessionEnd {
		p.ended = true
	}
	if p.json {
		fmt.Fprintf(p.w, "%s\n", r.Raw)
		return
	}
	if p.t0.IsZero() {
		p.t0 = r.Time
	}
	off := fmt.Sprintf("+%8.3fs", r.Time.Sub(p.t0).Seconds())
	switch r.Type {
	case recording.TypeSessionStart:
		var ev recording.SessionStart
		r.Decode(&ev)
		p.t0 = ev.Started
		off = fmt.Sprintf("+%8.3fs", r.Time.Sub(p.t0).Seconds())
		fmt.Fprintf(p.w, "session %s on %s\n", r.Session, r.Host)
		fmt.Fprintf(p.w, "agent %s (roles %s) → target %s (%s %s), pid %d %s, cgroup %s, from %s\n",
			ev.Agent, strings.Join(ev.Roles, ","), ev.Target, ev.Protocol, ev.OrigDst, ev.PID, ev.Exe, ev.CgroupPath, ev.Client)
		fmt.Fprintf(p.w, "started %s (record seq %d)\n", ev.Started.Local().Format(time.RFC3339Nano), r.Seq)
	case recording.TypeStatement:
		var ev recording.Statement
		r.Decode(&ev)
		verdict := ev.Verdict
		if !ev.Forwarded {
			verdict = strings.ToUpper(ev.Verdict) + " (refused)"
			if ev.Verdict == "allow" {
				verdict = "allow (not sent)" // a sibling in its message was refused
			}
		}
		text := ev.Text
		if text == "" {
			text = fmt.Sprintf("<%s, %d bytes, fingerprint %s>", ev.Action, ev.TextBytes, ev.Fingerprint)
		}
		text = strings.Join(strings.Fields(text), " ")
		if ev.Truncated {
			text += " …(truncated)"
		}
		fmt.Fprintf(p.w, "%s  #%-4d %-16s rule %-20s %s\n", off, ev.N, verdict, orDash(ev.Rule), text)
		if ev.Reason != "" && !ev.Forwarded {
			fmt.Fprintf(p.w, "%s         reason: %s\n", strings.Repeat(" ", len(off)), ev.Reason)
		}
	case recording.TypeConnected:
		var ev recording.Connected
		r.Decode(&ev)
		fmt.Fprintf(p.w, "%s  connected to database %s as %s (%s); TLS to the agent: %s, to the target: %s\n",
			off, orDash(ev.Database), orDash(ev.DBUser), orDash(ev.Auth), orWord(ev.AgentTLS, "none"), orWord(ev.TargetTLS, "none"))
	case recording.TypeApprovalRequested:
		var ev struct {
			recording.ApprovalRequested
			ID string `json:"id"`
		}
		r.Decode(&ev)
		fmt.Fprintf(p.w, "%s    approval requested: rule %s, approvers %s (request %s)\n", off, orDash(ev.Rule), orDash(strings.Join(ev.Approvers, ",")), ev.ID)
	case recording.TypeApprovalDecided:
		var ev struct {
			recording.ApprovalDecided
			Outcome string `json:"outcome"`
		}
		r.Decode(&ev)
		outcome := ev.Outcome
		if outcome == "" {
			outcome = map[bool]string{true: "approved", false: "denied"}[ev.Approved]
		}
		what := fmt.Sprintf("%s by %s", outcome, orDash(ev.By))
		if ev.Comment != "" {
			what += ": " + ev.Comment
		}
		fmt.Fprintf(p.w, "%s    approval %s\n", off, what)
	case recording.TypeBind:
		var ev recording.Bind
		r.Decode(&ev)
		vals := make([]string, len(ev.Params))
		for i, v := range ev.Params {
			if v == nil {
				vals[i] = fmt.Sprintf("$%d=NULL", i+1)
			} else {
				vals[i] = fmt.Sprintf("$%d=%q", i+1, *v)
			}
		}
		what := strings.Join(vals, " ")
		if ev.Truncated {
			what += " …(truncated)"
		}
		fmt.Fprintf(p.w, "%s    bind %s\n", off, strings.TrimSpace(what))
	case recording.TypeResult:
		var ev recording.Result
		r.Decode(&ev)
		n := "#?"
		if ev.N > 0 {
			n = fmt.Sprintf("#%d", ev.N)
		}
		var what string
		switch {
		case ev.Refused:
			what = "refused " + ev.Code + " " + ev.Message
		case ev.Code != "":
			what = "error " + ev.Code + " " + ev.Message
		default:
			what = ev.Tag
			if ev.Rows != nil && *ev.Rows == 1 {
				what += " (1 row)"
			} else if ev.Rows != nil {
				what += fmt.Sprintf(" (%d rows)", *ev.Rows)
			}
			if ev.Masked > 0 {
				what += fmt.Sprintf(", %d values masked", ev.Masked)
			}
		}
		fmt.Fprintf(p.w, "%s    ↳ %-5s %s\n", off, n, strings.TrimSpace(what))
	case recording.TypeSessionEnd:
		var ev recording.SessionEnd
		r.Decode(&ev)
		fmt.Fprintf(p.w, "%s  end: %s; %d statements, %d bytes to target, %d bytes to agent\n", off, ev.Reason, ev.Statements, ev.BytesToTarget, ev.BytesToClient)
	default:
		fmt.Fprintf(p.w, "%s  %s\n", off, r.Type)
	}
}

func orWord(s, word string) string {
	if s == "" {
		return word
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
