package postgres

import (
	"strings"
	"sync"

	"github.com/interlockhq/interlock/engine/policy"
)

// maxCategoryMemo bounds the memo. Names are identifiers (at most 63 bytes
// each after the parser truncates them), so the memo stays under a
// megabyte; once full, further names are looked up every time.
const maxCategoryMemo = 4096

// categoryMemo remembers functionCategory per name for one Classifier.
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

// of returns functionCategory(name). A nil memo computes it every time.
func (c *categoryMemo) of(name string) policy.FunctionCategory {
	if c == nil {
		return functionCategory(name)
	}
	c.mu.RLock()
	cat, ok := c.m[name]
	c.mu.RUnlock()
	if ok {
		return cat
	}
	cat = functionCategory(name)
	c.mu.Lock()
	if len(c.m) < maxCategoryMemo {
		c.m[name] = cat
	}
	c.mu.Unlock()
	return cat
}

// functionCategory is the category of the function name (as functionName
// gives it): policy.CategoryOf, and admin for a function written with
// schema pg_catalog that is not one the classifier knows (builtinFunctions,
// from PostgreSQL 15). Such a function came with a newer server or an
// extension installed in pg_catalog (pg_restore_relation_stats,
// pg_sync_replication_slots, pageinspect's get_raw_page): the policy must
// not take it for an ordinary built-in, which needs no rule.
func functionCategory(name string) policy.FunctionCategory {
	if cat := policy.CategoryOf(name); cat != policy.CategoryNone {
		return cat
	}
	if base, ok := strings.CutPrefix(name, schemaCatalog+"."); ok && !isBuiltinFunction(base) {
		return policy.CategoryAdmin
	}
	return policy.CategoryNone
}
