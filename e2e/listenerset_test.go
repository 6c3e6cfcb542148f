package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestListenerSetServesItsRoutes: a ListenerSet admitted by its Gateway
// (allowedListeners Same) adds a listener on a port of its own to the
// Gateway's node; the route attached to the ListenerSet answers there, the
// route attached to the Gateway on the Gateway's listener only.
func TestListenerSetServesItsRoutes(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("policy.yaml", yamlDocs(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  allowedListeners: {namespaces: {from: Same}}
  listeners:
    - {name: own, protocol: HTTP, port: ${gw.port}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {name: team}
spec:
  parentRef: {name: edge}
  listeners:
    - {name: team-port, protocol: HTTP, port: ${gw2.port}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: site}
spec:
  parentRefs: [{name: edge}]
  rules:
    - backendRefs: [{name: alpha, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: team}
spec:
  parentRefs: [{group: gateway.networking.k8s.io, kind: ListenerSet, name: team, sectionName: team-port}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /team}}]
      backendRefs: [{name: beta, port: 80}]
`, staticServices("alpha", "beta")))
	c.app("alpha", "alpha", "v1", "")
	c.app("beta", "beta", "v1", "")
	c.startControlPlane()
	c.gateway("edge")
	gw, gw2 := "http://"+c.addr("gw"), "http://"+c.addr("gw2")
	c.expectEventually("the ListenerSet's listener serves its route", 15*time.Second, gw2+"/team/x", nil, servedBy("beta"))
	c.expectEventually("the Gateway's listener serves its route", 15*time.Second, gw+"/team/x", nil, servedBy("alpha"))
	c.expectEventually("the Gateway's route is not on the ListenerSet's listener", 15*time.Second, gw2+"/", nil, func(r *response) error {
		if r.status != http.StatusNotFound {
			return fmt.Errorf("status %d, want 404", r.status)
		}
		return nil
	})
}
