package translate

import (
	"strings"
	"testing"
)

// TestCacheSharesMessages checks that two sidecars of one namespace get the
// same cluster, load assignment, outbound route and secret messages, and
// their own listeners.
func TestCacheSharesMessages(t *testing.T) {
	t.Parallel()
	m, in, nodes := goldenCase{in: "testdata/rbac/zerotrust.in.yaml"}.load(t)
	cache := NewCache(m, in)
	var sidecars []NodeInfo
	for _, n := range nodes {
		if n.Role == RoleSidecar && (len(sidecars) == 0 || n.Namespace == sidecars[0].Namespace) {
			sidecars = append(sidecars, n)
		}
	}
	if len(sidecars) < 2 {
		t.Fatalf("want two sidecars of one namespace in the zerotrust case, have %d", len(sidecars))
	}
	a, err := cache.Translate(sidecars[0])
	if err != nil {
		t.Fatal(err)
	}
	b, err := cache.Translate(sidecars[1])
	if err != nil {
		t.Fatal(err)
	}
	byName := func(r *Resources) map[string]any {
		out := map[string]any{}
		for _, c := range r.Clusters {
			out["cluster "+c.Name] = c
		}
		for _, e := range r.Endpoints {
			out["cla "+e.ClusterName] = e
		}
		for _, rc := range r.Routes {
			out["route "+rc.Name] = rc
		}
		for _, l := range r.Listeners {
			out["listener "+l.Name] = l
		}
		for _, s := range r.Secrets {
			out["secret "+s.Name] = s
		}
		return out
	}
	am, bm := byName(a), byName(b)
	tests := []struct {
		key        string
		wantShared bool
	}{
		{"route outbound", true},
		{"secret ROOTCA", true},
		{"listener outbound", false},
		{"listener inbound", false},
	}
	for _, tt := range tests {
		if am[tt.key] == nil || bm[tt.key] == nil {
			t.Errorf("%s missing", tt.key)
			continue
		}
		if got := am[tt.key] == bm[tt.key]; got != tt.wantShared {
			t.Errorf("%s shared = %v, want %v", tt.key, got, tt.wantShared)
		}
	}
	sharedClusters := 0
	for k, v := range am {
		if strings.HasPrefix(k, "cluster ") || strings.HasPrefix(k, "cla ") {
			if bm[k] == v {
				sharedClusters++
			}
		}
	}
	if sharedClusters == 0 {
		t.Error("no cluster or load assignment is shared between two sidecars")
	}
	// A cluster is one message whichever part (a sidecar's outbound, a
	// gateway) references it.
	gw, err := cache.Translate(NodeInfo{ID: "g", Role: RoleGateway, Namespace: "default", Gateway: "edge"})
	if err != nil {
		t.Fatal(err)
	}
	gm := byName(gw)
	if gm["cluster default/orders:80"] == nil || gm["cluster default/orders:80"] != am["cluster default/orders:80"] {
		t.Error("the gateway and a sidecar do not share the cluster of default/orders:80")
	}
}
