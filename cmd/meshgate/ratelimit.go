package main

import (
	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/ratelimit"
)

func newRateLimitCmd(g *globalFlags) *cobra.Command {
	opts := ratelimit.Options{}
	cmd := &cobra.Command{
		Use:   "ratelimit",
		Short: "Run the global rate-limit service (Envoy's RLS gRPC API, counters in Redis)",
		Long: `Run the global rate-limit service: it answers the proxies' rate limit
checks (envoy.service.ratelimit.v3.RateLimitService) for the TrafficPolicy
rateLimit.global rules, counting requests in fixed windows in Redis, so that
every gateway replica and sidecar shares one count. Run as many instances as
you like on one Redis. The limits come from the control plane, inside the
descriptors the proxies send: the service has no configuration of its own.

When Redis does not answer, checks fail and each policy's failureMode
decides (Allow or Deny). --memory counts in this process instead (one
instance only; meshgate dev).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Logger = g.logger()
			return ratelimit.Serve(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Listen, "listen", ratelimit.DefaultListen, "gRPC address to serve on")
	cmd.Flags().StringVar(&opts.Redis, "redis", "", "Redis address (host:port) holding the counters")
	cmd.Flags().DurationVar(&opts.RedisTimeout, "redis-timeout", ratelimit.DefaultRedisTimeout, "bound on each Redis operation")
	cmd.Flags().BoolVar(&opts.Memory, "memory", false, "count in this process instead of Redis (a single instance: development only)")
	return cmd
}
