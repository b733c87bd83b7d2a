package masking

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/interlockhq/interlock/engine/policy"
)

// NumDetectors is the number of detectors the policy defines. Counts and
// per-detector tables are indexed by policy.Detector.
const NumDetectors = len(policy.MaskSpec{}.Detectors)

// DefaultRedaction is the redact masker's marker; "%s" stands for the
// detector's name ("email", "card", …) or, for a column rule, the column's.
const DefaultRedaction = "[REDACTED:%s]"

// MinKeyLen is the shortest hash key accepted.
const MinKeyLen = 16

// Config says how to build a Masker.
type Config struct {
	// Spec is the merged masking of the decision (policy.Decision.Mask()).
	Spec *policy.MaskSpec
	// Key is the secret of the hash masker's HMAC-SHA256, at least MinKeyLen
	// bytes. It is required when Spec uses the hash masker. Hash tokens are
	// stable for one key: keep it per deployment (not per session) so that
	// tokens join across sessions, and rotate it to unlink old tokens.
	Key []byte
	// Redaction is the redact masker's marker, DefaultRedaction when empty.
	// Printable ASCII without '"' or '\'.
	Redaction string
}

// CheckAndSetDefaults validates the configuration and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	if c.Spec == nil {
		return fmt.Errorf("masking config: %w", ErrNoSpec)
	}
	if c.Redaction == "" {
		c.Redaction = DefaultRedaction
	}
	for k := 0; k < len(c.Redaction); k++ {
		if ch := c.Redaction[k]; ch < ' ' || ch > '~' || ch == '"' || ch == '\\' {
			return fmt.Errorf("masking config: redaction %q: %w", c.Redaction, ErrRedaction)
		}
	}
	if len(c.Key) > 0 && len(c.Key) < MinKeyLen || len(c.Key) == 0 && usesHash(c.Spec) {
		return fmt.Errorf("masking config: %d-byte key: %w (need %d bytes)", len(c.Key), ErrKey, MinKeyLen)
	}
	return nil
}

func usesHash(spec *policy.MaskSpec) bool {
	for _, k := range spec.Detectors {
		if k == policy.MaskerHash {
			return true
		}
	}
	for _, c := range spec.Columns {
		if c.Masker == policy.MaskerHash {
			return true
		}
	}
	return false
}

// Masker applies one MaskSpec. It is immutable and safe for concurrent use;
// building one is cheap (no per-value state), so a relay may build it per
// decision or keep one per MaskSpec.
type Masker struct {
	spec      *policy.MaskSpec
	key       []byte
	redaction string
	on        detSet                      // detectors switched on
	det       [NumDetectors]policy.Masker // masker per detector
	redact    [NumDetectors][]byte        // redaction marker per detector
	columns   bool                        // the spec has column rules
}

// New builds a Masker.
func New(cfg Config) (*Masker, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	m := &Masker{
		spec:      cfg.Spec,
		key:       bytes.Clone(cfg.Key),
		redaction: cfg.Redaction,
		columns:   len(cfg.Spec.Columns) > 0,
	}
	for d := range policy.Detector(NumDetectors) {
		m.det[d] = cfg.Spec.Detector(d)
		if m.det[d] != policy.MaskerNone {
			m.on |= 1 << d
		}
	}
	if m.redaction == DefaultRedaction {
		m.redact = defaultMarkers
	} else {
		m.redact = markers(m.redaction)
	}
	return m, nil
}

// defaultMarkers are the default redaction markers, shared by every Masker.
var defaultMarkers = markers(DefaultRedaction)

// markers returns the redaction marker of each detector. They are read,
// never written.
func markers(redaction string) (t [NumDetectors][]byte) {
	for d := range policy.Detector(NumDetectors) {
		t[d] = []byte(strings.ReplaceAll(redaction, "%s", d.String()))
	}
	return t
}

// marker returns the redaction marker for label.
func (m *Masker) marker(label string) string {
	return strings.ReplaceAll(m.redaction, "%s", label)
}

// Spec returns the MaskSpec the Masker applies.
func (m *Masker) Spec() *policy.MaskSpec { return m.spec }

// HasDetectors reports whether any detector is on: when not, and no column
// has a rule, values need no scan.
func (m *Masker) HasDetectors() bool { return m.on != 0 }

// Column returns the masker of the column rule for name ("schema.table.column"
// when the column traces back to a table, else the output column name), or
// policy.MaskerNone.
func (m *Masker) Column(name string) policy.Masker { return m.spec.Column(name) }

// Counts counts masked values, for metrics and the recording.
type Counts struct {
	// Detectors counts detector hits, indexed by policy.Detector.
	Detectors [NumDetectors]int
	// Columns counts values rewritten by a column rule.
	Columns int
}

// Add adds o to c.
func (c *Counts) Add(o *Counts) {
	for k, n := range o.Detectors {
		c.Detectors[k] += n
	}
	c.Columns += o.Columns
}

// Total is the number of masked values and detector hits.
func (c *Counts) Total() int {
	n := c.Columns
	for _, k := range c.Detectors {
		n += k
	}
	return n
}

// MaskText masks every detector hit in the text value src. When nothing
// matched, out is src itself and nothing is allocated; otherwise out is dst
// with the masked value appended. Hits of a detector whose masker is null
// are redacted: inside a larger text there is no NULL to give.
func (m *Masker) MaskText(dst, src []byte) (out []byte, counts Counts) {
	if m.on == 0 {
		return src, counts
	}
	out, changed := m.mask(dst, src, 0, &counts)
	if !changed {
		return src, counts
	}
	return out, counts
}

// mask appends the masked s[from:] to dst; s[:from] is context for the
// detectors' boundaries. It reports false, leaving dst untouched, when
// nothing matched.
func (m *Masker) mask(dst, s []byte, from int, c *Counts) ([]byte, bool) {
	sc := newScanner(s, from, m.on)
	last := from
	found := false
	for {
		h, ok := sc.next()
		if !ok {
			break
		}
		found = true
		dst = append(dst, s[last:h.start]...)
		dst = m.appendHit(dst, h.det, s[h.start:h.end])
		c.Detectors[h.det]++
		last = h.end
	}
	if !found {
		return dst, false
	}
	return append(dst, s[last:]...), true
}

// appendHit appends the replacement of the detector hit b.
func (m *Masker) appendHit(dst []byte, d policy.Detector, b []byte) []byte {
	switch m.det[d] {
	case policy.MaskerPartial:
		return appendPartial(dst, d, b)
	case policy.MaskerHash:
		if len(m.key) > 0 {
			return m.appendHash(dst, b)
		}
	}
	return append(dst, m.redact[d]...)
}

// MaskWhole applies the masker k of a column rule to the whole value src.
// label names the value in the redaction marker (the column name). null
// reports that the value becomes SQL NULL (masker null); out is then nil.
// With MaskerNone, out is src. The output is text: the caller decides
// whether the column's type can hold it (see Plan).
func (m *Masker) MaskWhole(dst []byte, k policy.Masker, label string, src []byte) (out []byte, null bool) {
	switch k {
	case policy.MaskerNone:
		return src, false
	case policy.MaskerNull:
		return nil, true
	case policy.MaskerPartial:
		return m.appendPartialWhole(dst, src), false
	case policy.MaskerHash:
		if len(m.key) > 0 {
			return m.appendHash(dst, src), false
		}
	}
	return append(dst, m.marker(label)...), false
}
