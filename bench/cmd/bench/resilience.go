package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// wlResilience is the section of the cost of a TrafficPolicy with retries
// and outlier detection.
const wlResilience = "(g) resilience cost: meshgate gateway, tiny body, max rate (wrk), retries + outlier detection vs no TrafficPolicy, one gateway, same run"

// resiliencePolicyFile is the TrafficPolicy of the resilience row, in the
// data-plane policy directory while it runs.
const resiliencePolicyFile = "resilience.yaml"

// resiliencePolicy retries the backend's failed requests (twice, on
// another endpoint when there is one) and ejects an endpoint after 5
// gateway errors in a row: the quickstart's protection of a service.
const resiliencePolicy = `apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: backend-resilient}
spec:
  targetRefs: [{kind: Service, name: backend}]
  retry:
    attempts: 2
    retryOn: [connect-failure, reset, gateway-error]
    backoff: {base: 25ms}
  outlierDetection:
    consecutiveGatewayErrors: 5
    interval: 10s
    baseEjectionTime: 30s
    maxEjectionPercent: 50
`

// resilience runs workload (g): one meshgate gateway measured without a
// TrafficPolicy, then with retries and outlier detection on the backend
// Service, then both again; the policy changes over xDS between the rows.
func (r *runner) resilience(ctx context.Context, env *meshgateEnv) error {
	return r.measureOnOff(ctx, env, onOffPolicy{
		workload: wlResilience, file: resiliencePolicyFile, policy: resiliencePolicy,
		off: "no TrafficPolicy", on: "retries + outlier detection",
		served: backendOutlierDetection, what: "outlier detection",
		note: "One gateway process, the TrafficPolicy (retry 2 attempts on connect-failure, reset, gateway-error; " +
			"outlier detection on 5 consecutive gateway errors) added and removed over xDS between the rows (no restart), each row run twice, alternating: the spread between a row's two runs is the noise. The backend never fails, " +
			"so the rows measure what the policy costs every request, not retries.",
	})
}

// backendOutlierDetection reads whether the gateway's /clusters shows
// outlier detection on the backend Service's cluster.
func backendOutlierDetection(ctx context.Context, admin string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, admin+"/clusters", nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var dump struct {
		Clusters []struct {
			Name             string `json:"name"`
			OutlierDetection bool   `json:"outlier_detection"`
		} `json:"clusters"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		return false, fmt.Errorf("/clusters: %w", err)
	}
	for _, c := range dump.Clusters {
		if strings.Contains(c.Name, "/backend:") {
			return c.OutlierDetection, nil
		}
	}
	return false, errors.New("/clusters: no cluster of the Service backend")
}
