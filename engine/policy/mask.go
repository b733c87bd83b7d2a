package policy

// Masker says how a masked value is rewritten. Maskers are ordered by how
// little they reveal; when several mask rules cover the same column or
// detector, the strongest wins.
type Masker uint8

const (
	MaskerNone    Masker = iota // not masked
	MaskerPartial               // keep a few characters (first/last), replace the rest
	MaskerHash                  // stable keyed hash: joins and equality still work
	MaskerRedact                // replace with a fixed marker
	MaskerNull                  // replace with NULL
	maskerCount
)

var maskerNames = [...]string{
	MaskerNone:    "none",
	MaskerPartial: "partial",
	MaskerHash:    "hash",
	MaskerRedact:  "redact",
	MaskerNull:    "null",
}

func (m Masker) String() string {
	if m < maskerCount {
		return maskerNames[m]
	}
	return "unknown"
}

// ParseMasker returns the masker with the given name (none excluded).
func ParseMasker(name string) (Masker, bool) {
	for i := MaskerPartial; i < maskerCount; i++ {
		if maskerNames[i] == name {
			return i, true
		}
	}
	return MaskerNone, false
}

// Detector finds sensitive values by content, whatever the column is called.
type Detector uint8

const (
	DetectorEmail Detector = iota
	DetectorCard           // payment card numbers (Luhn-checked)
	DetectorSSN            // US social security numbers
	DetectorIBAN
	DetectorPhone
	DetectorIP
	DetectorJWT
	DetectorAWSKey
	DetectorAPIToken // well-known token prefixes (ghp_, xoxb-, sk-…)
	DetectorPEM      // PEM private key blocks
	detectorCount
)

var detectorNames = [...]string{
	DetectorEmail:    "email",
	DetectorCard:     "card",
	DetectorSSN:      "ssn",
	DetectorIBAN:     "iban",
	DetectorPhone:    "phone",
	DetectorIP:       "ip",
	DetectorJWT:      "jwt",
	DetectorAWSKey:   "aws_key",
	DetectorAPIToken: "api_token",
	DetectorPEM:      "pem",
}

func (d Detector) String() string {
	if d < detectorCount {
		return detectorNames[d]
	}
	return "unknown"
}

// ParseDetector returns the detector with the given name.
func ParseDetector(name string) (Detector, bool) {
	for i := Detector(0); i < detectorCount; i++ {
		if detectorNames[i] == name {
			return i, true
		}
	}
	return 0, false
}

// Mask is the masking part of one mask rule, as written.
type Mask struct {
	RuleID    string
	Columns   []ColumnMask
	Detectors []Detector
	// Masker applies to detector hits.
	Masker Masker
}

// ColumnMask masks the columns whose qualified name matches Pattern.
//
// Patterns are matched against "schema.table.column", aligned on the right:
// "email" matches every column named email, "customers.email" the email
// column of a table customers in any schema, "public.customers.email" one
// column; each segment may use glob syntax ("*.ssn", "public.*.card_*").
type ColumnMask struct {
	Pattern string
	Masker  Masker
	glob    glob
	nseg    int // segments in Pattern
}

// matches reports whether the column (schema.table.column, or a shorter
// suffix when the protocol layer does not know the table) matches.
func (c *ColumnMask) matches(column string) bool {
	n := c.nseg
	// Keep the last n segments of the column name.
	s := column
	for i, k := len(column)-1, 0; i >= 0; i-- {
		if column[i] == '.' {
			k++
			if k == n {
				s = column[i+1:]
				break
			}
		}
	}
	return c.glob.match(s)
}

// maxMaskRules bounds the number of mask rules so that a Decision can carry
// the set of matched mask rules in a fixed-size bitset (no allocation).
const maxMaskRules = 256

type maskBits [maxMaskRules / 64]uint64

func (b *maskBits) set(i int)      { b[i/64] |= 1 << (i % 64) }
func (b *maskBits) has(i int) bool { return b[i/64]&(1<<(i%64)) != 0 }
func (b *maskBits) empty() bool {
	for _, w := range b {
		if w != 0 {
			return false
		}
	}
	return true
}

// MaskSpec is the merged masking of every mask rule that matched an
// operation. It is shared and must not be modified.
type MaskSpec struct {
	RuleIDs   []string
	Columns   []ColumnMask
	Detectors [detectorCount]Masker // MaskerNone: detector off
}

// Column returns the strongest masker among the column patterns matching
// column ("schema.table.column"; a shorter suffix is allowed), or
// MaskerNone.
func (m *MaskSpec) Column(column string) Masker {
	best := MaskerNone
	for i := range m.Columns {
		if m.Columns[i].Masker > best && m.Columns[i].matches(column) {
			best = m.Columns[i].Masker
		}
	}
	return best
}

// Detector returns the masker applied to values the detector finds, or
// MaskerNone when the detector is off.
func (m *MaskSpec) Detector(d Detector) Masker {
	if d < detectorCount {
		return m.Detectors[d]
	}
	return MaskerNone
}

// HasDetectors reports whether any detector is on, so a protocol layer can
// skip scanning values otherwise.
func (m *MaskSpec) HasDetectors() bool {
	for _, k := range m.Detectors {
		if k != MaskerNone {
			return true
		}
	}
	return false
}

// mergeMasks builds the MaskSpec for a set of mask rules. Results are cached
// per set: the same statements tend to match the same rules.
func (p *Policy) mergeMasks(bits maskBits) *MaskSpec {
	if bits.empty() {
		return nil
	}
	if v, ok := p.maskCache.Load(bits); ok {
		return v.(*MaskSpec)
	}
	spec := &MaskSpec{}
	for i, r := range p.maskRules {
		if !bits.has(i) {
			continue
		}
		spec.RuleIDs = append(spec.RuleIDs, r.id)
		for _, c := range r.mask.Columns {
			merged := false
			for j := range spec.Columns {
				if spec.Columns[j].Pattern == c.Pattern {
					spec.Columns[j].Masker = max(spec.Columns[j].Masker, c.Masker)
					merged = true
				}
			}
			if !merged {
				spec.Columns = append(spec.Columns, c)
			}
		}
		for _, d := range r.mask.Detectors {
			spec.Detectors[d] = max(spec.Detectors[d], r.mask.Masker)
		}
	}
	v, _ := p.maskCache.LoadOrStore(bits, spec)
	return v.(*MaskSpec)
}

// MasksFor returns every mask rule that can apply to the agent on the
// target, merged, whatever objects a statement touches (nil: none). The
// relay masks values that answer no statement — notification payloads,
// asynchronous notices — with it, so that an agent that only LISTENs still
// sees masked payloads.
func (p *Policy) MasksFor(agent, target string) *MaskSpec {
	roles := p.AgentRoles(agent)
	var bits maskBits
	for i, r := range p.maskRules {
		if !r.appliesTo(target) {
			continue
		}
		if r.role == "" || contains(roles, r.role) {
			bits.set(i)
		}
	}
	return p.mergeMasks(bits)
}
