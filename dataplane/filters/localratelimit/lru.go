package localratelimit

import (
	"container/list"
	"sync"
)

// lru is the buckets of a wildcard descriptor, by the values a request
// gave its wildcard entries: at most max of them, the least recently used
// dropped first (a new key then starts with a full bucket).
type lru struct {
	mu    sync.Mutex
	max   int
	order *list.List // of *lruItem, most recently used first
	items map[string]*list.Element
}

type lruItem struct {
	key    string
	bucket *bucket
}

func newLRU(max int) *lru {
	return &lru{max: max, order: list.New(), items: make(map[string]*list.Element)}
}

// get returns the bucket of key, made with mk when it has none.
func (c *lru) get(key string, mk func() *bucket) *bucket {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.order.MoveToFront(el)
		return el.Value.(*lruItem).bucket
	}
	b := mk()
	c.items[key] = c.order.PushFront(&lruItem{key: key, bucket: b})
	if c.order.Len() > c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*lruItem).key)
	}
	return b
}

// len is the number of buckets kept.
func (c *lru) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
