package policy

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Rule ids of decisions that no rule in the file produced.
const (
	// RuleDefaultDeny: some object of the operation was not covered by any
	// allow, mask or approve rule.
	RuleDefaultDeny = "default-deny"
	// RuleUnclassified: the protocol layer could not classify the operation.
	RuleUnclassified = "unclassified"
	// RuleUnknownTarget: the operation names a target the policy does not
	// define (for example one removed by a reload while a session was open).
	RuleUnknownTarget = "unknown-target"
)

// ErrInvalid is matched (errors.Is) by every error Parse returns for a file
// that was read but is not a valid policy.
var ErrInvalid = errors.New("invalid policy")

// Error is one problem in a policy file, located by line (1-based; 0 when the
// problem concerns the whole file).
type Error struct {
	File    string
	Line    int
	Column  int
	Message string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Message)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Message)
}

// Is makes every *Error match ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// Errors is every problem found in one policy file, sorted by line. Parse
// collects them all instead of stopping at the first, so an operator fixes a
// file in one pass.
type Errors []*Error

func (l Errors) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Is makes Errors match ErrInvalid.
func (l Errors) Is(target error) bool { return target == ErrInvalid }

// Unwrap exposes the individual errors to errors.As.
func (l Errors) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

func (l Errors) sort() {
	sort.SliceStable(l, func(i, j int) bool {
		if l[i].Line != l[j].Line {
			return l[i].Line < l[j].Line
		}
		return l[i].Column < l[j].Column
	})
}
