package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/internal/testutil"
)

const nodeID = "gateway~edge~test-1"

// controlPlane is a real go-control-plane ADS server on loopback that records
// every request it receives.
type controlPlane struct {
	addr   string
	cache  cachev3.SnapshotCache
	server *grpc.Server

	mu       sync.Mutex
	requests []*discoveryv3.DiscoveryRequest
}

func startControlPlane(t *testing.T, addr string, cache cachev3.SnapshotCache) *controlPlane {
	t.Helper()
	if cache == nil {
		cache = cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	}
	cp := &controlPlane{cache: cache}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	cp.addr = lis.Addr().String()
	callbacks := serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, req *discoveryv3.DiscoveryRequest) error {
			cp.mu.Lock()
			defer cp.mu.Unlock()
			cp.requests = append(cp.requests, proto.Clone(req).(*discoveryv3.DiscoveryRequest))
			return nil
		},
	}
	xds := serverv3.NewServer(context.Background(), cache, callbacks)
	cp.server = grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(cp.server, xds)
	go func() { _ = cp.server.Serve(lis) }()
	t.Cleanup(cp.server.Stop)
	return cp
}

// waitRequest polls until a recorded request satisfies match.
func (cp *controlPlane) waitRequest(t *testing.T, what string, match func(*discoveryv3.DiscoveryRequest) bool) *discoveryv3.DiscoveryRequest {
	t.Helper()
	var found *discoveryv3.DiscoveryRequest
	testutil.Eventually(t, 30*time.Second, "the control plane receives "+what, func() error {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		for _, r := range cp.requests {
			if match(r) {
				found = r
				return nil
			}
		}
		return fmt.Errorf("none of %d requests", len(cp.requests))
	})
	return found
}

func snapshot(t *testing.T, version string) *cachev3.Snapshot {
	t.Helper()
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix:     "l1",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: ads, RouteConfigName: "r1"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := cachev3.NewSnapshot(version, map[resourcev3.Type][]types.Resource{
		resourcev3.ClusterType: {&clusterv3.Cluster{
			Name:                 "c1",
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads},
		}},
		resourcev3.EndpointType: {&endpointv3.ClusterLoadAssignment{ClusterName: "c1"}},
		resourcev3.ListenerType: {&listenerv3.Listener{
			Name:         "l1",
			FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "hcm", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}},
		}},
		resourcev3.RouteType: {&routev3.RouteConfiguration{Name: "r1"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// recorder is an ApplyFunc that remembers the last version per type and can
// be told to reject one type.
type recorder struct {
	mu       sync.Mutex
	versions map[string]string
	names    map[string][]string
	reject   map[string]error
}

func newRecorder() *recorder {
	return &recorder{versions: map[string]string{}, names: map[string][]string{}, reject: map[string]error{}}
}

func (r *recorder) apply(_ context.Context, typeURL string, resources []proto.Message, version string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.reject[typeURL]; err != nil {
		return err
	}
	r.versions[typeURL] = version
	r.names[typeURL] = nil
	for _, m := range resources {
		r.names[typeURL] = append(r.names[typeURL], cachev3.GetResourceName(m))
	}
	return nil
}

func (r *recorder) waitVersion(t *testing.T, typeURL, version string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, fmt.Sprintf("%s version %q applied", shortType(typeURL), version), func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if got := r.versions[typeURL]; got != version {
			return fmt.Errorf("version %q", got)
		}
		return nil
	})
}

func runClient(t *testing.T, addrs []string, apply ApplyFunc) {
	t.Helper()
	c, err := New(Options{
		Node:           &corev3.Node{Id: nodeID, Cluster: "edge"},
		Addresses:      addrs,
		Apply:          apply,
		Logger:         slog.New(slog.DiscardHandler),
		BackoffInitial: 20 * time.Millisecond,
		BackoffMax:     200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run() = %v, want context.Canceled", err)
		}
	})
}

func isACK(typeURL, version string) func(*discoveryv3.DiscoveryRequest) bool {
	return func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetTypeUrl() == typeURL && r.GetVersionInfo() == version && r.GetResponseNonce() != "" && r.GetErrorDetail() == nil
	}
}

func TestClientReceivesAndACKsEveryType(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t, "127.0.0.1:0", nil)
	if err := cp.cache.SetSnapshot(context.Background(), nodeID, snapshot(t, "v1")); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	runClient(t, []string{cp.addr}, rec.apply)

	for _, typeURL := range []string{ClusterType, ListenerType, EndpointType, RouteType} {
		rec.waitVersion(t, typeURL, "v1")
		cp.waitRequest(t, "ACK of "+shortType(typeURL), isACK(typeURL, "v1"))
	}
	eds := cp.waitRequest(t, "EDS subscription", func(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() == EndpointType })
	if got := eds.GetResourceNames(); len(got) != 1 || got[0] != "c1" {
		t.Errorf("EDS subscription names = %v, want [c1]", got)
	}
	rds := cp.waitRequest(t, "RDS subscription", func(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() == RouteType })
	if got := rds.GetResourceNames(); len(got) != 1 || got[0] != "r1" {
		t.Errorf("RDS subscription names = %v, want [r1]", got)
	}
	cds := cp.waitRequest(t, "CDS request", func(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() == ClusterType })
	if len(cds.GetResourceNames()) != 0 {
		t.Errorf("CDS request names = %v, want wildcard", cds.GetResourceNames())
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if got := rec.names[ClusterType]; len(got) != 1 || got[0] != "c1" {
		t.Errorf("applied clusters = %v, want [c1]", got)
	}
}

func TestClientNACKsWithDetailAndKeepsLastGoodVersion(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t, "127.0.0.1:0", nil)
	if err := cp.cache.SetSnapshot(context.Background(), nodeID, snapshot(t, "v1")); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	runClient(t, []string{cp.addr}, rec.apply)
	rec.waitVersion(t, ClusterType, "v1")
	cp.waitRequest(t, "ACK of CDS v1", isACK(ClusterType, "v1"))

	rec.mu.Lock()
	rec.reject[ClusterType] = errors.New(`cluster "c1": circuit_breakers: not supported`)
	rec.mu.Unlock()
	if err := cp.cache.SetSnapshot(context.Background(), nodeID, snapshot(t, "v2")); err != nil {
		t.Fatal(err)
	}
	nack := cp.waitRequest(t, "NACK of CDS v2", func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetTypeUrl() == ClusterType && r.GetErrorDetail() != nil
	})
	if got := nack.GetVersionInfo(); got != "v1" {
		t.Errorf("NACK version_info = %q, want last good %q", got, "v1")
	}
	if nack.GetResponseNonce() == "" {
		t.Error("NACK has no response_nonce")
	}
	if msg := nack.GetErrorDetail().GetMessage(); !strings.Contains(msg, "circuit_breakers: not supported") {
		t.Errorf("NACK detail = %q, want the Apply error", msg)
	}
	// Other types of the same snapshot are still accepted.
	rec.waitVersion(t, ListenerType, "v2")
}

func TestClientReconnectsAndResumesAfterServerRestart(t *testing.T) {
	t.Parallel()
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	if err := cache.SetSnapshot(context.Background(), nodeID, snapshot(t, "v1")); err != nil {
		t.Fatal(err)
	}
	first := startControlPlane(t, "127.0.0.1:0", cache)
	rec := newRecorder()
	// The first address is dead: the client must rotate to the live one.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	runClient(t, []string{deadAddr, first.addr}, rec.apply)
	rec.waitVersion(t, RouteType, "v1")
	rec.waitVersion(t, EndpointType, "v1")

	first.server.Stop()
	second := startControlPlane(t, first.addr, cache)
	// The new stream resumes from the accepted versions and names.
	for _, typeURL := range []string{ClusterType, ListenerType, EndpointType, RouteType} {
		req := second.waitRequest(t, "resumed "+shortType(typeURL)+" request", func(r *discoveryv3.DiscoveryRequest) bool {
			return r.GetTypeUrl() == typeURL && r.GetResponseNonce() == ""
		})
		if req.GetVersionInfo() != "v1" {
			t.Errorf("resumed %s version_info = %q, want v1", shortType(typeURL), req.GetVersionInfo())
		}
	}
	if err := cache.SetSnapshot(context.Background(), nodeID, snapshot(t, "v2")); err != nil {
		t.Fatal(err)
	}
	for _, typeURL := range []string{ClusterType, ListenerType, EndpointType, RouteType} {
		rec.waitVersion(t, typeURL, "v2")
		second.waitRequest(t, "ACK of "+shortType(typeURL)+" v2", isACK(typeURL, "v2"))
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	t.Parallel()
	apply := func(context.Context, string, []proto.Message, string) error { return nil }
	node := &corev3.Node{Id: "n"}
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no node", Options{Addresses: []string{"a:1"}, Apply: apply}, "node"},
		{"no address", Options{Node: node, Apply: apply}, "address"},
		{"no apply", Options{Node: node, Addresses: []string{"a:1"}}, "Apply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := New(tt.opts); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New() = %v, want error mentioning %q", err, tt.want)
			}
		})
	}
}
