package cache

import (
	"container/list"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// entry is one stored response (a variant of its key).
type entry struct {
	key    string
	path   string // the request path, for purges by prefix
	status int
	header http.Header
	body   []byte
	// vary: the request's values of the headers the response varies on.
	vary map[string]string
	// responseTime: when the response was received (or last validated);
	// initialAge its age then.
	responseTime time.Time
	initialAge   time.Duration
	lifetime     time.Duration
	swr          time.Duration
	size         int64
	elem         *list.Element
}

// age is the entry's current age (RFC 9111 4.2.3).
func (e *entry) age(now time.Time) time.Duration {
	return e.initialAge + max(now.Sub(e.responseTime), 0)
}

// matches reports whether the entry is the variant for request headers h.
func (e *entry) matches(h http.Header) bool {
	for name, v := range e.vary {
		if strings.Join(h[name], ",") != v {
			return false
		}
	}
	return true
}

// flight is one upstream request that concurrent misses of its key wait
// for (request coalescing).
type flight struct {
	done  chan struct{}
	entry *entry // what the leader stored; nil: the followers fetch themselves
}

// store is an LRU of entries within a byte budget, shared by the routes of
// one listener. Safe for concurrent use.
type store struct {
	mu      sync.Mutex
	max     int64
	used    int64
	lru     *list.List // of *entry, most recently used first
	byKey   map[string][]*entry
	flights map[string]*flight
	// refreshing: keys being revalidated in the background.
	refreshing map[string]bool
}

func newStore(maxBytes int64) *store {
	return &store{max: maxBytes, lru: list.New(), byKey: map[string][]*entry{},
		flights: map[string]*flight{}, refreshing: map[string]bool{}}
}

// entrySize is what an entry costs the budget: its body, headers and key.
func entrySize(e *entry) int64 {
	n := int64(len(e.body) + len(e.key) + len(e.path) + 128)
	for k, vs := range e.header {
		n += int64(len(k))
		for _, v := range vs {
			n += int64(len(v)) + 16
		}
	}
	return n
}

// get returns the variant of key for request headers h, marking it used.
func (s *store) get(key string, h http.Header) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.byKey[key] {
		if e.matches(h) {
			s.lru.MoveToFront(e.elem)
			return e
		}
	}
	return nil
}

// put stores e, replacing the variant it matches and evicting the least
// recently used entries over the budget. An entry larger than the whole
// budget is not stored.
func (s *store) put(e *entry) {
	e.size = entrySize(e)
	if e.size > s.max {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	variants := s.byKey[e.key]
	for i, old := range variants {
		if sameVary(old.vary, e.vary) {
			s.lru.Remove(old.elem)
			s.used -= old.size
			variants = append(variants[:i], variants[i+1:]...)
			break
		}
	}
	e.elem = s.lru.PushFront(e)
	s.byKey[e.key] = append(variants, e)
	s.used += e.size
	for s.used > s.max {
		s.removeLocked(s.lru.Back().Value.(*entry))
	}
}

func sameVary(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func (s *store) removeLocked(e *entry) {
	s.lru.Remove(e.elem)
	s.used -= e.size
	variants := s.byKey[e.key]
	for i, v := range variants {
		if v == e {
			variants = append(variants[:i], variants[i+1:]...)
			break
		}
	}
	if len(variants) == 0 {
		delete(s.byKey, e.key)
	} else {
		s.byKey[e.key] = variants
	}
}

// invalidate removes every variant of key.
func (s *store) invalidate(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range slices.Clone(s.byKey[key]) {
		s.removeLocked(e)
	}
}

// purge removes the entries whose path starts with prefix ("" or "/":
// all), returning how many.
func (s *store) purge(prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for el := s.lru.Front(); el != nil; {
		next := el.Next()
		if e := el.Value.(*entry); strings.HasPrefix(e.path, prefix) {
			s.removeLocked(e)
			n++
		}
		el = next
	}
	return n
}

// stats returns the number of entries and the bytes they cost.
func (s *store) stats() (entries int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lru.Len(), s.used
}

// join returns the flight of key and whether the caller leads it (makes
// the upstream request and must call land).
func (s *store) join(key string) (*flight, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.flights[key]; f != nil {
		return f, false
	}
	f := &flight{done: make(chan struct{})}
	s.flights[key] = f
	return f, true
}

// land ends the flight of key with e (nil: not shareable).
func (s *store) land(key string, f *flight, e *entry) {
	s.mu.Lock()
	delete(s.flights, key)
	s.mu.Unlock()
	f.entry = e
	close(f.done)
}

// startRefresh claims the background revalidation of key: false when one
// is under way.
func (s *store) startRefresh(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refreshing[key] {
		return false
	}
	s.refreshing[key] = true
	return true
}

func (s *store) endRefresh(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.refreshing, key)
}
