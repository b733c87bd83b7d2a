package redirect

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path/filepath"
	"strings"
)

// LabelledCgroup is one cgroup whose processes are agents.
type LabelledCgroup struct {
	ID    uint64 `json:"id"`
	Path  string `json:"path"` // relative to the cgroup2 mount, "/agents/a"
	Agent string `json:"agent"`
	// Static is set for labels that come from the policy file rather than
	// from a cgroup xattr.
	Static bool `json:"static"`
	// Ignored says why the daemon does not honour this label (see
	// LabelTrusted); "" when it does.
	Ignored string `json:"ignored,omitempty"`
	// Escapable says why processes could leave this cgroup without root
	// (see LabelEscapable); the label is honoured all the same.
	Escapable string `json:"escapable,omitempty"`
}

// UntrustedAgent is the agent the daemon makes of the processes of a label
// it does not honour, when no label above counts: agents (intercepted,
// egress deny) with no roles. Not a valid policy name.
const UntrustedAgent = "(untrusted label)"

// ScanLabels walks the cgroup tree below root (an absolute path under
// mount) and returns every cgroup carrying the agent xattr, with Ignored
// set on those whose label the daemon must not honour (non-root users
// could have written it, or it is too long to be a name). Cgroups vanish
// while we walk; those are skipped, not errors. Cgroups that cannot be read
// (permissions) are reported after the walk as an *IncompleteScanError: a
// label the daemon cannot see is an agent it does not intercept.
func ScanLabels(mount, root string) ([]LabelledCgroup, error) {
	var (
		out        []LabelledCgroup
		unreadable []string
	)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if p == root {
				return err
			}
			unreadable = append(unreadable, p)
			return nil
		}
		if !d.IsDir() {
			return nil
		}
		agent, err := Label(p)
		tooLong := errors.Is(err, ErrLabelTooLong)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil
		case err != nil && !tooLong:
			unreadable = append(unreadable, p)
			return nil
		case agent == "" && !tooLong:
			return nil
		}
		id, err := CgroupID(p)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				unreadable = append(unreadable, p)
			}
			return nil
		}
		l := LabelledCgroup{ID: id, Path: relCgroup(mount, p), Agent: agent}
		switch err := LabelTrusted(p); {
		case errors.Is(err, ErrUntrustedLabel):
			l.Ignored = err.Error()
		case errors.Is(err, fs.ErrNotExist):
			return nil
		case err != nil:
			unreadable = append(unreadable, p)
			return nil
		case tooLong:
			l.Ignored = ErrLabelTooLong.Error()
		default:
			if err := LabelEscapable(mount, p); err != nil {
				l.Escapable = err.Error()
			}
		}
		out = append(out, l)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan cgroup labels under %s: %w", root, err)
	}
	if len(unreadable) > 0 {
		return out, &IncompleteScanError{Unreadable: unreadable}
	}
	return out, nil
}

// IncompleteScanError lists the cgroups (absolute paths) whose labels, or
// whose subtrees, ScanLabels could not read.
type IncompleteScanError struct {
	Unreadable []string
}

func (e *IncompleteScanError) Error() string {
	return fmt.Sprintf("scan cgroup labels: cannot read %d cgroups (first: %s); agents labelled there keep what the kernel knows of them (the daemon needs CAP_DAC_READ_SEARCH)", len(e.Unreadable), e.Unreadable[0])
}

// Covers reports whether the cgroup at path (absolute) is, or lies below,
// one the scan could not read.
func (e *IncompleteScanError) Covers(path string) bool {
	for _, u := range e.Unreadable {
		if path == u || strings.HasPrefix(path, u+"/") {
			return true
		}
	}
	return false
}

// StaticLabels resolves cgroup paths named in the policy. Paths that do not
// exist (yet) are skipped: they are picked up by the next scan once an
// operator creates them.
func StaticLabels(mount string, byAgent map[string][]string) []LabelledCgroup {
	var out []LabelledCgroup
	for agent, paths := range byAgent {
		for _, p := range paths {
			abs, err := ResolveCgroup(mount, p)
			if err != nil {
				continue
			}
			id, err := CgroupID(abs)
			if err != nil {
				continue
			}
			l := LabelledCgroup{ID: id, Path: relCgroup(mount, abs), Agent: agent, Static: true}
			if err := LabelEscapable(mount, abs); err != nil {
				l.Escapable = err.Error()
			}
			out = append(out, l)
		}
	}
	return out
}

func relCgroup(mount, abs string) string {
	rel := strings.TrimPrefix(abs, mount)
	if rel == "" {
		return "/"
	}
	return rel
}

// AgentID is the id the kernel records for an agent name. It is a hash so
// that it is stable across restarts without any state; collisions are
// detected when the desired state is built.
func AgentID(name string) uint32 { return nameID(name) }

// TargetID is the id the kernel records for a target name.
func TargetID(name string) uint32 { return nameID(name) }

func nameID(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	id := h.Sum32()
	if id == 0 {
		id = 1 // 0 means "not a target" in the kernel
	}
	return id
}
