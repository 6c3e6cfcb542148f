package main

import (
	"context"
	"log/slog"
	"net"

	"github.com/meshgate/meshgate/policy"
	"github.com/meshgate/meshgate/ratelimit"
)

// devRateLimitService is the rate-limit service meshgate dev runs when the
// MeshConfig names one on a loopback address (rateLimitService.address):
// meshgate ratelimit with its in-memory store, so that global rate limits
// work without a Redis.
func devRateLimitService(set *policy.Set, logger *slog.Logger) (devTask, bool) {
	if set.MeshConfig == nil || set.MeshConfig.Spec.RateLimitService == nil {
		return devTask{}, false
	}
	addr := set.MeshConfig.Spec.RateLimitService.Address
	host, _, err := net.SplitHostPort(addr)
	if err != nil || !isLoopback(host) {
		return devTask{}, false
	}
	return devTask{name: "ratelimit", run: func(ctx context.Context) error {
		return ratelimit.Serve(ctx, ratelimit.Options{Listen: addr, Memory: true, Logger: logger})
	}}, true
}
