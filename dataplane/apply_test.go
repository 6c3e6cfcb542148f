package dataplane

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/dataplane/upstream"
	"github.com/meshgate/meshgate/internal/testutil"
)

// newApplyProxy returns a proxy driven by calling apply directly, stopped at
// the end of the test; it logs to logs when given.
func newApplyProxy(t *testing.T, logs ...*syncBuffer) *Proxy {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	if len(logs) > 0 {
		logger = slog.New(slog.NewTextHandler(logs[0], nil))
	}
	p, err := New(Options{Node: &corev3.Node{Id: "n"}, XDSAddresses: []string{"127.0.0.1:1"}, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.drainAll(ctx)
		p.serveWG.Wait()
	})
	return p
}

// applySnapshot applies the resources of snap's types, in order.
func applySnapshot(t *testing.T, p *Proxy, snap *cachev3.Snapshot, version string, types ...resourcev3.Type) {
	t.Helper()
	for _, typ := range types {
		var msgs []proto.Message
		for _, r := range snap.GetResources(typ) {
			msgs = append(msgs, proto.Clone(r)) // equal, never the same message
		}
		if err := p.apply(context.Background(), typ, msgs, version); err != nil {
			t.Fatalf("apply %s: %v", typ, err)
		}
	}
}

var allTypes = []resourcev3.Type{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType}

// withRBAC adds an RBAC filter before the router.
func withRBAC(t *testing.T) func(s *snapshot) {
	return func(s *snapshot) {
		rbac := &hcmv3.HttpFilter{Name: "meshgate.rbac.allow", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &rbacv3.RBAC{
			Rules: &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_ALLOW, Policies: map[string]*rbacconfigv3.Policy{"p": {
				Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_Any{Any: true}}},
				Principals:  []*rbacconfigv3.Principal{{Identifier: &rbacconfigv3.Principal_Any{Any: true}}},
			}}},
		})}}
		s.hcm.HttpFilters = append([]*hcmv3.HttpFilter{rbac}, s.hcm.HttpFilters...)
	}
}

// TestUnchangedResourcesAreBuiltOnce: an update that repeats a listener, or
// a route configuration, keeps what was compiled from it (the listener's
// filters, the route table); and the listener's handler keeps its
// configuration through updates that change nothing it serves (an EDS
// update swaps the endpoints inside the cluster), and gets a new one when
// something does.
func TestUnchangedResourcesAreBuiltOnce(t *testing.T) {
	t.Parallel()
	p := newApplyProxy(t)
	cfg := config{listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend(t, "a"), mutate: withRBAC(t)}
	cfg.version = "v1"
	applySnapshot(t, p, cfg.build(t), "v1", allTypes...)

	p.mu.Lock()
	spec, routes := p.state.listeners["edge"], p.state.routes["edge"]
	var s *server
	for _, srv := range p.servers {
		s = srv
	}
	served := s.handler.proxy.Config()
	p.mu.Unlock()
	if len(spec.filters) != 1 || served == nil || len(served.Filters) != 1 {
		t.Fatalf("the listener's RBAC filter is not served: %d filters, config %v", len(spec.filters), served)
	}

	cfg.version = "v2"
	cfg.backend = backend(t, "b") // only the endpoints change
	applySnapshot(t, p, cfg.build(t), "v2", allTypes...)
	p.mu.Lock()
	sameSpec, sameRoutes, sameConfig := p.state.listeners["edge"] == spec, p.state.routes["edge"] == routes, s.handler.proxy.Config() == served
	endpoints := p.clusters["default/a:80"].cluster.Endpoints()
	p.mu.Unlock()
	if !sameSpec || !sameRoutes || !sameConfig {
		t.Errorf("an update changing only endpoints rebuilt: listener %v, routes %v, handler configuration %v (true: kept)", sameSpec, sameRoutes, sameConfig)
	}
	if len(endpoints) != 1 || endpoints[0] != cfg.backend {
		t.Errorf("endpoints = %v, want [%s]", endpoints, cfg.backend)
	}

	// A route change: a new table and a new configuration, same listener.
	cfg.version = "v3"
	cfg.mutate = func(s *snapshot) {
		withRBAC(t)(s)
		s.routes[0].VirtualHosts[0].Domains = []string{"example.com"}
	}
	applySnapshot(t, p, cfg.build(t), "v3", allTypes...)
	p.mu.Lock()
	sameSpec, sameRoutes, sameConfig = p.state.listeners["edge"] == spec, p.state.routes["edge"] == routes, s.handler.proxy.Config() == served
	p.mu.Unlock()
	if !sameSpec || sameRoutes || sameConfig {
		t.Errorf("a route change: listener kept %v (want true), routes kept %v, configuration kept %v (want false)", sameSpec, sameRoutes, sameConfig)
	}
}

// TestEDSUpdateIsCheckedAndBuiltOnce: applying an EDS update of a cluster
// the proxy follows allocates about what one subset check and one build of
// its endpoint table do, not a second build on a scratch cluster and two
// more checks. Allocations, unlike time, do not depend on the machine's
// load. Not parallel: the allocation counters are the process's.
func TestEDSUpdateIsCheckedAndBuiltOnce(t *testing.T) {
	const n = 5000
	p := newApplyProxy(t)
	cfg := config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: "127.0.0.1:1"}
	applySnapshot(t, p, cfg.build(t), "v1", resourcev3.ClusterType)

	cla := func(port int) *endpointv3.ClusterLoadAssignment {
		lbs := make([]*endpointv3.LbEndpoint, n)
		for i := range lbs {
			lbs[i] = &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: socketAddress(t, fmt.Sprintf("10.%d.%d.%d:%d", i>>16, (i>>8)&255, i&255, port)),
			}}}
		}
		return &endpointv3.ClusterLoadAssignment{ClusterName: "default/a:80", Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}}
	}
	// What one check and one build cost.
	scratch, err := upstream.NewCluster(p.state.clusters["default/a:80"], nil)
	if err != nil {
		t.Fatal(err)
	}
	once := cla(80)
	one := testutil.Allocated(func() {
		if err := p.filters.Check(once); err != nil {
			t.Fatal(err)
		}
		e, err := scratch.PrepareEndpoints(once)
		if err != nil {
			t.Fatal(err)
		}
		scratch.UseEndpoints(e)
	})

	for port := 81; port < 83; port++ { // the first warms up what is initialized once
		update := cla(port)
		var err error
		applied := testutil.Allocated(func() {
			err = p.apply(context.Background(), resourcev3.EndpointType, []proto.Message{update}, fmt.Sprint(port))
		})
		if err != nil {
			t.Fatal(err)
		}
		if port == 81 {
			continue
		}
		ratio := float64(applied.Objects) / float64(one.Objects)
		t.Logf("one check and build: %+v; the EDS update: %+v (objects x%.2f)", one, applied, ratio)
		if ratio > 1.3 {
			t.Errorf("an EDS update of %d endpoints allocates x%.2f one check and one build of its table: want it built once", n, ratio)
		}
	}
	p.mu.Lock()
	got := p.accepted["default/a:80"].cluster.Endpoints()
	p.mu.Unlock()
	if len(got) != n || got[0] != "10.0.0.0:82" {
		t.Fatalf("endpoints installed: %d, first %v", len(got), got[:1])
	}
}

// TestEDSBeforeCDSIsCheckedAndInstalled: endpoints of a cluster not yet
// received are checked when they arrive (a bad one NACKed), and installed
// when the cluster comes.
func TestEDSBeforeCDSIsCheckedAndInstalled(t *testing.T) {
	t.Parallel()
	p := newApplyProxy(t)
	cfg := config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend(t, "a")}
	snap := cfg.build(t)
	bad := proto.Clone(snap.GetResources(resourcev3.EndpointType)["default/a:80"]).(*endpointv3.ClusterLoadAssignment)
	bad.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().Address = "not-an-ip"
	if err := p.apply(context.Background(), resourcev3.EndpointType, []proto.Message{bad}, "v0"); err == nil {
		t.Fatal("a bad assignment of an unknown cluster was accepted")
	}
	applySnapshot(t, p, snap, "v1", resourcev3.EndpointType, resourcev3.ClusterType, resourcev3.ListenerType, resourcev3.RouteType)
	addr := p.ListenerAddrs()["edge"]
	eventually(t, "the backend through the proxy", func() bool {
		code, body, err := get(http.DefaultClient, "http://"+addr+"/")
		return err == nil && code == http.StatusOK && body == "a"
	})
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestPerRouteConfigOfAnotherTypeIsReported: a per-route config whose type
// is not the one the listener's filter of that name takes is ignored, as
// Envoy does, and logged when the listener takes the route table; one under
// a name no filter has is neither.
func TestPerRouteConfigOfAnotherTypeIsReported(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	p := newApplyProxy(t, logs)
	cfg := config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend(t, "a"), mutate: func(s *snapshot) {
		withRBAC(t)(s)
		s.routes[0].VirtualHosts[0].Routes[0].TypedPerFilterConfig = map[string]*anypb.Any{
			"meshgate.rbac.allow": mustAny(t, &headermutationv3.HeaderMutationPerRoute{}),
			"other-listener":      mustAny(t, &headermutationv3.HeaderMutationPerRoute{}),
		}
	}}
	applySnapshot(t, p, cfg.build(t), "v1", allTypes...)
	out := logs.String()
	if !strings.Contains(out, "typed_per_filter_config ignored") || !strings.Contains(out, "filter=meshgate.rbac.allow") ||
		!strings.Contains(out, "filter_takes=envoy.extensions.filters.http.rbac.v3.RBACPerRoute") {
		t.Errorf("no warning for the mismatched per-route config in %q", out)
	}
	if strings.Contains(out, "filter=other-listener") {
		t.Errorf("a per-route config of no filter of the listener was reported: %q", out)
	}
	// The route is served, the listener's RBAC (allow all) applies.
	addr := p.ListenerAddrs()["edge"]
	eventually(t, "the backend through the proxy", func() bool {
		code, body, err := get(http.DefaultClient, "http://"+addr+"/")
		return err == nil && code == http.StatusOK && body == "a"
	})
}
