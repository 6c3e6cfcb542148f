package e2e

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/meshgate/meshgate/api/consulreg"
)

// The chaos scenarios' deployment: the gateway edge routes every request to
// the service frontend; the frontend app calls orders through its sidecar's
// outbound listener. Two traffic paths are measured: gateway → frontend's
// sidecar → frontend app, and frontend app → its sidecar → orders' sidecar
// → orders app (a sidecar→sidecar hop over mTLS).

// chaosEditHeader is set by the routes of chaosRoutes to the edit's name,
// so that a probe sees which edit a proxy serves.
const chaosEditHeader = "x-chaos-edit"

// chaosRoutes is the gateway's route to frontend and, with mesh, a mesh
// route shaping calls to orders; both set chaosEditHeader to edit.
func chaosRoutes(edit string, mesh bool) string {
	filter := `
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: ` + chaosEditHeader + `, value: "` + edit + `"}]}`
	routes := `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: edge}]
  rules:
    - backendRefs: [{name: frontend, port: 80}]` + filter + "\n"
	if mesh {
		routes += `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orders-mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: orders, port: 80}]
  rules:
    - backendRefs: [{name: orders, port: 80}]` + filter + "\n"
	}
	return routes
}

// chaosMesh is the running deployment: startMesh's, with the services
// orders and frontend.
type chaosMesh struct{ *mesh }

// startChaosMesh starts the apps, their sidecars (with sidecar: c.sidecar,
// or chaosConsulSidecar's) and the gateway, with gatewayFlags; the control
// plane must be running.
func startChaosMesh(c *cluster, sidecar sidecarStarter, gatewayFlags ...string) *chaosMesh {
	c.t.Helper()
	return &chaosMesh{startMesh(c, sidecar, []string{"orders", "frontend"}, gatewayFlags...)}
}

// startChaosFiles starts the deployment with its policy in files:
// services.yaml (the gateway, the services frontend and orders, and
// extraPolicy) and routes.yaml (chaosRoutes("0", true)); it waits until
// both paths serve.
func startChaosFiles(t *testing.T, extraPolicy string, gatewayFlags ...string) (*cluster, *chaosMesh) {
	t.Helper()
	c := newCluster(t)
	c.policy("services.yaml", yamlDocs(edgeGateway, meshServices("frontend", "orders"), extraPolicy))
	c.policy("routes.yaml", chaosRoutes("0", true))
	c.startControlPlane()
	m := startChaosMesh(c, c.sidecar, gatewayFlags...)
	m.waitServing(t)
	return c, m
}

// startChaosConsul starts the deployment with its policy in files and its
// services in Consul (startConsulCluster): the sidecars register
// themselves (chaosConsulSidecar), and routes.yaml (chaosRoutes("0",
// false)) is written once they are registered; it waits until both paths
// serve. A failed scenario logs the Consul checks of frontend and orders.
func startChaosConsul(t *testing.T) (*consulAgent, *cluster, *chaosMesh) {
	t.Helper()
	consul, c := startConsulCluster(t)
	m := startChaosMesh(c, chaosConsulSidecar(c, consul))
	t.Cleanup(func() { // runs before the mesh's processes stop
		if t.Failed() {
			t.Logf("consul checks at the end:\n%s", consul.checks("orders", "frontend"))
		}
	})
	c.policy("routes.yaml", chaosRoutes("0", false))
	m.waitServing(t)
	return consul, c, m
}

// chaosConsulSidecar starts sidecars that register themselves in consul,
// with extra flags. Their health checks run at the product's default
// interval (the e2e harness's 200 ms makes each check's timeout 200 ms
// too, which a loaded machine exceeds: a flapping check is a fault of its
// own, not the one a scenario injects).
func chaosConsulSidecar(c *cluster, consul *consulAgent, extra ...string) sidecarStarter {
	return consulSidecars(c, consul, append([]string{"--consul-check-interval", consulreg.DefaultCheckInterval.String()}, extra...)...)
}

// gatewayURL is the gateway path: gateway → frontend's sidecar → frontend.
func (m *chaosMesh) gatewayURL() string { return m.gw + "/" }

// meshURL is the sidecar→sidecar path: the frontend app calls orders.
func (m *chaosMesh) meshURL() string { return m.app("frontend") + "/call/orders/items" }

// waitServing waits until both paths answer.
func (m *chaosMesh) waitServing(t *testing.T) {
	t.Helper()
	eventually(t, 30*time.Second, "gateway path serves", func() error { return probe(m.gatewayURL(), replyFrom("frontend")) })
	eventually(t, 30*time.Second, "sidecar→sidecar path serves", func() error { return probe(m.meshURL(), upstreamFrom("orders")) })
}

// startLoads puts the level's load on both paths and returns the loads.
func (m *chaosMesh) startLoads(s *chaosScenario) (gateway, mesh *rateLoad) {
	return s.load("gateway → sidecar → app", m.gatewayURL(), replyFrom("frontend")),
		s.load("app → sidecar → sidecar → app", m.meshURL(), upstreamFrom("orders"))
}

// waitEdit waits until the gateway path (and with mesh, the sidecar→sidecar
// path) serves the routes of edit, and returns how long that took.
func (m *chaosMesh) waitEdit(t *testing.T, timeout time.Duration, edit string, mesh bool) time.Duration {
	t.Helper()
	begin := time.Now()
	eventually(t, timeout, "gateway serves edit "+edit, func() error {
		r, err := get(m.gatewayURL())
		if err != nil {
			return err
		}
		if got := r.reply.Headers[chaosEditHeader]; r.status != http.StatusOK || got != edit {
			return fmt.Errorf("status %d, edit %q", r.status, got)
		}
		return nil
	})
	if mesh {
		eventually(t, timeout, "sidecar serves edit "+edit, func() error {
			r, err := get(m.meshURL())
			if err != nil {
				return err
			}
			if r.reply.Upstream == nil {
				return fmt.Errorf("status %d, no upstream reply: %.200s", r.status, r.body)
			}
			if got := r.reply.Upstream.Headers[chaosEditHeader]; r.reply.UpstreamStatus != http.StatusOK || got != edit {
				return fmt.Errorf("upstream status %d, edit %q", r.reply.UpstreamStatus, got)
			}
			return nil
		})
	}
	return time.Since(begin)
}

// replyFrom accepts a 200 from the demo service svc.
func replyFrom(svc string) loadCheck {
	return func(r *response) (string, bool) {
		if r.status != http.StatusOK {
			return strconv.Itoa(r.status), false
		}
		if r.reply.Service != svc {
			return "200 from " + strconv.Quote(r.reply.Service), false
		}
		return "200", true
	}
}

// upstreamFrom accepts a demo app's 200 whose call through its sidecar got
// a 200 from svc.
func upstreamFrom(svc string) loadCheck {
	return func(r *response) (string, bool) {
		switch {
		case r.status != http.StatusOK:
			return strconv.Itoa(r.status), false
		case r.reply.UpstreamStatus != http.StatusOK:
			return "upstream " + strconv.Itoa(r.reply.UpstreamStatus), false
		case r.reply.Upstream == nil || r.reply.Upstream.Service != svc:
			return "upstream not " + svc, false
		}
		return "200", true
	}
}

// replyVersion is replyFrom(svc) from that version of svc's app.
func replyVersion(svc, version string) loadCheck {
	from := replyFrom(svc)
	return func(r *response) (string, bool) {
		if outcome, ok := from(r); !ok {
			return outcome, false
		}
		if r.reply.Version != version {
			return "200 from " + svc + " " + r.reply.Version, false
		}
		return "200", true
	}
}

// upstreamVersion is upstreamFrom(svc) from that version of svc's app.
func upstreamVersion(svc, version string) loadCheck {
	from := upstreamFrom(svc)
	return func(r *response) (string, bool) {
		if outcome, ok := from(r); !ok {
			return outcome, false
		}
		if r.reply.Upstream.Version != version {
			return "upstream 200 from " + svc + " " + r.reply.Upstream.Version, false
		}
		return "200", true
	}
}

// probe sends one request and applies check.
func probe(url string, check loadCheck) error {
	r, err := get(url)
	if err != nil {
		return err
	}
	if outcome, ok := check(r); !ok {
		return fmt.Errorf("%s: %.200s", outcome, r.body)
	}
	return nil
}
