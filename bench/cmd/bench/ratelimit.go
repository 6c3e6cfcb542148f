package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
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
	s := r.table.section(wlRateLimit, "no rate limit")
	path := filepath.Join(r.work, "policy", rateLimitPolicyFile)
	defer os.Remove(path)
	applied := func(on bool) func(context.Context, string) error {
		return func(ctx context.Context, admin string) error {
			got, err := servesLocalRateLimit(ctx, admin)
			switch {
			case err != nil:
				return err
			case got != on:
				return fmt.Errorf("local rate limit %v, want %v", got, on)
			}
			return nil
		}
	}
	rows := []policyRow{
		{name: "no rate limit", applied: applied(false)},
		{name: "local rate limit per client IP", policy: rateLimitPolicy, applied: applied(true)},
		{name: "no rate limit (again)", applied: applied(false)},
		{name: "local rate limit per client IP (again)", policy: rateLimitPolicy, applied: applied(true)},
	}
	c, err := r.startMeshgateGateway(ctx, env, "meshgate")
	if err != nil {
		if c != nil {
			c.stop()
		}
		return err
	}
	defer c.stop()
	err = r.measurePolicyRows(ctx, c, s, wlRateLimit, path, rows)
	s.notes = append(s.notes, "One gateway process, the TrafficPolicy (a local rate limit per client address and one in all, "+
		"both far above the machine's rate: every request takes a token from its client's bucket, none is refused) added and removed over xDS between the rows "+
		"(no restart), each row run twice, alternating: the spread between a row's two runs is the noise. "+
		"The rows run one after the other on a machine that may be shared: compare them within this run only.")
	return err
}

// servesLocalRateLimit reports whether the gateway's /config_dump has the
// local rate limit filter.
func servesLocalRateLimit(ctx context.Context, admin string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, admin+"/config_dump", nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return false, fmt.Errorf("/config_dump: %w", err)
	}
	return strings.Contains(string(body), "local_ratelimit"), nil
}
