package discovery

import (
	"context"
	"fmt"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/meshgate/meshgate/controlplane/model"
)

// snapshotClient is a Consul client for the fake catalog.
func snapshotClient(t *testing.T, fake *fakeCatalog) *api.Client {
	t.Helper()
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	client, err := api.NewClient(&api.Config{Address: strings.TrimPrefix(srv.URL, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// TestSnapshotIsWhatTheWatchPublishes: one read of the catalog gives the
// Services a synced watch publishes (the same names skipped, the same
// health filtering), with one catalog request, one read per service, and
// at most FetchConcurrency requests at once.
func TestSnapshotIsWhatTheWatchPublishes(t *testing.T) {
	t.Parallel()
	fake := newFakeCatalog()
	fake.setNode("n1", "10.0.0.1")
	fake.setNode("n2", "10.0.0.2")
	const n, conc = 40, 3
	for i := range n {
		fake.register(fmt.Sprintf("n%d", 1+i%2), fmt.Sprintf("s%02d-1", i), fmt.Sprintf("s%02d", i), "", 10000+i)
	}
	fake.register("n1", "s00-2", "s00", "127.0.0.2", 9000)
	fake.setCheck("n1", "s00-2-check", "s00-2", api.HealthCritical) // not an endpoint
	fake.setCheck("n2", "serfHealth", "", api.HealthCritical)       // every instance on n2 is out
	fake.register("n1", "consul", "consul", "", 8300)               // skipped
	fake.register("n1", "bad-1", "Not_A_Label", "", 1)              // skipped
	fake.delay = 0

	fake.resetCounts()
	got, err := Snapshot(context.Background(), ConsulOptions{Client: snapshotClient(t, fake), FetchConcurrency: conc})
	if err != nil {
		t.Fatal(err)
	}
	if reads := fake.countPrefix("/v1/health/service/"); fake.count("/v1/catalog/services") != 1 || reads != n {
		t.Errorf("%d catalog requests and %d service reads, want 1 and %d", fake.count("/v1/catalog/services"), reads, n)
	}
	fake.mu.Lock()
	maxOpen := fake.maxOpen
	fake.mu.Unlock()
	if maxOpen > conc {
		t.Errorf("%d requests open at once, want at most FetchConcurrency %d", maxOpen, conc)
	}

	tw := startWatch(t, fake, ConsulOptions{})
	if want := tw.Services(); !reflect.DeepEqual(got, want) {
		t.Fatalf("snapshot differs from the watch's services:\n got %d services %v\nwant %d services %v", len(got), names(got), len(want), names(want))
	}
	if len(got) != n {
		t.Errorf("%d services, want %d (consul and Not_A_Label skipped)", len(got), n)
	}
	if !tw.hasEndpoints("s00", "10.0.0.1:10000") || !tw.hasEndpoints("s01") {
		t.Errorf("s00 %v, s01 %v: want the passing instance on n1 only", tw.endpoints("s00"), tw.endpoints("s01"))
	}
}

// names lists services as name=endpoints, for failure messages.
func names(services []*model.DiscoveredService) []string {
	var out []string
	for _, s := range services {
		out = append(out, fmt.Sprintf("%s/%s=%v", s.Namespace, s.Name, s.PolicyService().Spec.Endpoints))
	}
	return out
}

// TestSnapshotErrors: an unreachable or failing Consul is an error naming
// what failed, and a context that ends stops the reads.
func TestSnapshotErrors(t *testing.T) {
	t.Parallel()
	fake := newFakeCatalog()
	fake.setNode("n1", "10.0.0.1")
	fake.register("n1", "a-1", "a", "", 1)
	fake.setDown(true)
	_, err := Snapshot(context.Background(), ConsulOptions{Client: snapshotClient(t, fake)})
	if err == nil || !strings.Contains(err.Error(), "consul catalog: list services") || !strings.Contains(err.Error(), "agent down") {
		t.Errorf("Snapshot of a failing agent: %v", err)
	}
	fake.setDown(false)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Snapshot(ctx, ConsulOptions{Client: snapshotClient(t, fake)}); err == nil {
		t.Error("Snapshot with an ended context succeeded")
	}
	if _, err := Snapshot(context.Background(), ConsulOptions{}); err == nil {
		t.Error("Snapshot without a client succeeded")
	}
}
