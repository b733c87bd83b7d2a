package postgres

import (
	"container/list"
	"sync"
)

// maxCachedQuery is the longest query text the cache keeps. The cache is
// bounded by entries; without this a few multi-megabyte bulk INSERTs (which
// rarely repeat) could pin hundreds of megabytes. Longer queries are
// classified every time.
const maxCachedQuery = 16 << 10

// lru is a least-recently-used cache of classifications keyed by the exact
// query text, or by the text with integer literals normalized (literalKey,
// whose keys start with a NUL byte): a different byte otherwise (case,
// comment, whitespace) is a different key, which costs a parse but can
// never return another query's result.
type lru struct {
	mu    sync.Mutex
	max   int
	ll    *list.List // front is most recent; values are *lruEntry
	items map[string]*list.Element
}

type lruEntry struct {
	key string
	cl  *Classification
}

func newLRU(max int) *lru {
	return &lru{max: max, ll: list.New(), items: make(map[string]*list.Element, min(max, 1024))}
}

func (c *lru) get(key string) (*Classification, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[key]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*lruEntry).cl, true
}

func (c *lru) add(key string, cl *Classification) {
	if len(key) > maxCachedQuery {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		// Two sessions classified the same text concurrently; the
		// results are equal, keep the first.
		c.ll.MoveToFront(e)
		return
	}
	c.items[key] = c.ll.PushFront(&lruEntry{key: key, cl: cl})
	for c.ll.Len() > c.max {
		oldest := c.ll.Back()
		c.ll.Remove(oldest)
		delete(c.items, oldest.Value.(*lruEntry).key)
	}
}

// len returns the number of cached entries.
func (c *lru) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
