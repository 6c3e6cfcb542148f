package httpfilter

import (
	"sync"
	"sync/atomic"
)

// Stats holds the filters' counters of one proxy, by family (rbac_denied,
// ...), each a set of counters by key: the families of /stats. The zero
// value is ready to use; it is safe for concurrent use.
type Stats struct {
	families sync.Map // string → *Counters
}

// Counters returns the family called name, created empty on first use; nil
// (which counts nothing) when s is nil.
func (s *Stats) Counters(name string) *Counters {
	if s == nil {
		return nil
	}
	if c, ok := s.families.Load(name); ok {
		return c.(*Counters)
	}
	c, _ := s.families.LoadOrStore(name, new(Counters))
	return c.(*Counters)
}

// Snapshot returns every family's counters, by family and key.
func (s *Stats) Snapshot() map[string]map[string]uint64 {
	out := make(map[string]map[string]uint64)
	if s == nil {
		return out
	}
	s.families.Range(func(k, v any) bool {
		out[k.(string)] = v.(*Counters).Snapshot()
		return true
	})
	return out
}

// Counters counts events by key (a policy name, ...). Inc on a key seen
// before takes no lock and allocates nothing; the zero value is ready to
// use, and a nil *Counters counts nothing.
type Counters struct {
	counters sync.Map // string → *atomic.Uint64
}

// Inc adds one to key.
func (c *Counters) Inc(key string) {
	if c == nil {
		return
	}
	if n, ok := c.counters.Load(key); ok {
		n.(*atomic.Uint64).Add(1)
		return
	}
	n, _ := c.counters.LoadOrStore(key, new(atomic.Uint64))
	n.(*atomic.Uint64).Add(1)
}

// Get returns the count of key.
func (c *Counters) Get(key string) uint64 {
	if c == nil {
		return 0
	}
	if n, ok := c.counters.Load(key); ok {
		return n.(*atomic.Uint64).Load()
	}
	return 0
}

// Snapshot returns every counter, by key.
func (c *Counters) Snapshot() map[string]uint64 {
	out := make(map[string]uint64)
	if c == nil {
		return out
	}
	c.counters.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	return out
}
