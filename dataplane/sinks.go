package dataplane

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// sinkCloseTimeout bounds the close of a retired sink: a Tracer waits for
// the requests it traces to end (15 s is the default route timeout), then
// both kinds deliver their last items (spans exported, lines written).
const sinkCloseTimeout = 15 * time.Second

// sink is an output the listeners configured alike share: a Tracer
// (spans to a collector) or an access-log Writer (lines to a file).
type sink interface {
	// Counts are the items delivered and dropped so far.
	Counts() (delivered, dropped uint64)
	// Close delivers what is queued, until ctx ends, and releases the
	// sink.
	Close(ctx context.Context) error
}

// sinks are a proxy's live sinks of one kind, by the key of their
// settings. A sink no listener uses any more is closed in the background;
// it is counted while it closes and its counters are kept after, so that
// /stats and /metrics never go down. byKey is guarded by Proxy.mu; the
// rest by retiredMu.
type sinks[T sink] struct {
	byKey map[string]T

	retiredMu        sync.Mutex
	closing          map[uint64]T // by retirement number
	retirements      uint64
	retiredDelivered uint64
	retiredDropped   uint64
	wg               sync.WaitGroup // closing sinks
}

// get returns the sink of key, opened by open when first needed.
// Proxy.mu is held.
func (s *sinks[T]) get(key string, open func() (T, error)) (T, error) {
	if t, ok := s.byKey[key]; ok {
		return t, nil
	}
	t, err := open()
	if err != nil {
		return t, err
	}
	if s.byKey == nil {
		s.byKey = make(map[string]T)
	}
	s.byKey[key] = t
	return t, nil
}

// keep retires the sinks whose key is not in used. Proxy.mu is held.
func (s *sinks[T]) keep(used map[string]bool, logger *slog.Logger) {
	for key, t := range s.byKey {
		if !used[key] {
			delete(s.byKey, key)
			s.retire(context.Background(), t, logger)
		}
	}
}

// retireAll retires every sink; their last items are delivered until ctx
// ends. Proxy.mu is held; wait for them with wait, without it.
func (s *sinks[T]) retireAll(ctx context.Context, logger *slog.Logger) {
	for key, t := range s.byKey {
		delete(s.byKey, key)
		s.retire(ctx, t, logger)
	}
}

// wait waits until the retired sinks are closed.
func (s *sinks[T]) wait() { s.wg.Wait() }

// retire closes t in the background, keeping its counters; its last items
// are delivered until ctx ends, or sinkCloseTimeout.
func (s *sinks[T]) retire(ctx context.Context, t T, logger *slog.Logger) {
	s.retiredMu.Lock()
	s.retirements++
	n := s.retirements
	if s.closing == nil {
		s.closing = make(map[uint64]T)
	}
	s.closing[n] = t
	s.retiredMu.Unlock()
	s.wg.Go(func() {
		ctx, cancel := context.WithTimeout(ctx, sinkCloseTimeout)
		defer cancel()
		if err := t.Close(ctx); err != nil {
			logger.Debug("closing a retired sink", "error", err)
		}
		delivered, dropped := t.Counts()
		s.retiredMu.Lock()
		delete(s.closing, n)
		s.retiredDelivered += delivered
		s.retiredDropped += dropped
		s.retiredMu.Unlock()
	})
}

// totals are the number of open sinks (live, or retired and still
// closing) and the items delivered and dropped by every sink, open or
// closed. Proxy.mu is held.
func (s *sinks[T]) totals() (open int, delivered, dropped uint64) {
	s.retiredMu.Lock()
	delivered, dropped = s.retiredDelivered, s.retiredDropped
	open = len(s.closing)
	for _, t := range s.closing {
		d, x := t.Counts()
		delivered += d
		dropped += x
	}
	s.retiredMu.Unlock()
	for _, t := range s.byKey {
		d, x := t.Counts()
		delivered += d
		dropped += x
	}
	return open + len(s.byKey), delivered, dropped
}
