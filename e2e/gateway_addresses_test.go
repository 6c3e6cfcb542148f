package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestGatewaySeveralAddresses: a Gateway with two loopback addresses is
// answered on both, through the real binary, and its status lists both.
func TestGatewaySeveralAddresses(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	port := c.addr("gw2")[strings.LastIndex(c.addr("gw2"), ":")+1:]
	c.policy("services.yaml", staticServices("blue"))
	c.policy("gateway.yaml", `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  addresses:
    - {value: 127.0.0.1}
    - {type: IPAddress, value: 127.0.0.2}
  listeners: [{name: http, protocol: HTTP, port: `+port+`}]
---
`+routeTo("blue"))
	c.app("blue", "blue", "v1", "")
	c.startControlPlane()
	c.gateway("edge")
	for _, ip := range []string{"127.0.0.1", "127.0.0.2"} {
		c.expectEventually("blue on "+ip, 15*time.Second, "http://"+ip+":"+port+"/", nil, servedBy("blue"))
	}
	out, err := c.cli("get", "gateway", "edge", "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(strings.Fields(out), " ")
	if want := "addresses: - type: IPAddress value: 127.0.0.1 - type: IPAddress value: 127.0.0.2"; !strings.Contains(got, want) {
		t.Errorf("meshgate get gateway edge -o yaml lacks %q:\n%s", want, out)
	}
}
