package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/dataplane/xdsclient"
)

// watch is the content a change must bring to a stream: every non-empty
// field must hold in what the stream has ACKed.
type watch struct {
	id       int
	cluster  string // a Cluster of this name
	routeRef string // a route whose action names this cluster
	cla      string // a ClusterLoadAssignment of this name...
	claAddr  string // ...with an endpoint at this address
}

// report says that stream reached watch at a time, holding clusters
// clusters (sidecar: a sidecar's stream, not a gateway's).
type report struct {
	watch    int
	at       time.Time
	clusters int
	sidecar  bool
}

// fleet is the set of simulated proxies.
type fleet struct {
	ctx     context.Context
	cancel  context.CancelFunc
	logger  *slog.Logger
	conns   []*grpc.ClientConn
	streams []*stream
	watch   atomic.Pointer[watch]
	reports chan report
	wg      sync.WaitGroup
	errs    chan error
}

// newFleet prepares the streams and their gRPC connections: each identity
// (the gateway, each service) has its own connections, presenting its
// certificate, with at most cfg.streamsPerConn streams each.
func newFleet(ctx context.Context, logger *slog.Logger, xdsAddr string, cfg config, creds map[string]credentials.TransportCredentials) (*fleet, error) {
	ctx, cancel := context.WithCancel(ctx)
	f := &fleet{ctx: ctx, cancel: cancel, logger: logger,
		reports: make(chan report, cfg.streams*4), errs: make(chan error, cfg.streams)}
	type connSlot struct {
		conn    *grpc.ClientConn
		streams int
	}
	current := map[string]*connSlot{}
	for i := range cfg.streams {
		node := nodeFor(i, cfg)
		name := node.GetCluster()
		slot := current[name]
		if slot == nil || slot.streams >= max(cfg.streamsPerConn, 1) {
			c, ok := creds[name]
			if !ok {
				f.close()
				return nil, fmt.Errorf("no certificate for %s", name)
			}
			cc, err := grpc.NewClient("passthrough:///"+xdsAddr,
				grpc.WithTransportCredentials(c),
				grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
			if err != nil {
				f.close()
				return nil, fmt.Errorf("grpc client: %w", err)
			}
			f.conns = append(f.conns, cc)
			slot = &connSlot{conn: cc}
			current[name] = slot
		}
		slot.streams++
		f.streams = append(f.streams, &stream{fleet: f, node: node, conn: slot.conn})
	}
	return f, nil
}

// identities are the names (gateway, services) the fleet's streams need
// certificates for.
func identities(cfg config) []string {
	seen := map[string]bool{}
	var out []string
	for i := range cfg.streams {
		if name := nodeFor(i, cfg).GetCluster(); !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return out
}

// nodeFor is the identity of stream i: the first cfg.gateways are nodes of
// the Gateway, the rest sidecars of the services in turn (docs/xds.md).
func nodeFor(i int, cfg config) *corev3.Node {
	if i < cfg.gateways {
		meta := xdsnode.Metadata{Role: xdsnode.RoleGateway, Namespace: namespace, Gateway: gatewayName}
		return meta.Node(xdsnode.IDPrefix(xdsnode.RoleGateway, gatewayName, namespace) + fmt.Sprintf("xdsload-%d", i))
	}
	service := serviceName(i % cfg.services)
	host := fmt.Sprintf("127.200.%d.%d", i/256%256, i%256)
	meta := xdsnode.Metadata{
		Role:            xdsnode.RoleSidecar,
		Namespace:       namespace,
		Service:         service,
		InboundAddress:  host + ":15006",
		AppAddress:      host + ":8080",
		OutboundAddress: host + ":15001",
	}
	return meta.Node(xdsnode.IDPrefix(xdsnode.RoleSidecar, service, namespace) + fmt.Sprintf("xdsload-%d", i))
}

func (f *fleet) setWatch(w *watch) { f.watch.Store(w) }

// open starts every stream.
func (f *fleet) open() {
	for _, s := range f.streams {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			if err := s.run(f.ctx, s.conn); err != nil && f.ctx.Err() == nil {
				f.errs <- fmt.Errorf("stream %s: %w", s.node.GetId(), err)
			}
		}()
	}
}

// apply sets w, makes the change, and waits for every stream to reach w;
// each stream's latency counts from the start mutate returns (when the
// change counts as made).
func (f *fleet) apply(ctx context.Context, w *watch, timeout time.Duration, mutate func() (start time.Time, err error)) (change, error) {
	f.setWatch(w)
	start, err := mutate()
	if err != nil {
		return change{}, err
	}
	got, clusters, err := f.await(ctx, w, start, timeout)
	c := summarize(got)
	if len(clusters) > 0 {
		c.SidecarClustersMin, c.SidecarClustersMax = slices.Min(clusters), slices.Max(clusters)
	}
	return c, err
}

// await collects the latencies (ms since start) of every stream reaching w,
// and how many clusters each sidecar stream held then.
func (f *fleet) await(ctx context.Context, w *watch, start time.Time, timeout time.Duration) ([]float64, []int, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var got []float64
	var clusters []int
	for len(got) < len(f.streams) {
		select {
		case r := <-f.reports:
			if r.watch == w.id {
				got = append(got, float64(r.at.Sub(start).Microseconds())/1000)
				if r.sidecar {
					clusters = append(clusters, r.clusters)
				}
			}
		case err := <-f.errs:
			return got, clusters, err
		case <-timer.C:
			return got, clusters, fmt.Errorf("%d of %d streams reached the change within %s", len(got), len(f.streams), timeout)
		case <-ctx.Done():
			return got, clusters, fmt.Errorf("%d of %d streams reached the change: %w", len(got), len(f.streams), context.Cause(ctx))
		}
	}
	return got, clusters, nil
}

func (f *fleet) close() {
	f.cancel()
	f.wg.Wait()
	for _, c := range f.conns {
		_ = c.Close()
	}
}

// stream is one simulated proxy on one ADS stream.
type stream struct {
	fleet *fleet
	node  *corev3.Node
	conn  *grpc.ClientConn
	ads   grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	sent  bool // node sent on the first request
	// what the proxy subscribed to and accepted, by type URL
	names    map[string][]string
	versions map[string]string
	nonces   map[string]string
	// accepted content
	clusters  map[string]bool
	routeRefs map[string]map[string]bool // route config -> clusters referenced
	claAddrs  map[string]map[string]bool // cluster load assignment -> addresses
	// secretRefs are the secrets the accepted clusters and listeners
	// reference, by type URL; the SDS subscription is their union.
	secretRefs map[string][]string
	reported   int // highest watch id reported
}

func (s *stream) run(ctx context.Context, cc *grpc.ClientConn) error {
	ads, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		return fmt.Errorf("open ADS: %w", err)
	}
	s.ads = ads
	s.names, s.versions, s.nonces = map[string][]string{}, map[string]string{}, map[string]string{}
	s.clusters, s.routeRefs, s.claAddrs = map[string]bool{}, map[string]map[string]bool{}, map[string]map[string]bool{}
	s.secretRefs = map[string][]string{}
	for _, t := range []string{resourcev3.ClusterType, resourcev3.ListenerType} {
		if err := s.request(t); err != nil {
			return err
		}
	}
	for {
		resp, err := ads.Recv()
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		if err := s.handle(resp); err != nil {
			return err
		}
	}
}

// request sends the current subscription of a type (an ACK when a version
// and nonce are known).
func (s *stream) request(typeURL string) error {
	req := &discoveryv3.DiscoveryRequest{
		TypeUrl: typeURL, VersionInfo: s.versions[typeURL], ResponseNonce: s.nonces[typeURL],
		ResourceNames: s.names[typeURL],
	}
	if !s.sent {
		req.Node, s.sent = s.node, true
	}
	if err := s.ads.Send(req); err != nil {
		return fmt.Errorf("send %s: %w", typeURL, err)
	}
	return nil
}

// handle accepts a response, ACKs it, subscribes to the routes and
// endpoints it references, and reports the current watch when reached.
func (s *stream) handle(resp *discoveryv3.DiscoveryResponse) error {
	t := resp.GetTypeUrl()
	var follow string
	var followNames []string
	var decoded []proto.Message // listeners, for their secret references
	var clusterSecrets []string // secrets the clusters reference
	switch t {
	case resourcev3.ClusterType:
		clear(s.clusters)
		memo := map[string][]string{}
		var secrets []string
		for _, a := range resp.GetResources() {
			if a.GetTypeUrl() != t {
				return fmt.Errorf("cluster: resource of type %q", a.GetTypeUrl())
			}
			c, err := readCluster(a.GetValue())
			if err != nil {
				return fmt.Errorf("cluster: %w", err)
			}
			s.clusters[c.name] = true
			if c.eds != "" {
				followNames = append(followNames, c.eds)
			}
			for _, socket := range c.sockets {
				names, err := socketSecrets(memo, socket)
				if err != nil {
					return fmt.Errorf("cluster %q: %w", c.name, err)
				}
				secrets = append(secrets, names...)
			}
		}
		slices.Sort(secrets)
		clusterSecrets = slices.Compact(secrets)
		follow = resourcev3.EndpointType
	case resourcev3.ListenerType:
		for _, a := range resp.GetResources() {
			var l listenerv3.Listener
			if err := a.UnmarshalTo(&l); err != nil {
				return fmt.Errorf("listener: %w", err)
			}
			decoded = append(decoded, &l)
			for _, fc := range l.GetFilterChains() {
				for _, nf := range fc.GetFilters() {
					var h hcmv3.HttpConnectionManager
					if nf.GetTypedConfig().UnmarshalTo(&h) == nil && h.GetRds() != nil {
						followNames = append(followNames, h.GetRds().GetRouteConfigName())
					}
				}
			}
		}
		follow = resourcev3.RouteType
	case resourcev3.RouteType:
		for _, a := range resp.GetResources() {
			if a.GetTypeUrl() != t {
				return fmt.Errorf("route configuration: resource of type %q", a.GetTypeUrl())
			}
			refs := map[string]bool{}
			name, err := readRouteConfig(a.GetValue(), refs)
			if err != nil {
				return fmt.Errorf("route configuration: %w", err)
			}
			s.routeRefs[name] = refs
		}
	case resourcev3.EndpointType:
		for _, a := range resp.GetResources() {
			var cla endpointv3.ClusterLoadAssignment
			if err := a.UnmarshalTo(&cla); err != nil {
				return fmt.Errorf("cluster load assignment: %w", err)
			}
			addrs := map[string]bool{}
			for _, le := range cla.GetEndpoints() {
				for _, ep := range le.GetLbEndpoints() {
					sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
					addrs[fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())] = true
				}
			}
			s.claAddrs[cla.GetClusterName()] = addrs
		}
	}
	s.versions[t], s.nonces[t] = resp.GetVersionInfo(), resp.GetNonce()
	if err := s.request(t); err != nil { // ACK
		return err
	}
	if follow != "" {
		if err := s.resubscribe(follow, followNames); err != nil {
			return err
		}
		// Secrets, as the proxy does: the union of what the accepted
		// clusters and listeners reference over SDS.
		if t == resourcev3.ClusterType {
			s.secretRefs[t] = clusterSecrets
		} else {
			s.secretRefs[t] = xdsclient.SecretNames(decoded)
		}
		secrets := slices.Concat(s.secretRefs[resourcev3.ClusterType], s.secretRefs[resourcev3.ListenerType])
		if err := s.resubscribe(resourcev3.SecretType, secrets); err != nil {
			return err
		}
	}
	s.check()
	return nil
}

// resubscribe requests a dependent type when its names changed.
func (s *stream) resubscribe(typeURL string, names []string) error {
	sort.Strings(names)
	names = slices.Compact(names)
	if slices.Equal(names, s.names[typeURL]) {
		return nil
	}
	s.names[typeURL] = names
	return s.request(typeURL)
}

// check reports the fleet's current watch once it holds for this stream.
func (s *stream) check() {
	w := s.fleet.watch.Load()
	if w == nil || w.id <= s.reported {
		return
	}
	if w.cluster != "" && !s.clusters[w.cluster] {
		return
	}
	if w.routeRef != "" {
		found := false
		for _, refs := range s.routeRefs {
			if refs[w.routeRef] {
				found = true
				break
			}
		}
		if !found {
			return
		}
	}
	if w.cla != "" && !s.claAddrs[w.cla][w.claAddr] {
		return
	}
	s.reported = w.id
	s.fleet.reports <- report{watch: w.id, at: time.Now(), clusters: len(s.clusters),
		sidecar: s.node.GetCluster() != gatewayName}
}
