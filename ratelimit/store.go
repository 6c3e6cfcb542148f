package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisStore counts in Redis: INCRBY and EXPIREAT in one MULTI/EXEC, so
// every instance of the service sharing the Redis counts the same window
// atomically.
type RedisStore struct {
	client  *redis.Client
	timeout time.Duration
}

// NewRedisStore returns a store on the Redis at addr (host:port); each
// operation is bounded by timeout.
func NewRedisStore(addr string, timeout time.Duration) *RedisStore {
	return &RedisStore{
		client: redis.NewClient(&redis.Options{
			Addr:         addr,
			DialTimeout:  timeout,
			ReadTimeout:  timeout,
			WriteTimeout: timeout,
			MaxRetries:   0,
			PoolSize:     32,
		}),
		timeout: timeout,
	}
}

// Add implements Store.
func (s *RedisStore) Add(ctx context.Context, key string, hits uint64, expires time.Time) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var incr *redis.IntCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		incr = p.IncrBy(ctx, key, int64(hits))
		// A second past the window's end: a clock a little behind still
		// finds the counter.
		p.ExpireAt(ctx, key, expires.Add(time.Second))
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("redis: %w", err)
	}
	return uint64(incr.Val()), nil
}

// Ping checks that Redis answers.
func (s *RedisStore) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.client.Ping(ctx).Err()
}

// Close closes the connections.
func (s *RedisStore) Close() error { return s.client.Close() }

// MemoryStore counts in this process (meshgate dev: one instance, counts
// lost on restart), at most max counters: past it, expired ones are
// dropped, and a new counter is refused if none had.
type MemoryStore struct {
	mu       sync.Mutex
	max      int
	counters map[string]memoryCounter
	now      func() time.Time
}

type memoryCounter struct {
	count   uint64
	expires time.Time
}

// errMemoryFull is what a full MemoryStore answers for a new counter.
var errMemoryFull = errors.New("memory store: too many counters")

// NewMemoryStore returns a store of at most max counters.
func NewMemoryStore(max int) *MemoryStore {
	return &MemoryStore{max: max, counters: make(map[string]memoryCounter), now: time.Now}
}

// Add implements Store.
func (s *MemoryStore) Add(_ context.Context, key string, hits uint64, expires time.Time) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.counters[key]
	if !ok && len(s.counters) >= s.max {
		now := s.now()
		for k, v := range s.counters {
			if !v.expires.After(now) {
				delete(s.counters, k)
			}
		}
		if len(s.counters) >= s.max {
			return 0, errMemoryFull
		}
	}
	c.count += hits
	c.expires = expires
	s.counters[key] = c
	return c.count, nil
}
