package e2e

import (
	"fmt"
	"strconv"
	"testing"
	"time"
)

// trafficPolicyHashPolicy: the service echo with three instances (versions
// i1, i2, i3, plain endpoints), a client service behind a sidecar, a
// gateway route to echo, and a TrafficPolicy that balances echo by ring
// hash on X-User.
func trafficPolicyHashPolicy() string {
	return yamlDocs(edgeGateway, routeTo("echo"), meshServices("client"), `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: echo}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${echo-1}"}, {address: "${echo-2}"}, {address: "${echo-3}"}]
---
apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: echo-sticky}
spec:
  targetRefs: [{kind: Service, name: echo}]
  loadBalancer:
    type: RingHash
    hash: {header: X-User}
`)
}

// TestTrafficPolicyRingHash: a TrafficPolicy with RingHash on a header
// sends each user to one instance, every time, and spreads users over the
// instances; the same policy behaves the same at the gateway and at a
// sidecar: a user reaches the same instance through either.
func TestTrafficPolicyRingHash(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("traffic.yaml", trafficPolicyHashPolicy())
	c.startControlPlane()
	for i := 1; i <= 3; i++ {
		c.app("echo-"+strconv.Itoa(i), "echo", "i"+strconv.Itoa(i), "")
	}
	c.startInstance(c.sidecar, "client", "client", "v1")
	c.gateway("edge")
	gw := "http://" + c.addr("gw")
	out := "http://" + c.addr("client-out")

	// instanceOf is the instance that served user through base.
	instanceOf := func(base, user string, headers ...string) string {
		t.Helper()
		r, err := get(base+"/", append([]string{"X-User: " + user}, headers...)...)
		if err != nil {
			t.Fatal(err)
		}
		if err := servedBy("echo")(r); err != nil {
			t.Fatalf("%s as %s: %v", base, user, err)
		}
		return r.reply.Version
	}
	c.expectEventually("echo via gateway", 10*time.Second, gw+"/", []string{"X-User: u0"}, servedBy("echo"))
	c.expectEventually("echo via the client's sidecar", 10*time.Second, out+"/", []string{"Host: echo", "X-User: u0"}, servedBy("echo"))

	const users, repeats = 24, 5
	spread := map[string]int{}
	for i := range users {
		user := "user-" + strconv.Itoa(i)
		atGateway := instanceOf(gw, user)
		spread[atGateway]++
		for range repeats {
			if got := instanceOf(gw, user); got != atGateway {
				t.Fatalf("%s went to %s, then %s at the gateway", user, atGateway, got)
			}
			if got := instanceOf(out, user, "Host: echo"); got != atGateway {
				t.Fatalf("%s went to %s at the gateway but %s at the sidecar", user, atGateway, got)
			}
		}
	}
	if len(spread) < 2 {
		t.Errorf("%d users went to %v: want them spread over the instances", users, spread)
	}
	t.Logf("users per instance: %s", fmt.Sprint(spread))
}
