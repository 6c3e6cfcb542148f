package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meshgate/meshgate/dataplane"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// TestProxiesEndpoints: the subcommand reads the proxy's /clusters after
// checking that the admin address is the named proxy's, and prints a table
// or JSON.
func TestProxiesEndpoints(t *testing.T) {
	t.Parallel()
	until := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	active := int64(2)
	clusters := dataplane.ClustersDump{Clusters: []upstream.ClusterStatus{{
		Name: "default/orders:80", OutlierDetection: true, HealthChecks: true,
		Endpoints: []upstream.EndpointStatus{
			{Address: "10.0.0.1:80", Health: "HEALTHY", ActiveCheck: upstream.CheckPassing, Weight: 1, ActiveRequests: &active, Connections: 3, Available: true},
			{Address: "10.0.0.2:80", Health: "HEALTHY", ActiveCheck: upstream.CheckPassing, Ejected: true, EjectedUntil: &until, TimesEjected: 2, Weight: 1, ActiveRequests: new(int64)},
			{Address: "10.0.0.3:80", Health: "UNHEALTHY"},
		},
	}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/config_dump":
			_, _ = w.Write([]byte(`{"node": {"id": "gateway~edge~host-1", "cluster": "edge", "metadata": {"namespace": "prod"}}}`))
		case "/clusters":
			_ = json.NewEncoder(w).Encode(clusters)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	admin := srv.Listener.Addr().String()

	for _, name := range []string{"edge", "prod/edge", "gateway~edge~host-1"} {
		out, code, err := runCmd(t, newProxiesEndpointsCmd(&adminFlags{}), "", name, "--proxy-admin", admin)
		if err != nil || code != 0 {
			t.Fatalf("%s: code %d, %v", name, code, err)
		}
		got := strings.Join(strings.Fields(out), " ")
		for _, want := range []string{
			"CLUSTER ENDPOINT HEALTH CHECK EJECTED WEIGHT REQUESTS CONNECTIONS TRAFFIC",
			"default/orders:80 10.0.0.1:80 HEALTHY passing - 1 2 3 yes",
			"default/orders:80 10.0.0.3:80 UNHEALTHY - - 0 - 0 no",
			"(2x)",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("%s: output lacks %q:\n%s", name, want, out)
			}
		}
	}
	out, _, err := runCmd(t, newProxiesEndpointsCmd(&adminFlags{}), "", "edge", "--proxy-admin", admin, "-o", "json")
	var back dataplane.ClustersDump
	if err != nil || json.Unmarshal([]byte(out), &back) != nil || len(back.Clusters[0].Endpoints) != 3 {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	if _, _, err := runCmd(t, newProxiesEndpointsCmd(&adminFlags{}), "", "orders", "--proxy-admin", admin); err == nil || !strings.Contains(err.Error(), `is not "orders"`) {
		t.Errorf("another proxy's name: %v", err)
	}
}
