package rbac

import (
	"sync"
	"sync/atomic"
)

// Stats counts denied requests by key (see Filter.StatKey): the rbac_denied
// counters of the proxy's /stats. Inc on a key seen before takes no lock and
// allocates nothing; the zero value is ready to use, and a nil *Stats counts
// nothing.
type Stats struct {
	counters sync.Map // string → *atomic.Uint64
}

// Inc adds one denial to key.
func (s *Stats) Inc(key string) {
	if s == nil {
		return
	}
	if c, ok := s.counters.Load(key); ok {
		c.(*atomic.Uint64).Add(1)
		return
	}
	c, _ := s.counters.LoadOrStore(key, new(atomic.Uint64))
	c.(*atomic.Uint64).Add(1)
}

// Get returns the count of key.
func (s *Stats) Get(key string) uint64 {
	if s == nil {
		return 0
	}
	if c, ok := s.counters.Load(key); ok {
		return c.(*atomic.Uint64).Load()
	}
	return 0
}

// Snapshot returns every counter, by key.
func (s *Stats) Snapshot() map[string]uint64 {
	out := make(map[string]uint64)
	if s == nil {
		return out
	}
	s.counters.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	return out
}
