package e2e

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshgate/meshgate/policy"
)

// TestConsulBadEndpointLeftOut: an instance registered in Consul with an
// address meshgate cannot use (a DNS name) is left out: the service's
// other instances serve, the policy is applied, and the Service's status
// says which endpoint is left out and why.
func TestConsulBadEndpointLeftOut(t *testing.T) {
	t.Parallel()
	consul, c := startConsulCluster(t)
	app := c.app("orders-app", "orders", "v1", "")
	host, portText, _ := net.SplitHostPort(app)
	port, _ := strconv.Atoi(portText)
	agent := consul.client.Agent()
	for _, reg := range []*api.AgentServiceRegistration{
		{ID: "orders-good", Name: "orders", Address: host, Port: port,
			Check: &api.AgentServiceCheck{CheckID: "orders-good-ttl", TTL: "10m", Status: api.HealthPassing}},
		{ID: "orders-bad", Name: "orders", Address: "node-1.local", Port: 8080,
			Check: &api.AgentServiceCheck{CheckID: "orders-bad-ttl", TTL: "10m", Status: api.HealthPassing}},
	} {
		if err := agent.ServiceRegister(reg); err != nil {
			t.Fatal(err)
		}
	}
	c.gateway("edge")
	c.policy("routes.yaml", `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orders}
spec:
  parentRefs: [{name: edge}]
  rules:
    - backendRefs: [{name: orders, port: 80}]
`)
	c.expectEventually("orders through the gateway beside a bad instance", 15*time.Second, "http://"+c.addr("gw")+"/", nil, servedBy("orders"))
	eventually(t, 10*time.Second, "the bad instance in the status of orders", func() error {
		var rs policy.ResourceStatus
		if err := adminGet(c.admin, c.adminToken(), "/resources/svc/default/orders", &rs); err != nil {
			return err
		}
		if rs.State != policy.StateAccepted || rs.Reason != policy.ReasonInvalidEndpoints || len(rs.Problems) != 1 {
			return fmt.Errorf("status of orders: %s %s %q", rs.State, rs.Reason, rs.Problems)
		}
		return nil
	})
}
