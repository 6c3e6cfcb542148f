package dataplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/internal/testutil"
)

const testNode = "gateway~edge~test"

// controlPlane is a real go-control-plane ADS server that records NACKs.
type controlPlane struct {
	addr  string
	cache cachev3.SnapshotCache
	mu    sync.Mutex
	nacks []*discoveryv3.DiscoveryRequest
}

func startControlPlane(t *testing.T) *controlPlane {
	t.Helper()
	cp := &controlPlane{cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp.addr = lis.Addr().String()
	srv := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, serverv3.NewServer(context.Background(), cp.cache, serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, req *discoveryv3.DiscoveryRequest) error {
			if req.GetErrorDetail() != nil {
				cp.mu.Lock()
				cp.nacks = append(cp.nacks, proto.Clone(req).(*discoveryv3.DiscoveryRequest))
				cp.mu.Unlock()
			}
			return nil
		},
	}))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return cp
}

func (cp *controlPlane) set(t *testing.T, snap *cachev3.Snapshot) {
	t.Helper()
	if err := snap.Consistent(); err != nil {
		t.Fatalf("inconsistent snapshot: %v", err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), testNode, snap); err != nil {
		t.Fatal(err)
	}
}

// config describes a snapshot: one listener routing every path to cluster.
type config struct {
	version    string
	listenAddr string // ip:port of the listener
	cluster    string
	backend    string          // host:port of the cluster's one endpoint
	mutate     func(*snapshot) // optional tweak before building
}

type snapshot struct {
	hcm       *hcmv3.HttpConnectionManager // of the one listener
	clusters  []*clusterv3.Cluster
	endpoints []*endpointv3.ClusterLoadAssignment
	listeners []*listenerv3.Listener
	routes    []*routev3.RouteConfiguration
}

func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
}

func socketAddress(t *testing.T, hostport string) *corev3.Address {
	t.Helper()
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(n)},
	}}}
}

func (c config) build(t *testing.T) *cachev3.Snapshot {
	t.Helper()
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		t.Fatal(err)
	}
	s := &snapshot{
		hcm: &hcmv3.HttpConnectionManager{
			StatPrefix:     "edge",
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: ads(), RouteConfigName: "edge"}},
			HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
		},
		clusters: []*clusterv3.Cluster{{
			Name:                 c.cluster,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads()},
		}},
		endpoints: []*endpointv3.ClusterLoadAssignment{{
			ClusterName: c.cluster,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(t, c.backend)}},
			}}}},
		}},
		listeners: []*listenerv3.Listener{{
			Name:    "edge",
			Address: socketAddress(t, c.listenAddr),
		}},
		routes: []*routev3.RouteConfiguration{{
			Name: "edge",
			VirtualHosts: []*routev3.VirtualHost{{
				Name: "all", Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: c.cluster}}},
				}},
			}},
		}},
	}
	if c.mutate != nil {
		c.mutate(s)
	}
	hcm, err := anypb.New(s.hcm)
	if err != nil {
		t.Fatal(err)
	}
	s.listeners[0].FilterChains = []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
		Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
	}}}}
	res := map[resourcev3.Type][]types.Resource{}
	for _, m := range s.clusters {
		res[resourcev3.ClusterType] = append(res[resourcev3.ClusterType], m)
	}
	for _, m := range s.endpoints {
		res[resourcev3.EndpointType] = append(res[resourcev3.EndpointType], m)
	}
	for _, m := range s.listeners {
		res[resourcev3.ListenerType] = append(res[resourcev3.ListenerType], m)
	}
	for _, m := range s.routes {
		res[resourcev3.RouteType] = append(res[resourcev3.RouteType], m)
	}
	snap, err := cachev3.NewSnapshot(c.version, res)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// backend answers every request with its name.
func backend(t *testing.T, name string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, name)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// testHTTP1Option is the listeners' HTTP/1.1 server of the test proxies
// unless a test chooses: the fast path when $MESHGATE_HTTP1_SERVER is
// "fast" (to run the whole suite on it), net/http otherwise.
func testHTTP1Option(o *Options) {
	o.FastHTTP1 = os.Getenv("MESHGATE_HTTP1_SERVER") == "fast"
}

// withHTTP1 returns the option choosing the fast path (fast) or net/http.
func withHTTP1(fast bool) func(*Options) {
	return func(o *Options) { o.FastHTTP1 = fast }
}

// forEachHTTP1Server runs test as subtests "std" and "fast", with the
// option choosing that HTTP/1.1 server.
func forEachHTTP1Server(t *testing.T, test func(t *testing.T, server func(*Options))) {
	for _, fast := range []bool{false, true} {
		name := "std"
		if fast {
			name = "fast"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, withHTTP1(fast))
		})
	}
}

// startProxy runs a Proxy against cp until the test ends.
func startProxy(t *testing.T, cp *controlPlane, opts ...func(*Options)) *Proxy {
	t.Helper()
	p, stop := startProxyStoppable(t, cp, opts...)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// startProxyStoppable runs a Proxy against cp; stop cancels it and waits for Run.
func startProxyStoppable(t *testing.T, cp *controlPlane, opts ...func(*Options)) (*Proxy, func() error) {
	t.Helper()
	o := Options{
		Node:         &corev3.Node{Id: testNode, Cluster: "edge"},
		XDSAddresses: []string{cp.addr},
		Logger:       slog.New(slog.DiscardHandler),
	}
	testHTTP1Option(&o)
	for _, opt := range opts {
		opt(&o)
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	var result error
	return p, func() error {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					result = fmt.Errorf("Run() = %w", err)
				}
			case <-time.After(10 * time.Second):
				result = errors.New("Run did not return after cancel")
			}
		})
		return result
	}
}

// eventually is testutil.Eventually for a boolean condition.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, what, testutil.Holds(cond))
}

func get(client *http.Client, url string) (int, string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// waitServing waits until the proxy's edge listener answers body.
func waitServing(t *testing.T, p *Proxy, client *http.Client, want string) string {
	t.Helper()
	var url string
	eventually(t, "proxy to serve "+want, func() bool {
		addr := p.ListenerAddrs()["edge"]
		if addr == "" {
			return false
		}
		url = "http://" + addr + "/hello"
		code, body, err := get(client, url)
		return err == nil && code == http.StatusOK && body == want
	})
	return url
}

func TestProxyForwardsToBackendAndServesAdmin(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	p := startProxy(t, cp)
	eventually(t, "admin address", func() bool { return p.AdminAddr() != "" })
	admin := "http://" + p.AdminAddr()
	if code, _, err := get(http.DefaultClient, admin+"/ready"); err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("/ready before config = %d, %v; want 503", code, err)
	}

	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend(t, "a")}.build(t))
	waitServing(t, p, http.DefaultClient, "a")

	if code, _, err := get(http.DefaultClient, admin+"/ready"); err != nil || code != http.StatusOK {
		t.Fatalf("/ready = %d, %v; want 200", code, err)
	}
	_, body, err := get(http.DefaultClient, admin+"/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	var dump ConfigDump
	if err := json.Unmarshal([]byte(body), &dump); err != nil {
		t.Fatalf("config_dump is not JSON: %v\n%s", err, body)
	}
	for _, typeURL := range []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType} {
		if dump.Versions[typeURL] != "v1" {
			t.Errorf("config_dump version of %s = %q, want v1", typeURL, dump.Versions[typeURL])
		}
		if !strings.Contains(string(dump.Accepted[typeURL]), "edge") && !strings.Contains(string(dump.Accepted[typeURL]), "default/a:80") {
			t.Errorf("config_dump resources of %s = %s, want the accepted resource", typeURL, dump.Accepted[typeURL])
		}
	}
	if _, body, err := get(http.DefaultClient, admin+"/stats"); err != nil || !strings.Contains(body, `"updates_accepted"`) {
		t.Errorf("/stats = %q, %v", body, err)
	}
}

func TestProxySwapsRoutesWithoutFailedRequests(t *testing.T) {
	t.Parallel()
	forEachHTTP1Server(t, testProxySwapsRoutesWithoutFailedRequests)
}

func testProxySwapsRoutesWithoutFailedRequests(t *testing.T, server func(*Options)) {
	cp := startControlPlane(t)
	p := startProxy(t, cp, server)
	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend(t, "a")}.build(t))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	t.Cleanup(client.CloseIdleConnections)
	url := waitServing(t, p, client, "a")

	// A keep-alive client loops while the routes move to a new cluster whose
	// endpoints arrive separately; cluster a disappears from CDS meanwhile.
	var failures, sawB atomic.Int64
	var firstFailure atomic.Pointer[string]
	stop := make(chan struct{})
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			code, body, err := get(client, url)
			switch {
			case err == nil && code == http.StatusOK && body == "b":
				sawB.Add(1)
			case err == nil && code == http.StatusOK && body == "a":
			default:
				failures.Add(1)
				msg := fmt.Sprintf("status %d body %q err %v", code, body, err)
				firstFailure.CompareAndSwap(nil, &msg)
			}
		}
	}()
	cp.set(t, config{version: "v2", listenAddr: "127.0.0.1:0", cluster: "default/b:80", backend: backend(t, "b")}.build(t))
	eventually(t, "requests to reach backend b", func() bool { return sawB.Load() > 20 })
	close(stop)
	<-loopDone
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d requests failed during the swap; first: %s", n, *firstFailure.Load())
	}
}

func TestProxyNACKsUnsupportedFieldAndKeepsServing(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	p := startProxy(t, cp)
	backendA := backend(t, "a")
	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backendA}.build(t))
	url := waitServing(t, p, http.DefaultClient, "a")

	cp.set(t, config{version: "v2", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend(t, "b"),
		mutate: func(s *snapshot) {
			s.clusters[0].UpstreamConnectionOptions = &clusterv3.UpstreamConnectionOptions{}
			s.routes[0].VirtualHosts[0].Routes[0].GetRoute().InternalRedirectPolicy = &routev3.InternalRedirectPolicy{}
		},
	}.build(t))
	var nacks []*discoveryv3.DiscoveryRequest
	eventually(t, "NACKs of CDS and RDS", func() bool {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		nacks = slices.Clone(cp.nacks)
		return hasNACK(nacks, resourcev3.ClusterType) && hasNACK(nacks, resourcev3.RouteType)
	})
	for _, n := range nacks {
		if n.GetVersionInfo() != "v1" {
			t.Errorf("NACK of %s carries version %q, want last good v1", n.GetTypeUrl(), n.GetVersionInfo())
		}
		detail := n.GetErrorDetail().GetMessage()
		if !strings.Contains(detail, "upstream_connection_options: not supported") && !strings.Contains(detail, "internal_redirect_policy: not supported") {
			t.Errorf("NACK detail = %q, want the unsupported field", detail)
		}
	}
	// EDS v2 (endpoint b) is valid and applied; everything else stays on v1.
	// The route still goes to cluster default/a:80, now pointing at b.
	eventually(t, "EDS v2 applied", func() bool {
		code, body, err := get(http.DefaultClient, url)
		return err == nil && code == http.StatusOK && body == "b"
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	if v := p.state.versions[resourcev3.ClusterType]; v != "v1" {
		t.Errorf("CDS version = %q, want v1 kept", v)
	}
	if v := p.state.versions[resourcev3.RouteType]; v != "v1" {
		t.Errorf("RDS version = %q, want v1 kept", v)
	}
}

func TestProxyNACKsListenerThatCannotBind(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	p := startProxy(t, cp)
	backendA := backend(t, "a")
	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backendA}.build(t))
	url := waitServing(t, p, http.DefaultClient, "a")

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { taken.Close() })
	cp.set(t, config{version: "v2", listenAddr: taken.Addr().String(), cluster: "default/a:80", backend: backendA}.build(t))
	eventually(t, "NACK of LDS", func() bool {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		return hasNACK(cp.nacks, resourcev3.ListenerType)
	})
	if code, body, err := get(http.DefaultClient, url); err != nil || code != http.StatusOK || body != "a" {
		t.Fatalf("after a failed bind: %d %q %v; want the old listener serving", code, body, err)
	}
}

func TestProxyHoldsRouteTableUntilClusterArrivesAtMostFiveSeconds(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	p := startProxy(t, cp)
	backendA := backend(t, "a")
	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backendA}.build(t))
	url := waitServing(t, p, http.DefaultClient, "a")

	// v2 routes to a cluster the control plane never sends.
	changed := time.Now()
	cp.set(t, config{version: "v2", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backendA,
		mutate: func(s *snapshot) {
			s.routes[0].VirtualHosts[0].Routes[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "default/ghost:80"}
		},
	}.build(t))
	eventually(t, "RDS v2 accepted", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.state.versions[resourcev3.RouteType] == "v2"
	})
	if code, body, err := get(http.DefaultClient, url); err != nil || code != http.StatusOK || body != "a" {
		t.Fatalf("while held: %d %q %v; want the old table serving", code, body, err)
	}
	eventually(t, "held table installed", func() bool {
		code, _, err := get(http.DefaultClient, url)
		return err == nil && code == http.StatusServiceUnavailable
	})
	if waited := time.Since(changed); waited < holdTimeout-time.Second {
		t.Fatalf("held table installed after %v, want about %v", waited, holdTimeout)
	}
}

// TestProxyDoesNotHoldForAClusterTheServingTableAlreadyLacks: a route table
// that routes to a cluster CDS does not have (a weighted entry answered with
// cluster_not_found_response_code: the Gateway API's invalid backend) is not
// held again when a new version still routes to it: waiting would not bring
// it, only delay the other changes.
func TestProxyDoesNotHoldForAClusterTheServingTableAlreadyLacks(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	p := startProxy(t, cp)
	backendA := backend(t, "a")
	withInvalidShare := func(extra ...*routev3.Route) func(s *snapshot) {
		return func(s *snapshot) {
			invalid := &routev3.Route{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/split"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
						Clusters: []*routev3.WeightedCluster_ClusterWeight{
							{Name: "invalid-backend-cluster", Weight: wrapperspb.UInt32(1)},
							{Name: "default/a:80", Weight: wrapperspb.UInt32(1)},
						},
					}},
					ClusterNotFoundResponseCode: routev3.RouteAction_INTERNAL_SERVER_ERROR,
				}},
			}
			vh := s.routes[0].VirtualHosts[0]
			vh.Routes = append(append([]*routev3.Route{invalid}, extra...), vh.Routes...)
		}
	}
	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backendA,
		mutate: withInvalidShare()}.build(t))
	waitServing(t, p, http.DefaultClient, "a")

	teapot := &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/v2"}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: http.StatusTeapot}},
	}
	cp.set(t, config{version: "v2", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backendA,
		mutate: withInvalidShare(teapot)}.build(t))
	eventually(t, "RDS v2 accepted", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.state.versions[resourcev3.RouteType] == "v2"
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.servers {
		if s.pending != nil {
			t.Errorf("listener %q: route table v2 held for %v, want it installed at once", s.listener, p.missingClusters(s.pending.table))
		}
	}
}

func hasNACK(reqs []*discoveryv3.DiscoveryRequest, typeURL string) bool {
	for _, r := range reqs {
		if r.GetTypeUrl() == typeURL {
			return true
		}
	}
	return false
}

func TestNewRejectsBadOptions(t *testing.T) {
	t.Parallel()
	node := &corev3.Node{Id: "n"}
	tests := []struct {
		name string
		opts Options
	}{
		{"no node", Options{XDSAddresses: []string{"127.0.0.1:1"}}},
		{"no xds address", Options{Node: node}},
		{"bad admin address", Options{Node: node, XDSAddresses: []string{"127.0.0.1:1"}, AdminAddress: "nope"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := New(tt.opts); err == nil {
				t.Fatal("New() = nil error")
			}
		})
	}
}

func TestProxyDrainsInFlightRequestsOnStop(t *testing.T) {
	t.Parallel()
	forEachHTTP1Server(t, testProxyDrainsInFlightRequestsOnStop)
}

func testProxyDrainsInFlightRequestsOnStop(t *testing.T, server func(*Options)) {
	cp := startControlPlane(t)
	p, stop := startProxyStoppable(t, cp, server)
	t.Cleanup(func() { _ = stop() })
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "a")
	}))
	t.Cleanup(slow.Close)
	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: slow.Listener.Addr().String()}.build(t))
	waitServing(t, p, http.DefaultClient, "a")
	addr := p.ListenerAddrs()["edge"]

	type result struct {
		code int
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		code, body, err := get(http.DefaultClient, "http://"+addr+"/slow")
		got <- result{code, body, err}
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// The listener stops accepting while the request is still in flight.
	eventually(t, "listener to stop accepting", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	close(release)
	if r := <-got; r.err != nil || r.code != http.StatusOK || r.body != "a" {
		t.Fatalf("in-flight request: %d %q %v; want it to complete", r.code, r.body, r.err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

// TestProxyHostPort: how the Host port is routed and forwarded, over
// HTTP/1.1 (both servers) and h2c (:authority). strip_any_host_port removes
// it from the request (the backend gets the Host without it, as in Envoy);
// ignore_port_in_host_matching only chooses the virtual host without it
// (the backend gets the Host as sent); with neither, "shop.example:8080"
// does not match the domain "shop.example".
func TestProxyHostPort(t *testing.T) {
	t.Parallel()
	forEachHTTP1Server(t, testProxyHostPort)
}

func testProxyHostPort(t *testing.T, server func(*Options)) {
	tests := []struct {
		name       string
		strip      bool
		ignorePort bool
		want       int
		wantHost   string // the Host the backend receives
	}{
		{"strip_any_host_port", true, false, http.StatusOK, "shop.example"},
		{"ignore_port_in_host_matching", false, true, http.StatusOK, "shop.example:8080"},
		{"neither", false, false, http.StatusNotFound, ""},
	}
	echoHost := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Host)
	}))
	t.Cleanup(echoHost.Close)
	h2c := new(http.Protocols)
	h2c.SetUnencryptedHTTP2(true)
	clients := map[string]*http.Client{
		"http1": {Transport: &http.Transport{}},
		"h2c":   {Transport: &http.Transport{Protocols: h2c}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cp := startControlPlane(t)
			p := startProxy(t, cp, server)
			cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: echoHost.Listener.Addr().String(),
				mutate: func(s *snapshot) {
					s.routes[0].VirtualHosts[0].Domains = []string{"shop.example"}
					s.routes[0].IgnorePortInHostMatching = tt.ignorePort
					if tt.strip {
						s.hcm.StripPortMode = &hcmv3.HttpConnectionManager_StripAnyHostPort{StripAnyHostPort: true}
					}
				},
			}.build(t))
			eventually(t, "listener bound", func() bool { return p.ListenerAddrs()["edge"] != "" })
			eventually(t, "routes applied", func() bool {
				p.mu.Lock()
				defer p.mu.Unlock()
				return p.state.versions[resourcev3.RouteType] == "v1" && p.state.versions[resourcev3.EndpointType] == "v1"
			})
			for name, client := range clients {
				req, err := http.NewRequest(http.MethodGet, "http://"+p.ListenerAddrs()["edge"]+"/", nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Host = "shop.example:8080"
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if resp.StatusCode != tt.want {
					t.Fatalf("%s: status for Host shop.example:8080 = %d, want %d", name, resp.StatusCode, tt.want)
				}
				if tt.want == http.StatusOK && string(body) != tt.wantHost {
					t.Errorf("%s (%s): backend got Host %q, want %q", name, resp.Proto, body, tt.wantHost)
				}
			}
		})
	}
}

// TestProxyServesListenerOnAdditionalAddresses: a listener with
// additional_addresses is served on each of them as on its address; one
// that cannot be bound is not served, without rejecting the update or
// taking the listener's other addresses down.
func TestProxyServesListenerOnAdditionalAddresses(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	p := startProxy(t, cp)
	backendA := backend(t, "a")
	second := "127.0.0.2:" + freeLoopbackPort(t, "127.0.0.2")
	taken, err := net.Listen("tcp", "127.0.0.3:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { taken.Close() })
	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backendA,
		mutate: func(s *snapshot) {
			for _, addr := range []string{second, taken.Addr().String()} {
				s.listeners[0].AdditionalAddresses = append(s.listeners[0].AdditionalAddresses,
					&listenerv3.AdditionalAddress{Address: socketAddress(t, addr)})
			}
		}}.build(t))
	waitServing(t, p, http.DefaultClient, "a")
	if addr := p.ListenerAddrs()["edge"]; !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Errorf("ListenerAddrs()[edge] = %q, want the listener's address", addr)
	}
	if code, body, err := get(http.DefaultClient, "http://"+second+"/hello"); err != nil || code != http.StatusOK || body != "a" {
		t.Fatalf("on the additional address: %d %q %v", code, body, err)
	}
	cp.mu.Lock()
	nacked := hasNACK(cp.nacks, resourcev3.ListenerType)
	cp.mu.Unlock()
	if nacked {
		t.Error("LDS NACKed: an additional address that cannot be bound must not reject the update")
	}
	p.mu.Lock()
	servers := len(p.servers)
	p.mu.Unlock()
	if servers != 2 {
		t.Errorf("%d servers, want 2 (the address and the additional one that could be bound)", servers)
	}

	// v2 drops the additional addresses: that server closes.
	cp.set(t, config{version: "v2", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backendA}.build(t))
	eventually(t, "the additional address to close", func() bool {
		_, _, err := get(http.DefaultClient, "http://"+second+"/hello")
		return err != nil
	})
}

// freeLoopbackPort is a port of ip that was free a moment ago.
func freeLoopbackPort(t *testing.T, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("free port on %s: %v", ip, err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}
