package dataplane

import (
	"context"
	"log/slog"
	"time"
)

// Stop defaults (docs/operations.md, "Stopping a proxy").
const (
	// DefaultDrainDelay is the drain delay of `meshgate gateway` and
	// `meshgate sidecar` (Options.DrainDelay is zero, no delay, when
	// unset): long enough for a deregistration to reach the callers
	// (Consul's blocking query, the control plane's push and the callers'
	// update take well under a second on a healthy mesh; five seconds
	// leave room for a loaded one, as Istio's terminationDrainDuration).
	DefaultDrainDelay = 5 * time.Second
	// DefaultDrainTimeout bounds the wait for in-flight requests once the
	// listeners are closed (Options.DrainTimeout zero): with the default
	// delay, 25 s, within Kubernetes' default grace period of 30 s before
	// SIGKILL, with time left for the deregistration.
	DefaultDrainTimeout = 20 * time.Second
)

// stopSequence is the order of a graceful stop:
//
//  1. readiness fails (/ready answers 503 "draining") and the proxy leaves
//     service discovery (its Consul registration is removed);
//  2. the drain delay passes, the listeners still accepting and serving
//     as before, so that callers that learn of step 1 stop sending;
//  3. the listeners stop accepting: idle connections are closed, busy ones
//     get Connection: close (HTTP/1) or GOAWAY (HTTP/2) with their last
//     response;
//  4. in-flight requests have up to the drain timeout to finish; what is
//     left is then closed.
//
// abort (the proxy's StopNow) skips whatever waits remain. The steps are
// hooks so that the order and the timing can be tested alone.
type stopSequence struct {
	delay   time.Duration // step 2; zero: none
	timeout time.Duration // step 4
	abort   context.Context
	logger  *slog.Logger

	failReadiness func()
	// leave, when set, takes the proxy out of service discovery and
	// returns when done (ctx ends on abort).
	leave func(ctx context.Context)
	// serving reports whether a listener is bound: without one, nobody
	// is waited for.
	serving func() bool
	// closeListeners stops accepting, lets in-flight requests finish until
	// ctx ends, then closes what is left.
	closeListeners func(ctx context.Context)
}

func (s stopSequence) run() {
	s.failReadiness()
	if s.leave != nil {
		s.logger.Info("proxy stopping: readiness fails, leaving service discovery")
		s.leave(s.abort)
	} else {
		s.logger.Info("proxy stopping: readiness fails")
	}
	if s.delay > 0 && s.abort.Err() == nil && s.serving() {
		s.logger.Info("drain delay: listeners keep serving while callers learn of the stop", "delay", s.delay)
		t := time.NewTimer(s.delay)
		select {
		case <-t.C:
		case <-s.abort.Done():
		}
		t.Stop()
	}
	if s.abort.Err() != nil {
		s.logger.Info("proxy stopping now: closing listeners and connections")
	} else {
		s.logger.Info("closing listeners: in-flight requests may finish", "timeout", s.timeout)
	}
	ctx, cancel := context.WithTimeout(s.abort, s.timeout)
	defer cancel()
	s.closeListeners(ctx)
}
