package e2e

import (
	"strconv"
	"testing"
	"time"
)

// TestTrafficPolicyAttemptsHeader: a TrafficPolicy retry with
// attemptsHeader on a service one of whose three endpoints is dead: every
// request succeeds, each try tells the instance its number
// (x-envoy-attempt-count), and the client learns how many tries its
// response took: 2 when the dead endpoint was tried first, else 1.
func TestTrafficPolicyAttemptsHeader(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("echo"), `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: echo}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${echo-dead}"}, {address: "${echo-1}"}, {address: "${echo-2}"}]
---
apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: echo-retries}
spec:
  targetRefs: [{kind: Service, name: echo}]
  retry: {attempts: 2, retryOn: [connect-failure], backoff: {base: 1ms}, attemptsHeader: true}
`))
	c.startControlPlane()
	c.app("echo-1", "echo", "v1", "")
	c.app("echo-2", "echo", "v2", "")
	c.gateway("edge")
	gw := "http://" + c.addr("gw")
	c.expectEventually("echo via gateway", 10*time.Second, gw+"/", nil, servedBy("echo"))

	counts := map[string]int{}
	for range 20 {
		r, err := get(gw + "/")
		if err != nil {
			t.Fatal(err)
		}
		if err := servedBy("echo")(r); err != nil {
			t.Fatalf("a request failed despite the retry: %v", err)
		}
		attempts := r.header.Get("X-Envoy-Attempt-Count")
		if upstream := r.reply.Headers["x-envoy-attempt-count"]; upstream != attempts {
			t.Fatalf("the instance saw try %q, the client was told %q tries", upstream, attempts)
		}
		counts[attempts]++
	}
	if counts["1"] == 0 || counts["2"] == 0 || counts["1"]+counts["2"] != 20 {
		t.Errorf("tries per response: %v, want some 1 and some 2 (round robin over a dead and two live endpoints)", counts)
	}
	t.Logf("tries per response: %s×1, %s×2", strconv.Itoa(counts["1"]), strconv.Itoa(counts["2"]))
}
