package e2e

import (
	"net/http"
	"testing"
	"time"
)

// TestUnresolvedBackendAnswers500ForItsShare: a rule with a backendRef that
// resolves (blue, weight 1) and one that does not (a Service that does not
// exist, weight 1) answers 500 to about half of its requests and forwards
// the others to blue (Gateway API: requests that would have been sent to
// an invalid backendRef get a 500, the others are forwarded).
func TestUnresolvedBackendAnswers500ForItsShare(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("services.yaml", blueGreenServices())
	c.policy("route.yaml", `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split}
spec:
  parentRefs: [{name: edge}]
  rules:
    - backendRefs:
        - {name: blue, port: 80, weight: 1}
        - {name: nowhere, port: 80, weight: 1}
`)
	c.app("blue", "blue", "v1", "")
	c.startControlPlane()
	c.gateway("edge")
	gw := "http://" + c.addr("gw")
	c.expectEventually("blue serves part of the rule", 15*time.Second, gw+"/", nil, servedBy("blue"))

	const n = 200
	counts := map[int]int{}
	for range n {
		r, err := get(gw + "/")
		if err != nil {
			t.Fatal(err)
		}
		if r.status == http.StatusOK {
			if err := servedBy("blue")(r); err != nil {
				t.Fatal(err)
			}
		}
		counts[r.status]++
	}
	// Binomial(200, 1/2): standard deviation about 7; allow 5σ.
	if counts[http.StatusInternalServerError]+counts[http.StatusOK] != n ||
		counts[http.StatusInternalServerError] < 65 || counts[http.StatusInternalServerError] > 135 {
		t.Fatalf("statuses = %v, want about half 500 and half 200 from blue", counts)
	}
	t.Logf("statuses of %d requests: %v", n, counts)
}
