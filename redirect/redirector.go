package redirect

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/interlockhq/interlock/bpf"
)

// DefaultPinDir is where the daemon pins its links and maps.
const DefaultPinDir = "/sys/fs/bpf/interlock"

// Config says where and how to attach.
type Config struct {
	// CgroupPath is the cgroup the programs attach to; every process below
	// it is checked. Default: the cgroup2 mount root.
	CgroupPath string
	// GuardCgroupPath is where the bind hooks attach, which keep everyone
	// but the engine off its ports. The daemon puts them at the cgroup2
	// root even when CgroupPath is a subtree: a process outside the
	// subtree could otherwise listen on the engine's port while the daemon
	// is down and receive the agents' connections. Default: CgroupPath
	// (tests never attach at the root).
	GuardCgroupPath string
	// PinDir is a directory on a bpffs mount. Default: DefaultPinDir.
	PinDir string
	// EnginePort4 and EnginePort6 are the engine's listener ports on
	// 127.0.0.1 and ::1.
	EnginePort4, EnginePort6 uint16
	// Mark is the SO_MARK the engine puts on its own upstream dials; such
	// sockets are never redirected.
	Mark uint32
	// EngineCgroup is the cgroup whose tasks may bind the engine's ports
	// (EngineCgroup); 0: none, the engine's mark stands in.
	EngineCgroup uint64
	Log          *slog.Logger
}

// CheckAndSetDefaults validates the config and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	if c.CgroupPath == "" {
		m, err := Cgroup2Mount()
		if err != nil {
			return err
		}
		c.CgroupPath = m
	}
	if c.GuardCgroupPath == "" {
		c.GuardCgroupPath = c.CgroupPath
	}
	if c.PinDir == "" {
		c.PinDir = DefaultPinDir
	}
	if c.EnginePort4 == 0 || c.EnginePort6 == 0 {
		return errors.New("redirect config: engine ports must be set")
	}
	if c.Mark == 0 {
		return errors.New("redirect config: mark must be non-zero (it is the loop guard)")
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return nil
}

// Redirector owns the loaded programs and maps of one engine process.
type Redirector struct {
	cfg  Config
	objs bpf.RedirectObjects
	diag *sockDiag

	sweepMu sync.Mutex
	swept   map[uint64]struct{} // records the last Sweep left
}

// attachment is one program and where it hooks in.
type attachment struct {
	name  string // pin name: link_<name>
	typ   ebpf.AttachType
	prog  func(*bpf.RedirectObjects) *ebpf.Program
	guard bool // attached at Config.GuardCgroupPath
}

var attachments = []attachment{
	{"connect4", ebpf.AttachCGroupInet4Connect, func(o *bpf.RedirectObjects) *ebpf.Program { return o.InterlockConnect4 }, false},
	{"connect6", ebpf.AttachCGroupInet6Connect, func(o *bpf.RedirectObjects) *ebpf.Program { return o.InterlockConnect6 }, false},
	{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, func(o *bpf.RedirectObjects) *ebpf.Program { return o.InterlockSendmsg4 }, false},
	{"sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, func(o *bpf.RedirectObjects) *ebpf.Program { return o.InterlockSendmsg6 }, false},
	{"sock_create", ebpf.AttachCGroupInetSockCreate, func(o *bpf.RedirectObjects) *ebpf.Program { return o.InterlockSockCreate }, false},
	{"bind4", ebpf.AttachCGroupInet4Bind, func(o *bpf.RedirectObjects) *ebpf.Program { return o.InterlockBind4 }, true},
	{"bind6", ebpf.AttachCGroupInet6Bind, func(o *bpf.RedirectObjects) *ebpf.Program { return o.InterlockBind6 }, true},
	{"getpeername4", ebpf.AttachCgroupInet4GetPeername, func(o *bpf.RedirectObjects) *ebpf.Program { return o.InterlockGetpeername4 }, false},
	{"getpeername6", ebpf.AttachCgroupInet6GetPeername, func(o *bpf.RedirectObjects) *ebpf.Program { return o.InterlockGetpeername6 }, false},
}

// Install loads the programs and attaches them at once: Load, then
// Attach. A daemon applies its state between the two (see Load).
func Install(cfg Config) (*Redirector, error) {
	r, err := Load(cfg)
	if err != nil {
		return nil, err
	}
	if err := r.Attach(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Load loads the programs, re-using the pinned maps, without touching any
// hook: the links (pinned ones from an earlier run too) keep running the
// programs they have. Maps this version cannot use are recreated empty,
// so the caller must Apply its state before Attach points the hooks at
// them; otherwise agents and targets would be unknown for that moment and
// agents' connections would go direct.
func Load(cfg Config) (*Redirector, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	if err := ensureBPFFS(cfg.PinDir); err != nil {
		return nil, err
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones
	// use memcg and this is a no-op.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, kernelHint("raise RLIMIT_MEMLOCK for BPF maps", err)
	}
	diag, err := openSockDiag()
	if err != nil {
		return nil, err
	}
	r := &Redirector{cfg: cfg, diag: diag}
	if err := r.load(); err != nil {
		diag.Close()
		return nil, err
	}
	if err := r.objs.EngineCgroup.Put(uint32(0), cfg.EngineCgroup); err != nil {
		r.Close()
		return nil, kernelHint("claim the engine's ports", err)
	}
	// The pinned level mask was kept by whatever ran before, which may not
	// have maintained it (an older version); searching every level is
	// always right, and the next Apply narrows it again.
	if err := r.objs.UnlabelledLevels.Put(uint32(0), uint32(0)); err != nil {
		r.Close()
		return nil, kernelHint("reset unlabelled levels", err)
	}
	return r, nil
}

// EngineCgroup returns the id of the daemon's cgroup (rel, as OwnCgroup
// gives it, below mount): the one whose tasks may bind the engine's ports
// (Config.EngineCgroup, ClaimEnginePorts).
//
// The root cgroup is never given: every process that was not put in a
// cgroup is there. The guard then falls back to the engine's mark, which
// CAP_NET_RAW can set; ErrSharedCgroup says so, and also when other
// processes share the daemon's cgroup. The daemon logs it and goes on.
func EngineCgroup(mount, rel string) (uint64, error) {
	abs := filepath.Join(mount, rel)
	id, err := CgroupID(abs)
	if errors.Is(err, os.ErrNotExist) {
		// The mount shows the namespace's own hierarchy, not the host's.
		if rel, err = CgroupOf(os.Getpid()); err != nil {
			return 0, err
		}
		abs = filepath.Join(mount, rel)
		id, err = CgroupID(abs)
	}
	if err != nil {
		return 0, err
	}
	if id == 1 { // the real root (in a cgroup namespace "/" is the container's own)
		return 0, fmt.Errorf("%w: it runs in the root cgroup, so only the engine's mark (which CAP_NET_RAW can set) keeps others off its ports; run it in a cgroup of its own (the systemd unit does)", ErrSharedCgroup)
	}
	if procs, err := os.ReadFile(filepath.Join(abs, "cgroup.procs")); err == nil && len(strings.Fields(string(procs))) > 1 {
		return id, fmt.Errorf("%w: other processes share its cgroup %s and may bind its ports; run it in a cgroup of its own (the systemd unit does)", ErrSharedCgroup, rel)
	}
	return id, nil
}

// ErrSharedCgroup: the bind guard is weaker than it could be (see
// EngineCgroup).
var ErrSharedCgroup = errors.New("the daemon does not run in a cgroup of its own")

// ClaimEnginePorts makes cgroup id (EngineCgroup; 0: none) the one allowed
// to bind the engine's ports, in the pinned map that programs of an
// earlier run check (nothing pinned: nothing to do). The daemon calls it
// before it listens; Load writes Config.EngineCgroup into the map it
// loads.
func ClaimEnginePorts(pinDir string, id uint64) error {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "engine_cgroup"), nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return kernelHint("open the pinned engine_cgroup map", err)
	}
	defer m.Close()
	if err := m.Put(uint32(0), id); err != nil {
		return kernelHint("claim the engine's ports", err)
	}
	return nil
}

// Attach converges every hook to this process's programs: it updates each
// pinned link in place or, when there is none, attaches and pins a new
// one. It is safe to run again after a crash at any point.
func (r *Redirector) Attach() error {
	for _, a := range attachments {
		if err := r.converge(a); err != nil {
			return err
		}
	}
	// Earlier versions re-keyed records in a sockops program; once the
	// other hooks run this version's programs, drop it and its map.
	for _, old := range []string{"link_sockops", "conn_by_peer"} {
		err := os.Remove(filepath.Join(r.cfg.PinDir, old))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("remove %s left by an earlier version: %w", old, err)
		}
		if old == "link_sockops" {
			// Its counters' slots are engine_bind_denied and a reserved
			// one now: start them from zero.
			zero := make([]uint64, ebpf.MustPossibleCPU())
			for _, slot := range []uint32{5, 6} {
				if err := r.objs.Verdicts.Put(slot, zero); err != nil {
					return kernelHint("reset verdict counters", err)
				}
			}
		}
	}
	return nil
}

func (r *Redirector) load() error {
	spec, err := bpf.LoadRedirect()
	if err != nil {
		return fmt.Errorf("load BPF spec: %w", err)
	}
	for name, v := range map[string]any{
		bpf.RedirectVarEnginePort4: r.cfg.EnginePort4,
		bpf.RedirectVarEnginePort6: r.cfg.EnginePort6,
		bpf.RedirectVarEngineMark:  r.cfg.Mark,
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return fmt.Errorf("set BPF constant %s: %w", name, err)
		}
	}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: r.cfg.PinDir}}
	err = spec.LoadAndAssign(&r.objs, opts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// Another version changed a map's layout. Only that map is
		// recreated: the others (agent cgroups, targets) stay filled, and
		// the running programs keep using the old map until Attach.
		for name, ms := range spec.Maps {
			pin := filepath.Join(r.cfg.PinDir, name)
			m, lerr := ebpf.LoadPinnedMap(pin, nil)
			if lerr != nil {
				continue
			}
			if ms.Compatible(m) != nil {
				r.cfg.Log.Warn("pinned BPF map is incompatible with this version; recreating it", "map", name, "pin_dir", r.cfg.PinDir)
				if rerr := os.Remove(pin); rerr != nil {
					m.Close()
					return fmt.Errorf("remove incompatible map %s: %w", pin, rerr)
				}
			}
			m.Close()
		}
		err = spec.LoadAndAssign(&r.objs, opts)
	}
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("BPF verifier rejected Interlock's programs: %+v", ve)
		}
		return kernelHint("load BPF programs", err)
	}
	return nil
}

// converge makes one hook point at this process's program.
func (r *Redirector) converge(a attachment) error {
	pin := filepath.Join(r.cfg.PinDir, "link_"+a.name)
	prog := a.prog(&r.objs)
	at := r.cfg.CgroupPath
	if a.guard {
		at = r.cfg.GuardCgroupPath
	}
	l, err := link.LoadPinnedLink(pin, nil)
	switch {
	case err == nil && !attachedAt(l, at):
		// The attach point moved (config change): drop the old link first,
		// there is no atomic move between cgroups.
		l.Close()
		r.cfg.Log.Warn("pinned link is attached to another cgroup; moving it", "hook", a.name, "cgroup", at)
		if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove pin %s: %w", pin, err)
		}
	case err == nil:
		// A previous engine's link: swap the program in place, so there is
		// no instant in which the hook is missing (fail closed).
		defer l.Close()
		err = l.Update(prog)
		if err == nil {
			r.cfg.Log.Debug("updated pinned link", "hook", a.name)
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, link.ErrNotSupported) {
			return kernelHint("update pinned link "+pin, err)
		}
		// ENOLINK surfaces as ErrNotExist: the link's cgroup is gone.
		// Drop the defunct pin and attach afresh below.
		r.cfg.Log.Warn("pinned link is defunct; re-attaching", "hook", a.name, "error", err)
		if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove defunct pin %s: %w", pin, err)
		}
	case errors.Is(err, os.ErrNotExist):
		// First start: nothing pinned yet.
	default:
		return kernelHint("open pinned link "+pin, err)
	}

	nl, err := link.AttachCgroup(link.CgroupOptions{Path: at, Attach: a.typ, Program: prog})
	if err != nil {
		return kernelHint(fmt.Sprintf("attach %s to cgroup %s", a.name, at), err)
	}
	defer nl.Close()
	if err := nl.Pin(pin); err != nil {
		return kernelHint("pin link "+pin, err)
	}
	r.cfg.Log.Info("attached BPF program", "hook", a.name, "cgroup", at)
	return nil
}

func attachedAt(l link.Link, path string) bool {
	info, err := l.Info()
	if err != nil {
		return true // cannot tell; keep the link rather than open a gap
	}
	cg := info.Cgroup()
	if cg == nil {
		return true
	}
	id, err := CgroupID(path)
	return err != nil || cg.CgroupId == id
}

// Close releases this process's file descriptors. Pinned links and maps
// stay: the kernel keeps redirecting (to a closed port) until Uninstall.
func (r *Redirector) Close() error {
	return errors.Join(r.objs.Close(), r.diag.Close())
}

// Config returns the effective configuration.
func (r *Redirector) Config() Config { return r.cfg }
