package translate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
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
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/dataplane"
	"github.com/meshgate/meshgate/dataplane/meshtls/meshtlstest"
	"github.com/meshgate/meshgate/dataplane/xdsclient"
)

// TestContract feeds every golden output, node by node, to the data plane
// (its xdscheck and apply path, the very code a meshgate proxy runs) and
// requires it accepted: the control plane emits nothing the proxy NACKs.
// The goldens are what TestGolden proves the translation gives, so the two
// sides cannot drift apart unnoticed.
func TestContract(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a proxy per golden node")
	}
	server := startContractServer(t)
	for _, c := range goldenCases(t) {
		data, err := os.ReadFile(c.out)
		if err != nil {
			t.Fatalf("%v (go test -update writes it)", err)
		}
		nodes, err := unmarshalGolden(data)
		if err != nil {
			t.Fatalf("%s: %v", c.out, err)
		}
		for _, n := range nodes {
			if n.Node.Role == RoleProxyless {
				continue // grpc-go's to accept (TestGoldenResourcesHaveGRPCShapes, and controlplane/xds's proxyless test)
			}
			if n.Node.Envoy {
				continue // for an Envoy, not this proxy: TestEnvoyRequirements checks it
			}
			t.Run(c.feature+"/"+c.name+"/"+n.Node.ID, func(t *testing.T) {
				t.Parallel()
				if err := acceptByDataPlane(t, server, n.Node, n.Res); err != nil {
					t.Errorf("the data plane rejects %s's configuration:\n%v", c.out, err)
				}
			})
		}
	}
}

// acceptByDataPlane feeds one node's resources through the data plane's
// check and apply path and returns what it rejected (nil: everything
// accepted). It is the contract test's one use of the dataplane API: a
// dataplane.Proxy, subscribed to an xDS server that serves the resources,
// ACKs or NACKs each type. Listener ports are replaced by free ones, the
// same on a listener's additional addresses (the goldens' fixed ports would
// clash between tests); nothing else changes.
func acceptByDataPlane(t *testing.T, server *contractServer, node NodeInfo, res *Resources) error {
	t.Helper()
	id := fmt.Sprintf("%s~contract-%d", node.ID, server.nextID.Add(1))
	listeners := make([]types.Resource, 0, len(res.Listeners))
	for _, l := range res.Listeners {
		l = proto.Clone(l).(*listenerv3.Listener)
		sa := l.GetAddress().GetSocketAddress()
		port, err := freePort(sa.GetAddress())
		if err != nil {
			return fmt.Errorf("listener %q: no free port on %s: %w", l.GetName(), sa.GetAddress(), err)
		}
		sa.PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: port}
		for _, a := range l.GetAdditionalAddresses() { // the same port on its other addresses
			if asa := a.GetAddress().GetSocketAddress(); asa != nil {
				asa.PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: port}
			}
		}
		listeners = append(listeners, l)
	}
	// The types the proxy subscribes to, given what it receives: listeners
	// and clusters always, their routes, endpoints and secrets when
	// referenced (a secret nothing references is never asked for).
	want := []string{resourcev3.ListenerType, resourcev3.ClusterType}
	if len(res.Routes) > 0 {
		want = append(want, resourcev3.RouteType)
	}
	if len(res.Endpoints) > 0 {
		want = append(want, resourcev3.EndpointType)
	}
	var referencing []proto.Message
	for _, l := range res.Listeners {
		referencing = append(referencing, l)
	}
	for _, c := range res.Clusters {
		referencing = append(referencing, c)
	}
	if secrets := xdsclient.SecretNames(referencing); len(secrets) > 0 {
		want = append(want, resourcev3.SecretType)
	}
	const version = "golden"
	snap, err := cachev3.NewSnapshot(version, map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: listeners,
		resourcev3.RouteType:    asResources(res.Routes),
		resourcev3.ClusterType:  asResources(res.Clusters),
		resourcev3.EndpointType: asResources(res.Endpoints),
		resourcev3.SecretType:   asResources(res.Secrets),
	})
	if err != nil {
		return err
	}
	if err := snap.Consistent(); err != nil {
		return fmt.Errorf("the resources are not consistent: %w", err)
	}
	done := server.watch(id, version, want)
	if err := server.cache.SetSnapshot(context.Background(), id, snap); err != nil {
		return err
	}

	mesh := meshtlstest.NewCA(t, "mesh")
	spiffeID := spiffeid.Of("meshgate.local", node.Namespace, node.Name())
	proxy, err := dataplane.New(dataplane.Options{
		Node:         &corev3.Node{Id: id, Cluster: node.Name()},
		XDSAddresses: []string{server.addr},
		Identity:     meshtlstest.NewIdentity(spiffeID, mesh.Issue(t, spiffeID)),
		Logger:       slog.New(slog.DiscardHandler),
		DrainTimeout: time.Second,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- proxy.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-stopped; err != nil {
			t.Errorf("proxy: %v", err)
		}
	}()
	select {
	case result := <-done:
		return result
	case <-time.After(contractTimeout):
		return fmt.Errorf("no ACK of %v within %s (ACKed: %v)", want, contractTimeout, server.acked(id))
	}
}

// contractTimeout bounds the wait for a proxy's ACKs: generous, for a
// loaded machine.
const contractTimeout = 60 * time.Second

func asResources[M types.Resource](msgs []M) []types.Resource {
	out := make([]types.Resource, len(msgs))
	for i, m := range msgs {
		out[i] = m
	}
	return out
}

// freePort returns a port free on host now, below the kernel's ephemeral
// range (where the kernel assigns the ports of the connections the
// parallel tests open meanwhile: one could take the port between this
// check and the proxy's bind) and never handed out twice in this test
// process.
func freePort(host string) (uint32, error) {
	low := ephemeralPortLow()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := minTestPort + rand.IntN(low-minTestPort)
		if portsGiven[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		portsGiven[port] = true
		return uint32(port), nil
	}
	return 0, fmt.Errorf("no free port between %d and %d", minTestPort, low)
}

// minTestPort is the lowest port freePort hands out.
const minTestPort = 20000

// portsGiven are the ports freePort handed out in this test process.
var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// ephemeralPortLow reads the lowest port of the kernel's ephemeral range
// (Linux's default when it cannot be read).
func ephemeralPortLow() int {
	const linuxDefault = 32768
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return linuxDefault
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return linuxDefault
	}
	low, err := strconv.Atoi(f[0])
	if err != nil || low <= minTestPort {
		return linuxDefault
	}
	return low
}

// contractServer is a go-control-plane ADS server that tells, per node,
// when the proxy ACKed every wanted type of a version or NACKed one.
type contractServer struct {
	addr   string
	cache  cachev3.SnapshotCache
	nextID atomic.Int64

	mu       sync.Mutex
	streams  map[int64]string // stream id -> node id
	watching map[string]*contractWatch
}

type contractWatch struct {
	version string
	want    []string
	acked   map[string]bool
	done    chan error // receives the result once
	settled bool
}

func startContractServer(t *testing.T) *contractServer {
	t.Helper()
	s := &contractServer{cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil),
		streams: map[int64]string{}, watching: map[string]*contractWatch{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = lis.Addr().String()
	srv := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, serverv3.NewServer(context.Background(), s.cache, serverv3.CallbackFuncs{
		StreamRequestFunc: s.request,
	}))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return s
}

// watch starts watching node id for version and returns where its result
// arrives.
func (s *contractServer) watch(id, version string, want []string) <-chan error {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := &contractWatch{version: version, want: want, acked: map[string]bool{}, done: make(chan error, 1)}
	s.watching[id] = w
	return w.done
}

func (s *contractServer) acked(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	if w := s.watching[id]; w != nil {
		for typ := range w.acked {
			out = append(out, typ)
		}
	}
	slices.Sort(out)
	return out
}

// request records an ACK or NACK.
func (s *contractServer) request(stream int64, req *discoveryv3.DiscoveryRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id := req.GetNode().GetId(); id != "" {
		s.streams[stream] = id
	}
	w := s.watching[s.streams[stream]]
	if w == nil || w.settled || req.GetResponseNonce() == "" {
		return nil
	}
	if detail := req.GetErrorDetail(); detail != nil {
		w.settled = true
		w.done <- errors.New(detail.GetMessage())
		return nil
	}
	if req.GetVersionInfo() != w.version {
		return nil
	}
	w.acked[req.GetTypeUrl()] = true
	for _, typ := range w.want {
		if !w.acked[typ] {
			return nil
		}
	}
	w.settled = true
	w.done <- nil
	return nil
}

// TestContractSeesRejections: the contract test fails when the data plane
// rejects something: a golden node's configuration with a field the proxy
// does not implement is reported with that field.
func TestContractSeesRejections(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a proxy")
	}
	server := startContractServer(t)
	data, err := os.ReadFile("testdata/route/canary.out.yaml")
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := unmarshalGolden(data)
	if err != nil {
		t.Fatal(err)
	}
	n := nodes[0]
	if err := acceptByDataPlane(t, server, n.Node, n.Res); err != nil {
		t.Fatalf("the unchanged configuration: %v", err)
	}
	bad := *n.Res
	bad.Clusters = slices.Clone(bad.Clusters)
	c := proto.Clone(bad.Clusters[0]).(*clusterv3.Cluster)
	c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
	bad.Clusters[0] = c
	err = acceptByDataPlane(t, server, n.Node, &bad)
	if err == nil || !strings.Contains(err.Error(), "lb_policy") {
		t.Errorf("a cluster with lb_policy CLUSTER_PROVIDED: %v, want a rejection naming lb_policy", err)
	}
}
