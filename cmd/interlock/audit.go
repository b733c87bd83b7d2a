package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/interlockhq/interlock/engine/recording"
)

// recordingDir is where the files store keeps its segments.
func (c *Config) recordingDir() string { return filepath.Join(c.StateDir, "recordings") }

// recordingKeyPath is the recording signing key.
func (c *Config) recordingKeyPath() string { return filepath.Join(c.StateDir, recording.KeyFile) }

// openRecordingStore opens the configured store: for the daemon's writer
// (write, which defers syncs with recording.sync: interval) or for reading
// while the daemon runs.
func openRecordingStore(ctx context.Context, cfg *Config, write bool) (recording.Store, error) {
	deferSync := write && cfg.Recording.SyncEvery() > 0
	switch cfg.Recording.Store {
	case "postgres":
		return recording.OpenPostgres(ctx, recording.PostgresConfig{DSN: cfg.Recording.DSN, DeferSync: deferSync})
	case "none":
		return nil, errors.New("recording.store is none: nothing is recorded")
	}
	if !write {
		return recording.OpenFilesReadOnly(cfg.recordingDir())
	}
	seg, keep := cfg.Recording.Sizes()
	return recording.OpenFiles(recording.FilesConfig{
		Dir: cfg.recordingDir(), SegmentSize: seg,
		RetentionAge: cfg.Recording.RetentionAge, RetentionSize: keep, DeferSync: deferSync, Log: cfg.Logger(),
	})
}

// readRecording loads the configuration and opens its store for reading,
// as every CLI verb that reads the recording does.
func readRecording(ctx context.Context, load func() (*Config, error)) (*Config, recording.Store, error) {
	cfg, err := load()
	if err != nil {
		return nil, nil, err
	}
	st, err := openRecordingStore(ctx, cfg, false)
	if err != nil {
		return nil, nil, err
	}
	return cfg, st, nil
}

// readHost is the chain the CLI reads by default: a files store has one
// (""); in the shared store it is this host's, unless --host says.
func readHost(cfg *Config, flag string) string {
	if flag != "" || cfg.Recording.Store != "postgres" {
		return flag
	}
	h, _ := os.Hostname()
	return h
}

func newAuditCmd(load func() (*Config, error)) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Verify, export and inspect the tamper-evident session recording",
		Long: `The recording is one hash chain per host with signed checkpoints (docs/recording.md).
These verbs read the store directly (state_dir/recordings, or recording.dsn) and work
while the daemon runs.`,
	}
	cmd.AddCommand(newAuditVerifyCmd(load), newAuditExportCmd(load), newAuditPubkeyCmd(load), newAuditMigrateCmd(load))
	return cmd
}

func newAuditVerifyCmd(load func() (*Config, error)) *cobra.Command {
	var (
		from   uint64
		pubkey string
		host   string
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the chain: exit non-zero and name the first bad record",
		Long: `Verify recomputes every record's hash, checks that each links to the one before, that
sequence numbers have no gap, that every checkpoint is signed by the key, and that the chain
reaches the signed head (so that a truncated tail is caught). It names the first record that
breaks any of these and exits with status 1.

By default the public key comes from the local signing key; --pubkey takes a PEM file
(from "interlock audit pubkey"), to verify on another machine or another host's chain.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, st, err := readRecording(cmd.Context(), load)
			if err != nil {
				return err
			}
			defer st.Close()
			pub, err := loadPublicKey(cfg, pubkey)
			if err != nil {
				return err
			}
			rep, err := recording.Verify(cmd.Context(), st, recording.VerifyOptions{Host: readHost(cfg, host), From: from, PublicKey: pub})
			if recording.IsBadRecord(err) {
				return &exitError{code: 1, err: fmt.Errorf("audit verify: FAILED at %w", err)}
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if rep.Records == 0 {
				fmt.Fprintln(out, "ok: the recording is empty")
				return nil
			}
			fmt.Fprintf(out, "ok: host %s: records %d..%d (%d records, %d checkpoints) chain and signatures verify\n", rep.Host, rep.First, rep.Last, rep.Records, rep.Checkpoints)
			if rep.Head != nil {
				fmt.Fprintf(out, "signed head: seq %d at %s, key %s\n", rep.Head.Seq, rep.Head.Time.Format(time.RFC3339), rep.Head.Key)
			}
			if rep.Unsigned > 0 {
				fmt.Fprintf(out, "note: the last %d records (after seq %d) are chained but not yet covered by a signed checkpoint\n", rep.Unsigned, rep.Signed)
			}
			for _, u := range rep.Unwitnessed {
				fmt.Fprintf(out, "warning: records %d..%d were found unsigned when the daemon started and are signed as found: written before a crash, or added while it was down\n", u[0], u[1])
			}
			return nil
		},
	}
	cmd.Flags().Uint64Var(&from, "from", 0, "start at this sequence number (its link to the record before is trusted)")
	cmd.Flags().StringVar(&pubkey, "pubkey", "", "PEM public key file (default: the local signing key's)")
	cmd.Flags().StringVar(&host, "host", "", "host whose chain to verify (postgres store; default: this host)")
	return cmd
}

func loadPublicKey(cfg *Config, file string) (ed25519.PublicKey, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		return recording.ParsePublicKeyPEM(b)
	}
	k, err := recording.LoadKey(cfg.recordingKeyPath())
	if err != nil {
		return nil, fmt.Errorf("%w (give --pubkey to verify without it)", err)
	}
	return k.Public().(ed25519.PublicKey), nil
}

func newAuditExportCmd(load func() (*Config, error)) *cobra.Command {
	var (
		format string
		from   uint64
		since  time.Duration
		host   string
	)
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write the records as JSON lines, for a SIEM",
		Long: `Export writes every record exactly as stored, one JSON object a line (the hash in each
covers the line itself; see docs/recording.md), to standard output.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "jsonl" {
				return fmt.Errorf("--format %q: only jsonl is supported", format)
			}
			_, st, err := readRecording(cmd.Context(), load)
			if err != nil {
				return err
			}
			defer st.Close()
			f := recording.Filter{Host: host, From: from}
			if since > 0 {
				f.Since = time.Now().Add(-since)
			}
			w := bufio.NewWriterSize(cmd.OutOrStdout(), 256<<10)
			err = st.Scan(cmd.Context(), f, func(rec *recording.Record, loc string, err error) error {
				if rec == nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "interlock: skipping an unreadable record at %s: %v\n", loc, err)
					return nil
				}
				w.Write(rec.Raw)
				return w.WriteByte('\n')
			})
			if ferr := w.Flush(); err == nil {
				err = ferr
			}
			return err
		},
	}
	cmd.Flags().StringVar(&format, "format", "jsonl", "output format (jsonl)")
	cmd.Flags().Uint64Var(&from, "from", 0, "records from this sequence number on")
	cmd.Flags().DurationVar(&since, "since", 0, "records of the last duration only (e.g. 24h)")
	cmd.Flags().StringVar(&host, "host", "", "one host's chain only (postgres store; default: all)")
	return cmd
}

func newAuditPubkeyCmd(load func() (*Config, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "pubkey",
		Short: "Print the public key that verifies this host's checkpoints (PEM)",
		Long: `Pubkey prints the public half of the recording signing key (state_dir/recording.key,
created at the daemon's first start). Keep a copy off the host: with it, "audit verify
--pubkey" shows whether checkpoints were forged with another key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			k, err := recording.LoadKey(cfg.recordingKeyPath())
			if err != nil {
				return fmt.Errorf("%w (the daemon creates it at its first start)", err)
			}
			pub := k.Public().(ed25519.PublicKey)
			fmt.Fprintf(cmd.OutOrStdout(), "# interlock recording key %s\n", recording.KeyID(pub))
			_, err = cmd.OutOrStdout().Write(recording.PublicKeyPEM(pub))
			return err
		},
	}
}

func newAuditMigrateCmd(load func() (*Config, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Sign a head of this version for a chain an earlier version wrote (daemon stopped)",
		Long: `The daemon refuses a chain whose signed head an earlier version wrote (signed like a
checkpoint, so that any checkpoint in the chain could stand in for it), or that has records
and no head. Migrate verifies the chain as it is, accepting such a head, then appends a
checkpoint and signs a head of this version for it. It trusts the chain's current end: verify
it against a head or export kept off the host first if you have one. Stop the daemon first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			key, err := recording.LoadKey(cfg.recordingKeyPath())
			if err != nil {
				return err
			}
			pub := key.Public().(ed25519.PublicKey)
			ctx := cmd.Context()
			st, err := openRecordingStore(ctx, cfg, true)
			if err != nil {
				return err
			}
			host := readHost(cfg, "")
			rep, err := recording.Verify(ctx, st, recording.VerifyOptions{Host: host, PublicKey: pub, LegacyHead: true})
			if recording.IsBadRecord(err) {
				st.Close()
				return &exitError{code: 1, err: fmt.Errorf("audit migrate: the chain does not verify, nothing changed: FAILED at %w", err)}
			}
			if err != nil {
				st.Close()
				return err
			}
			rcfg := recording.Config{Store: st, Key: key, Host: host, TrustHead: true, Log: cfg.Logger()}
			if cfg.Recording.SyncEvery() > 0 {
				rcfg.SyncInterval = cfg.Recording.SyncEvery()
			}
			rec, err := recording.Open(rcfg)
			if err != nil {
				st.Close()
				return err
			}
			if err := rec.Close(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: host %s: records %d..%d verified; a checkpoint and a signed head of this version now cover them\n", rep.Host, rep.First, rep.Last)
			return nil
		},
	}
}
