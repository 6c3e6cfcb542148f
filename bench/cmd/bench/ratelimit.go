package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// wlRateLimit is the section of the cost of a local rate limit.
const wlRateLimit = "(r) local rate limit cost: meshgate gateway, tiny body, max rate (wrk), a TrafficPolicy local rate limit (never reached) vs none, one gateway, same run"

// rateLimitPolicyFile is the TrafficPolicy of the rate limit rows, in the
// data-plane policy directory while they run.
const rateLimitPolicyFile = "ratelimit.yaml"

// rateLimitPolicy limits the backend Service's requests per client address
// and in all, far above what the machine serves: every request is
// counted, none refused (wrk would count 429s as answers).
const rateLimitPolicy = `apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: backend-rate}
spec:
  targetRefs: [{kind: Service, name: backend}]
  rateLimit:
    local:
      rules:
      - limit: {requests: 1000000000, unit: Second}
        key: {clientIP: {}}
      - limit: {requests: 1000000000, unit: Second}
`

// rateLimit runs workload (r): one meshgate gateway measured without a
// rate limit, then with a local rate limit per client address on the
// backend Service, then both again; the policy changes over xDS between
// the rows.
func (r *runner) rateLimit(ctx context.Context, env *meshgateEnv) error {
	return r.measureOnOff(ctx, env, onOffPolicy{
		workload: wlRateLimit, file: rateLimitPolicyFile, policy: rateLimitPolicy,
		off: "no rate limit", on: "local rate limit per client IP",
		served: servesLocalRateLimit, what: "local rate limit",
		note: "One gateway process, the TrafficPolicy (a local rate limit per client address and one in all, " +
			"both far above the machine's rate: every request takes a token from its client's bucket, none is refused) added and removed over xDS between the rows " +
			"(no restart), each row run twice, alternating: the spread between a row's two runs is the noise.",
	})
}

// servesLocalRateLimit reports whether the gateway's /config_dump has the
// local rate limit filter.
func servesLocalRateLimit(ctx context.Context, admin string) (bool, error) {
	body, err := configDump(ctx, admin)
	if err != nil {
		return false, err
	}
	return strings.Contains(body, "local_ratelimit"), nil
}

// configDump returns the gateway's /config_dump.
func configDump(ctx context.Context, admin string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, admin+"/config_dump", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return "", fmt.Errorf("/config_dump: %w", err)
	}
	return string(body), nil
}
