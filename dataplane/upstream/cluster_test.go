package upstream

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type testEndpoint struct {
	addr   string
	port   uint32
	health corev3.HealthStatus
	weight uint32 // 0: unset
}

func cla(name string, eps ...testEndpoint) *endpointv3.ClusterLoadAssignment {
	var lbs []*endpointv3.LbEndpoint
	for _, e := range eps {
		lb := &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: e.addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: e.port},
				}}},
			}},
			HealthStatus: e.health,
		}
		if e.weight != 0 {
			lb.LoadBalancingWeight = wrapperspb.UInt32(e.weight)
		}
		lbs = append(lbs, lb)
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}}
}

func edsCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			ResourceApiVersion:    corev3.ApiVersion_V3,
		}},
		ConnectTimeout: durationpb.New(time.Second),
	}
}

func staticCluster(name string, eps ...testEndpoint) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment:       cla(name, eps...),
	}
}

func withH2C(t *testing.T, c *clusterv3.Cluster) *clusterv3.Cluster {
	t.Helper()
	opts, err := anypb.New(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{protocolOptionsKey: opts}
	return c
}

func mustCluster(t *testing.T, c *clusterv3.Cluster) *Cluster {
	t.Helper()
	cl, err := NewCluster(c, nil)
	if err != nil {
		t.Fatalf("NewCluster: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// picks returns how often each address is picked in n calls of Next.
func picks(t *testing.T, c *Cluster, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for range n {
		addr, ok := c.Next()
		if !ok {
			t.Fatal("Next: no endpoint")
		}
		counts[addr]++
	}
	return counts
}

func TestStaticClusterRoundRobin(t *testing.T) {
	t.Parallel()
	c := mustCluster(t, staticCluster("inbound|orders",
		testEndpoint{addr: "127.0.0.1", port: 8001},
		testEndpoint{addr: "127.0.0.1", port: 8002, health: corev3.HealthStatus_HEALTHY},
		testEndpoint{addr: "127.0.0.1", port: 8003, health: corev3.HealthStatus_UNHEALTHY},
		testEndpoint{addr: "127.0.0.1", port: 8004, health: corev3.HealthStatus_DRAINING},
		testEndpoint{addr: "::1", port: 8005},
	))
	if !c.HasEndpoints() || c.Protocol() != HTTP1 || c.Name() != "inbound|orders" {
		t.Fatalf("HasEndpoints=%v Protocol=%v Name=%q", c.HasEndpoints(), c.Protocol(), c.Name())
	}
	want := map[string]int{"127.0.0.1:8001": 100, "127.0.0.1:8002": 100, "[::1]:8005": 100}
	got := picks(t, c, 300)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("picks = %v, want %v", got, want)
	}
}

func TestWeightedRoundRobin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		weights []uint32
		n       int
		want    []int
	}{
		{"unset weights are equal", []uint32{0, 0}, 10, []int{5, 5}},
		{"ratio", []uint32{1, 3}, 400, []int{100, 300}},
		{"gcd reduced", []uint32{200, 600, 200}, 500, []int{100, 300, 100}},
		{"huge weights are scaled", []uint32{3_999_999_999, 1_000_000_000}, 4095, []int{3276, 819}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var eps []testEndpoint
			for i, w := range tc.weights {
				eps = append(eps, testEndpoint{addr: "10.0.0.1", port: uint32(9000 + i), weight: w})
			}
			c := mustCluster(t, staticCluster("c", eps...))
			got := picks(t, c, tc.n)
			for i, w := range tc.want {
				addr := fmt.Sprintf("10.0.0.1:%d", 9000+i)
				if got[addr] != w {
					t.Errorf("%s picked %d times, want %d (all: %v)", addr, got[addr], w, got)
				}
			}
		})
	}
}

func TestSmoothScheduleSpreadsPicks(t *testing.T) {
	t.Parallel()
	order := schedule([]weightedAddress{{"a", 5}, {"b", 1}, {"c", 1}})
	if got := strings.Join(order, ""); got != "aabacaa" {
		t.Fatalf("schedule = %q, want the smooth order aabacaa", got)
	}
}

func TestEDSClusterSetEndpoints(t *testing.T) {
	t.Parallel()
	c := mustCluster(t, edsCluster("default/orders:80"))
	if c.HasEndpoints() {
		t.Fatal("EDS cluster has endpoints before its CLA")
	}
	if _, ok := c.Next(); ok {
		t.Fatal("Next returned an endpoint for an empty cluster")
	}
	if err := c.SetEndpoints(cla("default/orders:80", testEndpoint{addr: "10.1.1.1", port: 80})); err != nil {
		t.Fatalf("SetEndpoints: %v", err)
	}
	if addr, ok := c.Next(); !ok || addr != "10.1.1.1:80" {
		t.Fatalf("Next = %q %v", addr, ok)
	}
	// Only unhealthy endpoints: none may receive traffic.
	if err := c.SetEndpoints(cla("default/orders:80", testEndpoint{addr: "10.1.1.1", port: 80, health: corev3.HealthStatus_UNHEALTHY})); err != nil {
		t.Fatalf("SetEndpoints: %v", err)
	}
	if c.HasEndpoints() {
		t.Fatal("HasEndpoints with only unhealthy endpoints")
	}
}

func TestSetEndpointsErrorsKeepPrevious(t *testing.T) {
	t.Parallel()
	c := mustCluster(t, edsCluster("c"))
	good := cla("c", testEndpoint{addr: "10.0.0.1", port: 80})
	if err := c.SetEndpoints(good); err != nil {
		t.Fatal(err)
	}
	withLocality := cla("c", testEndpoint{addr: "10.0.0.2", port: 80})
	withLocality.Endpoints[0].Locality = &corev3.Locality{Region: "eu"} // only zone is supported
	tests := []struct {
		name string
		cla  *endpointv3.ClusterLoadAssignment
		want string
	}{
		{"nil", nil, "nil cluster load assignment"},
		{"other cluster", cla("other", testEndpoint{addr: "10.0.0.2", port: 80}), "does not match"},
		{"hostname", cla("c", testEndpoint{addr: "orders.local", port: 80}), "not an IP address"},
		{"unsupported field", withLocality, "locality"},
	}
	for _, tc := range tests {
		err := c.SetEndpoints(tc.cla)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, err, tc.want)
		}
		if addr, _ := c.Next(); addr != "10.0.0.1:80" {
			t.Errorf("%s: endpoints changed to %q after a failed update", tc.name, addr)
		}
	}
}

func TestNewClusterErrors(t *testing.T) {
	t.Parallel()
	leastRequest := edsCluster("c")
	leastRequest.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
	circuit := edsCluster("c")
	circuit.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{Priority: corev3.RoutingPriority_HIGH}}}
	logicalDNS := edsCluster("c")
	logicalDNS.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS}
	noLA := staticCluster("c")
	noLA.LoadAssignment = nil
	edsNoConfig := edsCluster("c")
	edsNoConfig.EdsClusterConfig = nil
	tests := []struct {
		name string
		c    *clusterv3.Cluster
		want string
	}{
		{"nil", nil, "nil cluster"},
		{"lb policy", leastRequest, "lb_policy"},
		{"circuit breakers", circuit, "circuit_breakers"},
		{"type", logicalDNS, "type"},
		{"static without load_assignment", noLA, "load_assignment"},
		{"eds without config", edsNoConfig, "eds_cluster_config"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewCluster(tc.c, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestTransportSpeaksTheClusterProtocol(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		h2c       bool
		wantProto string
	}{
		{"http1", false, "HTTP/1.1"},
		{"h2c", true, "HTTP/2.0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, r.Proto)
			}))
			if tc.h2c {
				backend.Config.Protocols = new(http.Protocols)
				backend.Config.Protocols.SetHTTP1(true)
				backend.Config.Protocols.SetUnencryptedHTTP2(true)
			}
			backend.Start()
			t.Cleanup(backend.Close)
			addr := backend.Listener.Addr().(interface{ String() string }).String()
			host, port := splitAddr(t, addr)
			c := staticCluster("c", testEndpoint{addr: host, port: port})
			if tc.h2c {
				c = withH2C(t, c)
			}
			cl := mustCluster(t, c)
			ep, _ := cl.Next()
			for range 3 { // keep-alive: same protocol on reused connections
				req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://"+ep+"/", nil)
				resp, err := cl.Transport().RoundTrip(req)
				if err != nil {
					t.Fatalf("RoundTrip: %v", err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(body) != tc.wantProto {
					t.Fatalf("backend saw %q, want %q", body, tc.wantProto)
				}
			}
		})
	}
}

func splitAddr(t *testing.T, addr string) (string, uint32) {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	var port uint32
	if _, err := fmt.Sscan(addr[i+1:], &port); err != nil {
		t.Fatal(err)
	}
	return strings.Trim(addr[:i], "[]"), port
}

func TestConcurrentSetEndpointsAndNext(t *testing.T) {
	t.Parallel()
	c := mustCluster(t, edsCluster("c"))
	sets := []*endpointv3.ClusterLoadAssignment{
		cla("c", testEndpoint{addr: "10.0.0.1", port: 80}),
		cla("c", testEndpoint{addr: "10.0.0.2", port: 80}, testEndpoint{addr: "10.0.0.3", port: 80, weight: 2}),
	}
	if err := c.SetEndpoints(sets[0]); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if addr, ok := c.Next(); !ok || !strings.HasPrefix(addr, "10.0.0.") {
					t.Errorf("Next = %q %v during updates", addr, ok)
					return
				}
			}
		})
	}
	for i := range 1000 {
		if err := c.SetEndpoints(sets[i%2]); err != nil {
			t.Error(err)
			break
		}
	}
	close(stop)
	wg.Wait()
}

func TestNextDoesNotAllocate(t *testing.T) {
	c := mustCluster(t, staticCluster("c", testEndpoint{addr: "10.0.0.1", port: 80}, testEndpoint{addr: "10.0.0.2", port: 80}))
	if allocs := testing.AllocsPerRun(100, func() { c.Next() }); allocs != 0 {
		t.Fatalf("Next allocates %v times", allocs)
	}
}
