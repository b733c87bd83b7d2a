package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decoder walks a yaml.Node tree and collects every problem with its line,
// instead of decoding into structs: yaml's struct decoding stops at the first
// type error and cannot reject unknown keys with a position.
type decoder struct {
	file string
	errs Errors
	// nodes bounds the work spent on one file, so that alias-heavy input
	// (a "billion laughs" document) cannot make a reload spin.
	nodes int
	// roleRefs are role names used by targets (role_credentials), checked
	// once the roles section is parsed.
	roleRefs []roleRef
}

type roleRef struct {
	node *yaml.Node
	role string
	what string
}

// maxNodes is far above any policy a human writes.
const maxNodes = 1 << 20

var errTooLarge = errors.New("policy too large")

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	e := &Error{File: d.file, Message: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	d.errs = append(d.errs, e)
}

func (d *decoder) errorAt(line int, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Message: fmt.Sprintf(format, args...)})
}

// parseDocument parses data into its single YAML document. A syntax error
// is returned as Errors with the line yaml reports.
func (d *decoder) parseDocument(data []byte) (root *yaml.Node, err error) {
	defer func() {
		// yaml re-panics on internal errors it does not expect; a policy
		// reload must never take the daemon down with it.
		if r := recover(); r != nil {
			d.errorf(nil, "invalid YAML: %v", r)
			root, err = nil, d.errs
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			d.errorf(nil, "empty policy file")
			return nil, d.errs
		}
		d.yamlError(err)
		return nil, d.errs
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		d.errorf(&extra, "a policy file holds one YAML document, found another")
		return nil, d.errs
	} else if !errors.Is(err, io.EOF) {
		d.yamlError(err)
		return nil, d.errs
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		d.errorf(&doc, "empty policy file")
		return nil, d.errs
	}
	return doc.Content[0], nil
}

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlError turns yaml's "yaml: line N: msg" into a located Error.
func (d *decoder) yamlError(err error) {
	var te *yaml.TypeError
	msgs := []string{err.Error()}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	for _, m := range msgs {
		e := &Error{File: d.file, Message: strings.TrimPrefix(m, "yaml: ")}
		if sm := yamlLineRE.FindStringSubmatch(m); sm != nil {
			e.Line, _ = strconv.Atoi(sm[1])
			e.Message = sm[2]
		}
		e.Message = "invalid YAML: " + e.Message
		d.errs = append(d.errs, e)
	}
}

// resolve follows aliases and counts nodes against the budget.
func (d *decoder) resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode; i++ {
		if i > 64 {
			return nil
		}
		n = n.Alias
	}
	d.nodes++
	if d.nodes > maxNodes {
		panic(errTooLarge)
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// mapping walks a mapping node, calling fn for each known key and reporting
// unknown and duplicate keys. A null node is an empty mapping.
func (d *decoder) mapping(n *yaml.Node, what string, keys []string, fn func(key string, v *yaml.Node)) bool {
	n = d.resolve(n)
	if isNull(n) {
		return true
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s must be a mapping, not %s", what, describe(n))
		return false
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := d.resolve(n.Content[i]), n.Content[i+1]
		if k == nil || k.Kind != yaml.ScalarNode {
			d.errorf(n.Content[i], "%s: keys must be plain strings", what)
			continue
		}
		key := k.Value
		if line, dup := seen[key]; dup {
			d.errorf(k, "duplicate key %q in %s (first at line %d)", key, what, line)
			continue
		}
		seen[key] = k.Line
		if !contains(keys, key) {
			if key == "<<" {
				d.errorf(k, "merge keys (<<) are not supported in %s", what)
				continue
			}
			msg := fmt.Sprintf("unknown key %q in %s", key, what)
			if s := suggest(key, keys); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			d.errorf(k, "%s", msg)
			continue
		}
		fn(key, v)
	}
	return true
}

// sequence walks a sequence node. A null node is an empty sequence.
func (d *decoder) sequence(n *yaml.Node, what string, fn func(i int, v *yaml.Node)) {
	n = d.resolve(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, "%s must be a list, not %s", what, describe(n))
		return
	}
	for i, v := range n.Content {
		fn(i, v)
	}
}

// str returns a non-empty scalar as a string.
func (d *decoder) str(n *yaml.Node, what string) (string, bool) {
	n = d.resolve(n)
	if n == nil || n.Kind != yaml.ScalarNode {
		d.errorf(n, "%s must be a string, not %s", what, describe(n))
		return "", false
	}
	if isNull(n) || n.Value == "" {
		d.errorf(n, "%s must not be empty", what)
		return "", false
	}
	return n.Value, true
}

// strList returns a list of non-empty strings.
func (d *decoder) strList(n *yaml.Node, what string) ([]string, []*yaml.Node) {
	var out []string
	var nodes []*yaml.Node
	d.sequence(n, what, func(_ int, v *yaml.Node) {
		if s, ok := d.str(v, what+" entry"); ok {
			out = append(out, s)
			nodes = append(nodes, d.resolve(v))
		}
	})
	return out, nodes
}

func (d *decoder) boolean(n *yaml.Node, what string) (bool, bool) {
	n = d.resolve(n)
	if n == nil || n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		d.errorf(n, "%s must be true or false", what)
		return false, false
	}
	v, err := strconv.ParseBool(strings.ToLower(n.Value))
	if err != nil {
		d.errorf(n, "%s must be true or false", what)
		return false, false
	}
	return v, true
}

func (d *decoder) integer(n *yaml.Node, what string) (int64, bool) {
	n = d.resolve(n)
	if n == nil || n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		d.errorf(n, "%s must be an integer", what)
		return 0, false
	}
	v, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
	if err != nil {
		d.errorf(n, "%s: %v", what, err)
		return 0, false
	}
	return v, true
}

// duration parses "60s", "2m"; the bound keeps typos such as "60000s" out.
func (d *decoder) duration(n *yaml.Node, what string) (time.Duration, bool) {
	s, ok := d.str(n, what)
	if !ok {
		return 0, false
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		d.errorf(n, "%s: %q is not a duration (use e.g. 30s, 5m)", what, s)
		return 0, false
	}
	if v <= 0 || v > 24*time.Hour {
		d.errorf(n, "%s must be between 0s and 24h, got %s", what, s)
		return 0, false
	}
	return v, true
}

// oneOf parses a string that must be one of the given words.
func (d *decoder) oneOf(n *yaml.Node, what string, words ...string) (string, bool) {
	s, ok := d.str(n, what)
	if !ok {
		return "", false
	}
	if !contains(words, s) {
		d.errorf(n, "%s must be one of %s, not %q", what, strings.Join(words, ", "), s)
		return "", false
	}
	return s, true
}

func describe(n *yaml.Node) string {
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "null"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "an alias"
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// suggest returns the known key closest to key, if it is close enough to be
// a typo.
func suggest(key string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if dd := editDistance(key, k); dd < bestD {
			best, bestD = k, dd
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
