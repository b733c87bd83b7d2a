package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/interlockhq/interlock/engine"
	"github.com/interlockhq/interlock/engine/policy"
	"github.com/interlockhq/interlock/engine/recording"
	"github.com/interlockhq/interlock/protocols/postgres"
	"github.com/interlockhq/interlock/protocols/tcp"
	"github.com/interlockhq/interlock/redirect"
)

func newRunCmd(load func() (*Config, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run the daemon: attach the kernel programs and serve redirected connections",
		Long: `Run loads the policy, listens on the engine's loopback ports, attaches (or takes over the
pinned) BPF programs, keeps labelled cgroups and targets in the kernel maps, and serves
agent sessions until SIGINT/SIGTERM. SIGHUP reloads the policy. The pinned programs stay
after exit: agent connections to targets are then refused until the daemon is back.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := reexecForSysmon(); err != nil {
				slog.Warn("the Go runtime's monitor keeps its deep sleep: each relayed request costs one more thread wake-up", "error", err)
			}
			cfg, err := load()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runDaemon(ctx, cfg)
		},
	}
}

func runDaemon(ctx context.Context, cfg *Config) error {
	log := cfg.Logger()
	mark, _ := cfg.Mark()
	mount, err := redirect.Cgroup2Mount()
	if err != nil {
		return err
	}
	attach := mount
	if cfg.Redirect.Cgroup != "" {
		if attach, err = redirect.ResolveCgroup(mount, cfg.Redirect.Cgroup); err != nil {
			return fmt.Errorf("redirect.cgroup: %w", err)
		}
	}
	// The bind hooks guard the engine's ports for the whole host, also
	// when the other programs attach to a subtree.
	guard := mount
	if cfg.Redirect.GuardCgroup != "" {
		if guard, err = redirect.ResolveCgroup(mount, cfg.Redirect.GuardCgroup); err != nil {
			return fmt.Errorf("redirect.guard_cgroup: %w", err)
		}
	}
	own, err := redirect.OwnCgroup() // the host's view, also in a pod
	if err != nil {
		return err
	}
	if agent := labelledAncestor(mount, own); agent != "" {
		return fmt.Errorf("the daemon runs inside a cgroup labelled as agent %q; run it outside every agent cgroup", agent)
	}
	// Pinned programs from an earlier run let only the engine's cgroup
	// bind its ports: tell them which one that is now, before any listener.
	engineCg, err := redirect.EngineCgroup(mount, own)
	if errors.Is(err, redirect.ErrSharedCgroup) {
		log.Warn("engine port guard", "error", err)
	} else if err != nil {
		return err
	}
	if err := redirect.ClaimEnginePorts(cfg.Redirect.PinDir, engineCg); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	store, err := policy.NewStore(cfg.Policy, log, reg)
	if err != nil {
		return err
	}
	if err := store.SetCheck(checkKernelIDs); err != nil {
		return err
	}

	metrics := engine.NewMetrics(reg)
	dir := &directory{}
	dir.update(store.Current(), nil)

	// Session recording: every session start and statement is in the
	// chain before it runs, durable then or within recording.sync_interval
	// (docs/recording.md).
	rec, err := startRecorder(ctx, cfg, reg, log)
	if err != nil {
		return err
	}
	var events engine.SessionEvents
	var observer postgres.Observer
	if rec != nil {
		defer rec.Close() // after the sessions end: a final signed checkpoint
		events, observer = rec, postgres.NewRecorder(rec)
	}

	// Just-in-time approvals (docs/approvals.md): approve statements wait
	// for a human, after the recording stage.
	appr, err := startApprovals(ctx, cfg, rec, store, mount, reg, log)
	if err != nil {
		return err
	}
	if appr != nil {
		defer appr.Close()
		observer = appr.chain(observer)
	}

	pg, err := newPostgresHandler(cfg, store, reg, log, observer)
	if err != nil {
		return err
	}
	var lookup originLookup
	srv, err := engine.NewServer(engine.Config{
		Listen4: cfg.Engine.Listen4, Listen6: cfg.Engine.Listen6, Mark: mark,
		DialTimeout: cfg.Engine.DialTimeout, ShutdownGrace: cfg.Engine.ShutdownGrace, Log: log,
		Events: events,
	}, &lookup, dir, map[string]engine.Handler{
		policy.ProtocolTCP:      tcp.Handler{},
		policy.ProtocolPostgres: pg,
	}, metrics)
	if err != nil {
		return err
	}
	// Listen before touching the kernel: once the programs point at our
	// ports, connections must find a listener.
	if err := srv.Listen(); err != nil {
		return err
	}
	p4, p6 := srv.Ports()
	warnEphemeralPorts(log, p4, p6)
	warnPtrace(log)
	if id, err := redirect.CgroupID(attach); err == nil {
		if _, err := redirect.CgroupPathByID(mount, id); err != nil {
			log.Error("cannot find cgroups by id (open_by_handle_at needs CAP_DAC_READ_SEARCH, and a seccomp filter must allow it): while a label scan is incomplete, agent cgroups stay in the kernel after their labels or cgroups are removed", "error", err)
		}
	}

	var metricsLn net.Listener
	var enginePorts []uint16
	if cfg.Metrics.Listen != "" {
		if metricsLn, err = net.Listen("tcp", cfg.Metrics.Listen); err != nil {
			return fmt.Errorf("metrics.listen: %w", err)
		}
		enginePorts = append(enginePorts, uint16(metricsLn.Addr().(*net.TCPAddr).Port))
	}
	if appr != nil {
		enginePorts = append(enginePorts, appr.ports()...)
	}

	r, err := redirect.Load(redirect.Config{
		CgroupPath: attach, GuardCgroupPath: guard, PinDir: cfg.Redirect.PinDir,
		EnginePort4: p4, EnginePort6: p6, Mark: mark, EngineCgroup: engineCg, Log: log,
	})
	if err != nil {
		return err
	}
	defer r.Close()
	lookup.r = r
	reg.MustRegister(redirect.NewCollector(r))

	ks := &kernelSync{
		r: r, mount: mount, root: attach, levels: redirect.MountAtGlobalRoot(mount), enginePorts: enginePorts,
		pol: store.Current, dir: dir, log: log, resolveEvery: cfg.Redirect.ResolveInterval,
	}
	// The maps hold the policy's agents and targets before any hook runs
	// this version's programs: a map this version had to recreate must not
	// be seen empty (agents would go direct).
	if err := ks.tick(ctx); err != nil {
		return err
	}
	if err := r.Attach(); err != nil {
		return err
	}
	go sweepRecords(ctx, r, srv, log)
	store.Subscribe(func(*policy.Policy) {
		if err := ks.tick(ctx); err != nil {
			log.Error("kernel sync after policy reload failed", "error", err)
		}
	})

	api, err := startAPI(cfg.API.Socket, cfg.Policy, srv, ks, r, store, log, appr)
	if err != nil {
		return err
	}
	defer api.Close()

	if metricsLn != nil {
		ms := &http.Server{Handler: metricsMux(reg), ReadHeaderTimeout: 5 * time.Second}
		go ms.Serve(metricsLn)
		defer ms.Close()
	}

	if appr != nil {
		appr.serve() // the kernel now keeps agents off its port
	}
	go ks.run(ctx, cfg.Redirect.LabelScanInterval)
	go store.Run(ctx)
	go reloadOnHUP(ctx, store, log)

	log.Info("interlock running",
		"engine4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p4),
		"engine6", netip.AddrPortFrom(netip.IPv6Loopback(), p6),
		"cgroup", attach, "pin_dir", cfg.Redirect.PinDir, "metrics", cfg.Metrics.Listen,
		"api", cfg.API.Socket, "policy", cfg.Policy)
	err = srv.Serve(ctx)
	log.Info("interlock stopped; pinned programs keep agent connections to targets refused until restart")
	return err
}

func newPostgresHandler(cfg *Config, store *policy.Store, reg prometheus.Registerer, log *slog.Logger, observer postgres.Observer) (*postgres.Handler, error) {
	maxMsg, _ := cfg.MaxMessageSize()
	tlsCfg, err := postgres.LoadOrCreateTLS(cfg.Postgres.TLSCert, cfg.Postgres.TLSKey, filepath.Join(cfg.StateDir, "tls"))
	if err != nil {
		return nil, fmt.Errorf("postgres.tls_cert: %w", err)
	}
	// Mask decisions are enforced with the deployment's hash key
	// (docs/masking.md).
	maskKey, err := cfg.LoadMaskingKey()
	if err != nil {
		return nil, err
	}
	return postgres.NewHandler(postgres.Config{
		Policy:           store.Current,
		Classifier:       postgres.NewClassifier(cfg.Postgres.ClassifierCache),
		TLS:              tlsCfg,
		MaxMessageSize:   maxMsg,
		HandshakeTimeout: cfg.Postgres.HandshakeTimeout,
		IdleTimeout:      cfg.Postgres.IdleTimeout,
		Observer:         observer,
		Masking:          &postgres.MaskingConfig{Key: maskKey, Metrics: postgres.NewMaskMetrics(reg)},
		Metrics:          postgres.NewMetrics(reg),
		Log:              log,
	})
}

// startRecorder opens the recording store and its writer (nil when
// recording.store is none).
func startRecorder(ctx context.Context, cfg *Config, reg prometheus.Registerer, log *slog.Logger) (*recording.Recorder, error) {
	if cfg.Recording.Store == "none" {
		log.Warn("recording.store is none: sessions and statements are NOT recorded")
		return nil, nil
	}
	key, err := recording.LoadOrCreateKey(cfg.recordingKeyPath())
	if err != nil {
		return nil, err
	}
	st, err := openRecordingStore(ctx, cfg, true)
	if err != nil {
		return nil, err
	}
	rec, err := recording.Open(recording.Config{
		Store: st, Key: key, Redaction: cfg.Recording.Redaction,
		CheckpointEvery: cfg.Recording.CheckpointEvery, CheckpointInterval: cfg.Recording.CheckpointInterval,
		SyncInterval: cfg.Recording.SyncEvery(), Metrics: recording.NewMetrics(reg), Log: log,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	return rec, nil
}

func metricsMux(reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	return mux
}

func reloadOnHUP(ctx context.Context, store *policy.Store, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := store.Reload(); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("policy reload on SIGHUP failed; keeping the last good policy", "error", err)
			}
		}
	}
}
