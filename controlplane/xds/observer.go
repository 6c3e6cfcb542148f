package xds

import "time"

// Observer is told of the server's work, for metrics. Its methods are
// called with the server's lock held: they must be quick and must not call
// the Server.
type Observer interface {
	// Pushed: a model change was applied to the connected proxies, in full
	// ("full": every node translated again) or to their endpoints only
	// ("endpoints"), in elapsed, updating proxies nodes.
	Pushed(kind string, elapsed time.Duration, proxies int)
	// BuildFailed: a node's configuration could not be translated or
	// encoded (it keeps the one it has).
	BuildFailed()
	// Nacked: a proxy rejected a configuration of type typeURL.
	Nacked(typeURL string)
}

// SetObserver makes o the server's observer (nil: none).
func (s *Server) SetObserver(o Observer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.observer = o
}

// observePushLocked reports the SetModel that started at start, when the
// full update count was fullBefore.
func (s *Server) observePushLocked(start time.Time, fullBefore int64) {
	if s.observer == nil {
		return
	}
	kind := "endpoints"
	if s.fullUpdates.Load() != fullBefore {
		kind = "full"
	}
	s.observer.Pushed(kind, time.Since(start), len(s.nodes))
}

func (s *Server) observeNackLocked(typeURL string) {
	if s.observer != nil {
		s.observer.Nacked(typeURL)
	}
}

func (s *Server) observeBuildFailedLocked() {
	if s.observer != nil {
		s.observer.BuildFailed()
	}
}
