package redirect

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Status describes what is pinned, for `interlock status`.
type Status struct {
	PinDir   string            `json:"pin_dir"`
	Links    []LinkStatus      `json:"links"`
	Verdicts map[string]uint64 `json:"verdicts,omitempty"`
}

// LinkStatus is one pinned link.
type LinkStatus struct {
	Hook     string `json:"hook"`
	LinkID   uint32 `json:"link_id"`
	ProgID   uint32 `json:"program_id"`
	CgroupID uint64 `json:"cgroup_id"`
}

// ReadStatus inspects the pins without loading anything.
func ReadStatus(pinDir string) (Status, error) {
	st := Status{PinDir: pinDir}
	for _, a := range attachments {
		pin := filepath.Join(pinDir, "link_"+a.name)
		l, err := link.LoadPinnedLink(pin, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return st, kernelHint("open pinned link "+pin, err)
		}
		ls := LinkStatus{Hook: a.name}
		if info, err := l.Info(); err == nil {
			ls.LinkID = uint32(info.ID)
			ls.ProgID = uint32(info.Program)
			if cg := info.Cgroup(); cg != nil {
				ls.CgroupID = cg.CgroupId
			}
		}
		l.Close()
		st.Links = append(st.Links, ls)
	}
	if len(st.Links) == 0 {
		return st, ErrNotInstalled
	}
	if m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "verdicts"), &ebpf.LoadPinOptions{ReadOnly: true}); err == nil {
		st.Verdicts, _ = readVerdicts(m)
		m.Close()
	}
	return st, nil
}

// AgentCgroupKnown reports whether the kernel already treats cgroup id as
// an agent cgroup (used by `interlock exec` to wait for the daemon).
func AgentCgroupKnown(pinDir string, id uint64) (bool, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "agent_cgroups"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, ErrNotInstalled
		}
		return false, kernelHint("open agent_cgroups map", err)
	}
	defer m.Close()
	var v [8]byte
	err = m.Lookup(id, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	return err == nil, err
}

// Uninstall removes every pin under pinDir. Links detach as soon as the
// last reference goes, so a running engine must be stopped first, or its
// open link file descriptors keep the programs attached until it exits.
func Uninstall(pinDir string) error {
	entries, err := os.ReadDir(pinDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pin directory %s: %w", pinDir, err)
	}
	var errs []error
	// Links first: once they are gone no program runs, then the maps.
	for _, pass := range []bool{true, false} {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "link_") != pass {
				continue
			}
			if err := os.Remove(filepath.Join(pinDir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove pin %s: %w", e.Name(), err))
			}
		}
	}
	if err := os.Remove(pinDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove pin directory: %w", err))
	}
	return errors.Join(errs...)
}
