package xds

import (
	"context"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

// guardModel: Gateway edge routes to orders (when route is set), whose
// endpoints are ordersEndpoints; payments has one endpoint. policyVersion
// stands for the policy documents the model comes from.
func guardModel(t *testing.T, policyVersion string, route bool, ordersEndpoints ...string) *model.Model {
	t.Helper()
	gw := &policy.Gateway{}
	gw.Name = "edge"
	gw.Spec.Listeners = []gwapiv1.Listener{{Name: "http", Port: 8080, Protocol: gwapiv1.HTTPProtocolType}}
	set := &policy.Set{Gateways: []*policy.Gateway{gw}}
	if route {
		port := int32(80)
		r := &policy.HTTPRoute{}
		r.Name = "web"
		r.Spec.ParentRefs = []gwapiv1.ParentReference{{Name: "edge"}}
		r.Spec.Rules = []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: gwapiv1.BackendRef{
			BackendObjectReference: gwapiv1.BackendObjectReference{Name: "orders", Port: &port},
		}}}}}
		set.HTTPRoutes = []*policy.HTTPRoute{r}
	}
	orders := &policy.Service{Name: "orders", Spec: policy.ServiceSpec{Ports: []policy.ServicePort{{Port: 80}}}}
	for _, a := range ordersEndpoints {
		orders.Spec.Endpoints = append(orders.Spec.Endpoints, policy.Endpoint{Address: a})
	}
	payments := &policy.Service{Name: "payments", Spec: policy.ServiceSpec{Ports: []policy.ServicePort{{Port: 80}},
		Endpoints: []policy.Endpoint{{Address: "127.0.0.1:22011"}}}}
	set.Services = []*policy.Service{orders, payments}
	m, err := model.CompileWith(set, model.CompileOptions{PolicyVersion: policyVersion})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// connect registers a node on s as a first request on a new stream does.
func connect(t *testing.T, s *Server, streamID int64, id string, meta xdsnode.Metadata) {
	t.Helper()
	req := &discoveryv3.DiscoveryRequest{Node: testNode(t, id, meta), TypeUrl: resourcev3.ClusterType}
	if err := s.onStreamRequest(streamID, req); err != nil {
		t.Fatal(err)
	}
}

func proxyStatus(t *testing.T, s *Server, id string) ProxyStatus {
	t.Helper()
	for _, p := range s.Proxies() {
		if p.ID == id {
			return p
		}
	}
	t.Fatalf("no proxy %s", id)
	return ProxyStatus{}
}

// served counts the routes and endpoints the node's cached snapshot holds.
func served(s *Server, id string) (routes, endpoints int) {
	s.cache.mu.Lock()
	defer s.cache.mu.Unlock()
	n := s.cache.nodes[id]
	if n == nil || n.snap == nil {
		return -1, -1
	}
	snap := n.snap
	return snap.items(resourcev3.RouteType), snap.items(resourcev3.EndpointType)
}

// TestGuardHoldsWhatDiscoveryAloneWouldEmpty walks one gateway node through
// the changes the guard decides on, each step after the previous.
func TestGuardHoldsWhatDiscoveryAloneWouldEmpty(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := New(ctx, nil)
	s.SetModel(ctx, guardModel(t, "p1", true, "127.0.0.1:21011"))
	gwNode := xdsnode.Metadata{Role: xdsnode.RoleGateway, Gateway: "edge"}
	connect(t, s, 1, "gw", gwNode)
	if r, e := served(s, "gw"); r != 1 || e != 1 {
		t.Fatalf("served %d routes, %d endpoints; want 1, 1", r, e)
	}

	steps := []struct {
		name string
		m    *model.Model
		// fast: the change takes the endpoint-only path.
		fast bool
		// held: the substrings of the hold reason; none: applied.
		held                      []string
		wantRoutes, wantEndpoints int
	}{
		{name: "fewer endpoints: applied", m: guardModel(t, "p1", true, "127.0.0.1:21012"), fast: true, wantRoutes: 1, wantEndpoints: 1},
		{name: "every endpoint gone, same policy: held (endpoint-only path)", m: guardModel(t, "p1", true), fast: true,
			held: []string{"every endpoint (1)"}, wantRoutes: 1, wantEndpoints: 1},
		{name: "still none: still held", m: guardModel(t, "p1", true), fast: true,
			held: []string{"every endpoint (1)"}, wantRoutes: 1, wantEndpoints: 1},
		{name: "endpoints back: released", m: guardModel(t, "p1", true, "127.0.0.1:21011", "127.0.0.1:21013"), fast: true,
			wantRoutes: 1, wantEndpoints: 2},
		{name: "every endpoint gone again: held", m: guardModel(t, "p1", true), fast: true,
			held: []string{"every endpoint (2)"}, wantRoutes: 1, wantEndpoints: 2},
		{name: "the policy changes: applied, empty", m: guardModel(t, "p2", true), fast: true, wantRoutes: 1, wantEndpoints: 0},
		{name: "endpoints back under the new policy", m: guardModel(t, "p2", true, "127.0.0.1:21011"), fast: true, wantRoutes: 1, wantEndpoints: 1},
		{name: "the route and its endpoints gone, same policy: held (full path)", m: guardModel(t, "p2", false, "127.0.0.1:21011"),
			held: []string{"every route (1)", "every endpoint (1)"}, wantRoutes: 1, wantEndpoints: 1},
		{name: "the policy changes: applied", m: guardModel(t, "p3", false, "127.0.0.1:21011"), fast: true, wantRoutes: 0, wantEndpoints: 0},
	}
	for _, step := range steps {
		before := s.UpdateCounts()
		s.SetModel(ctx, step.m)
		after := s.UpdateCounts()
		if fast := after.EndpointsOnly == before.EndpointsOnly+1; fast != step.fast {
			t.Errorf("%s: endpoint-only path %v, want %v", step.name, fast, step.fast)
		}
		p := proxyStatus(t, s, "gw")
		for _, want := range step.held {
			if !strings.Contains(p.Held, want) {
				t.Errorf("%s: held %q, want it to mention %q", step.name, p.Held, want)
			}
		}
		if len(step.held) == 0 && (p.Held != "" || !p.HeldSince.IsZero()) {
			t.Errorf("%s: held %q since %v, want not held", step.name, p.Held, p.HeldSince)
		}
		if len(step.held) > 0 && p.HeldSince.IsZero() {
			t.Errorf("%s: held without a time", step.name)
		}
		if r, e := served(s, "gw"); r != step.wantRoutes || e != step.wantEndpoints {
			t.Errorf("%s: served %d routes, %d endpoints; want %d, %d", step.name, r, e, step.wantRoutes, step.wantEndpoints)
		}
	}
}

// TestGuardSparesNewNodesAndPartialChanges: a node this server never gave a
// configuration takes the model as it is, however empty; a node held for
// one reason does not hold the others.
func TestGuardSparesNewNodesAndPartialChanges(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := New(ctx, nil)
	s.SetModel(ctx, guardModel(t, "p1", true, "127.0.0.1:21011"))
	gwNode := xdsnode.Metadata{Role: xdsnode.RoleGateway, Gateway: "edge"}
	sidecar := xdsnode.Metadata{Role: xdsnode.RoleSidecar, Service: "payments", InboundAddress: "127.0.0.1:22011", AppAddress: "127.0.0.1:9001"}
	connect(t, s, 1, "gw", gwNode)
	connect(t, s, 2, "payments-1", sidecar)
	// orders loses its endpoints: the gateway has none left, the sidecar
	// still reaches payments.
	s.SetModel(ctx, guardModel(t, "p1", true))
	if p := proxyStatus(t, s, "gw"); p.Held == "" {
		t.Error("gateway not held")
	}
	if p := proxyStatus(t, s, "payments-1"); p.Held != "" {
		t.Errorf("sidecar held (%s): it keeps payments' endpoint", p.Held)
	}
	if _, e := served(s, "payments-1"); e != 1 {
		t.Errorf("sidecar serves %d endpoints, want payments' 1", e)
	}
	connect(t, s, 3, "gw-2", gwNode)
	if p := proxyStatus(t, s, "gw-2"); p.Held != "" {
		t.Errorf("a new node held: %s", p.Held)
	}
	if r, e := served(s, "gw-2"); r != 1 || e != 0 {
		t.Errorf("new node served %d routes, %d endpoints; want the model's 1, 0", r, e)
	}
}

// TestNothingServedBeforeTheFirstModel: over a real ADS stream, a proxy is
// accepted and listed before the server has a model, but gets no response,
// even when the trust bundle is set; the first model reaches it at once.
func TestNothingServedBeforeTheFirstModel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s := New(ctx, nil)
	conn := startServer(t, s)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	responses := make(chan *discoveryv3.DiscoveryResponse, 4)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				close(responses)
				return
			}
			responses <- resp
		}
	}()
	c := &adsClient{t: t, stream: stream, node: testNode(t, "gw", xdsnode.Metadata{Role: xdsnode.RoleGateway, Gateway: "edge"})}
	c.request(resourcev3.ListenerType, nil, nil, "")
	waitFor(t, "the proxy listed and its request waiting", func() bool {
		return len(s.Proxies()) == 1 && s.cache.openWatch("gw", resourcev3.ListenerType, "")
	})
	s.SetTrustBundle(ctx, []byte("-----BEGIN CERTIFICATE-----\nTUVTSEdBVEU=\n-----END CERTIFICATE-----\n"))
	if s.Serving() {
		t.Error("serving before the first model")
	}
	select {
	case resp := <-responses:
		t.Fatalf("a response before the first model: %d %s", len(resp.GetResources()), resp.GetTypeUrl())
	default:
	}
	if r, e := served(s, "gw"); r != -1 || e != -1 {
		t.Fatalf("a snapshot before the first model: %d routes, %d endpoints", r, e)
	}
	if p := proxyStatus(t, s, "gw"); p.Version != "" || p.Held != "" {
		t.Errorf("proxy before the first model: %+v", p)
	}

	s.SetModel(ctx, guardModel(t, "p1", true, "127.0.0.1:21011"))
	select {
	case resp := <-responses:
		if got := names(t, resp, func() *listenerv3.Listener { return &listenerv3.Listener{} }); !slices.Equal(got, []string{"default/edge/8080"}) {
			t.Errorf("listeners = %v", got)
		}
	case <-ctx.Done():
		t.Fatal("no response to the first model")
	}
	if !s.Serving() {
		t.Error("not serving after the first model")
	}
}

// resume registers a node as a proxy reconnecting with a configuration
// does: its initial requests carry the versions it has, clusters first.
func resume(t *testing.T, s *Server, streamID int64, id string, meta xdsnode.Metadata, versions ...[2]string) {
	t.Helper()
	for i, tv := range versions {
		req := &discoveryv3.DiscoveryRequest{TypeUrl: tv[0], VersionInfo: tv[1]}
		if i == 0 {
			req.Node = testNode(t, id, meta)
		}
		if err := s.onStreamRequest(streamID, req); err != nil {
			t.Fatal(err)
		}
	}
}

// TestGuardHoldsAResumingProxy: a proxy that reconnects with a
// configuration (to a restarted control plane, say) is not given, as its
// first configuration, one without endpoints where it reported having
// others: it keeps what it serves until a configuration has endpoints, the
// policy changes, or it turns out to hold no endpoints itself.
func TestGuardHoldsAResumingProxy(t *testing.T) {
	t.Parallel()
	gwNode := xdsnode.Metadata{Role: xdsnode.RoleGateway, Gateway: "edge"}
	cds := [2]string{resourcev3.ClusterType, "cds-before"}
	lds := [2]string{resourcev3.ListenerType, "lds-before"}
	steps := []struct {
		name string
		// versions the proxy reports on its initial requests.
		versions [][2]string
		// then, the models served after it connected.
		then []*model.Model
		held bool
		// wantEndpoints served at the end; -1: no configuration.
		wantEndpoints int
	}{
		{name: "other endpoints reported: held", versions: [][2]string{cds, lds, {resourcev3.EndpointType, "eds-before"}},
			held: true, wantEndpoints: -1},
		{name: "not said yet (window open): held", versions: [][2]string{cds, lds}, held: true, wantEndpoints: -1},
		{name: "endpoints in the next model: released", versions: [][2]string{cds, {resourcev3.EndpointType, "eds-before"}},
			then: []*model.Model{guardModel(t, "p1", true, "127.0.0.1:21011")}, wantEndpoints: 1},
		{name: "the policy changes: released", versions: [][2]string{cds, {resourcev3.EndpointType, "eds-before"}},
			then: []*model.Model{guardModel(t, "p2", true)}, wantEndpoints: 0},
		{name: "endpoints reported as none: not held", versions: [][2]string{cds, {resourcev3.EndpointType, ""}}, wantEndpoints: 0},
		{name: "a new proxy (no version): not held", versions: [][2]string{{resourcev3.ClusterType, ""}}, wantEndpoints: 0},
	}
	for i, step := range steps {
		ctx := t.Context()
		s := New(ctx, nil)
		s.SetModel(ctx, guardModel(t, "p1", true)) // a catalog that has not settled: orders has no endpoint
		id := "gw-" + string(rune('a'+i))
		resume(t, s, int64(i+1), id, gwNode, step.versions...)
		for _, m := range step.then {
			s.SetModel(ctx, m)
		}
		p := proxyStatus(t, s, id)
		if held := p.Held != ""; held != step.held {
			t.Errorf("%s: held %q, want held %v", step.name, p.Held, step.held)
		}
		if _, e := served(s, id); e != step.wantEndpoints {
			t.Errorf("%s: served %d endpoints, want %d", step.name, e, step.wantEndpoints)
		}
	}
}

// TestResumeWindowCloses: a resuming proxy that has not asked for
// endpoints within the window holds none; its first configuration is then
// given.
func TestResumeWindowCloses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s := New(ctx, nil)
		s.SetModel(ctx, guardModel(t, "p1", true))
		resume(t, s, 1, "gw", xdsnode.Metadata{Role: xdsnode.RoleGateway, Gateway: "edge"},
			[2]string{resourcev3.ClusterType, "cds-before"}, [2]string{resourcev3.ListenerType, "lds-before"})
		if p := proxyStatus(t, s, "gw"); p.Held == "" {
			t.Fatal("not held within the window")
		}
		time.Sleep(resumeWindow - time.Millisecond)
		synctest.Wait()
		if p := proxyStatus(t, s, "gw"); p.Held == "" {
			t.Fatal("released before the window closed")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if p := proxyStatus(t, s, "gw"); p.Held != "" {
			t.Errorf("still held after the window: %s", p.Held)
		}
		if r, e := served(s, "gw"); r != 1 || e != 0 {
			t.Errorf("served %d routes, %d endpoints; want 1, 0", r, e)
		}
	})
}
