package postgres

import (
	"sync"

	"github.com/interlockhq/interlock/engine/policy"
)

// maxCategoryMemo bounds the memo. Names are identifiers (at most 63 bytes
// each after the parser truncates them), so the memo stays under a
// megabyte; once full, further names are looked up every time.
const maxCategoryMemo = 4096

// categoryMemo remembers policy.CategoryOf per name for one Classifier.
// CategoryOf scans its prefix patterns on every call (~1 µs), and the
// classifier asks it for every function call and for every qualified column
// reference (x.f may be the call f(x)); column names repeat across queries,
// so the memo turns most of those into a map lookup.
type categoryMemo struct {
	mu sync.RWMutex
	m  map[string]policy.FunctionCategory
}

func newCategoryMemo() *categoryMemo {
	return &categoryMemo{m: make(map[string]policy.FunctionCategory)}
}

// of returns policy.CategoryOf(name). A nil memo computes it every time.
func (c *categoryMemo) of(name string) policy.FunctionCategory {
	if c == nil {
		return policy.CategoryOf(name)
	}
	c.mu.RLock()
	cat, ok := c.m[name]
	c.mu.RUnlock()
	if ok {
		return cat
	}
	cat = policy.CategoryOf(name)
	c.mu.Lock()
	if len(c.m) < maxCategoryMemo {
		c.m[name] = cat
	}
	c.mu.Unlock()
	return cat
}
