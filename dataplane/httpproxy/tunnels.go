package httpproxy

import (
	"context"
	"sync"
)

// tunnelSet is the WebSockets a handler carries (spliced connections,
// which the http.Server no longer tracks once hijacked), so that a
// graceful stop can wait for them and then close them (DrainTunnels).
// Its zero value is ready; a handler without WebSockets never touches it.
type tunnelSet struct {
	mu   sync.Mutex
	live map[*tunnel]*tunnelEnds
	// closed: DrainTunnels gave up waiting; a tunnel opening after that is
	// closed at once.
	closed bool
}

// tunnelEnds are the two connections of a tunnel and what closes when it
// ends.
type tunnelEnds struct {
	a, b *tunnelEnd
	done chan struct{}
}

// add registers a tunnel; false when the set is closed (the caller
// closes the tunnel's connections instead of splicing them).
func (s *tunnelSet) add(t *tunnel, a, b *tunnelEnd) (*tunnelEnds, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false
	}
	if s.live == nil {
		s.live = make(map[*tunnel]*tunnelEnds)
	}
	e := &tunnelEnds{a: a, b: b, done: make(chan struct{})}
	s.live[t] = e
	return e, true
}

// remove unregisters an ended tunnel.
func (s *tunnelSet) remove(t *tunnel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.live[t]; e != nil {
		close(e.done)
		delete(s.live, t)
	}
}

// any returns one live tunnel's end signal, nil when none is left.
func (s *tunnelSet) any() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.live {
		return e.done
	}
	return nil
}

// DrainTunnels waits, once the listener stopped accepting, for the
// WebSockets in progress to end (either side closing them, or their idle
// timeout) until ctx ends, then closes the ones left, both connections of
// each, and those that open after; it returns how many it closed. It is
// the WebSockets' part of a graceful stop or of a removed listener's drain
// (docs/edge.md).
func (h *Handler) DrainTunnels(ctx context.Context) int {
	for {
		done := h.tunnels.any()
		if done == nil {
			return 0
		}
		select {
		case <-done:
		case <-ctx.Done():
			return h.tunnels.closeAll()
		}
	}
}

// closeAll closes every live tunnel and the set.
func (s *tunnelSet) closeAll() int {
	s.mu.Lock()
	s.closed = true
	ends := make([]*tunnelEnds, 0, len(s.live))
	for _, e := range s.live {
		ends = append(ends, e)
	}
	s.mu.Unlock()
	for _, e := range ends {
		_ = e.a.conn.Close()
		_ = e.b.conn.Close()
	}
	return len(ends)
}
