package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/meshgate/meshgate/dataplane"
)

// proxyLifecycleFlags are the graceful-stop and connection-limit flags of
// the gateway and sidecar commands (docs/operations.md).
type proxyLifecycleFlags struct {
	drainDelay     time.Duration
	drainTimeout   time.Duration
	maxConnections int
}

func (p *proxyLifecycleFlags) register(f *pflag.FlagSet) {
	f.DurationVar(&p.drainDelay, "drain-delay", dataplane.DefaultDrainDelay, "on SIGTERM or SIGINT, how long the listeners keep serving once the proxy "+
		"has left Consul and its /ready fails, so that callers stop sending to it; then they close (0: at once)")
	f.DurationVar(&p.drainTimeout, "drain-timeout", dataplane.DefaultDrainTimeout, "how long in-flight requests may take to finish once the "+
		"listeners are closed (a second SIGTERM or SIGINT stops at once)")
	f.IntVar(&p.maxConnections, "max-connections", dataplane.DefaultMaxConnections, "downstream connections each listener holds at most: "+
		"at the limit a new connection replaces the one idle the longest, or is shed when all are busy (counted in /stats); 0: no limit")
}

// options checks the flags and returns the connection limit and graceful
// stop they set (FastHTTP1 is proxyServerFlags').
func (p *proxyLifecycleFlags) options() (dataplane.ServingOptions, error) {
	switch {
	case p.drainDelay < 0:
		return dataplane.ServingOptions{}, fmt.Errorf("--drain-delay %s: must not be negative", p.drainDelay)
	case p.drainTimeout <= 0:
		return dataplane.ServingOptions{}, fmt.Errorf("--drain-timeout %s: must be positive", p.drainTimeout)
	case p.maxConnections < 0:
		return dataplane.ServingOptions{}, fmt.Errorf("--max-connections %d: must not be negative (0: no limit)", p.maxConnections)
	}
	out := dataplane.ServingOptions{DrainDelay: p.drainDelay, DrainTimeout: p.drainTimeout, MaxConnections: p.maxConnections}
	if p.maxConnections == 0 {
		out.MaxConnections = -1 // dataplane: negative is no limit, zero its default
	}
	return out, nil
}

// runProxy runs a gateway or sidecar until ctx is done (the first SIGTERM
// or SIGINT) and through its graceful stop; a second signal during the stop
// calls stopNow.
func runProxy(ctx context.Context, logger *slog.Logger, stopNow func(), run func(context.Context) error) error {
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(signals)
	seen := 0
	if ctx.Err() != nil {
		seen = 1 // the first signal came before this one listened
	}
	done := make(chan struct{})
	defer close(done)
	go stopOnSecondSignal(signals, seen, done, logger, stopNow)
	return run(ctx)
}

// stopOnSecondSignal calls stopNow on the second signal received (seen
// were received before), unless done first.
func stopOnSecondSignal(signals <-chan os.Signal, seen int, done <-chan struct{}, logger *slog.Logger, stopNow func()) {
	for {
		select {
		case sig := <-signals:
			seen++
			if seen >= 2 {
				logger.Warn("second signal during the graceful stop: stopping now", "signal", sig.String())
				stopNow()
				return
			}
		case <-done:
			return
		}
	}
}
