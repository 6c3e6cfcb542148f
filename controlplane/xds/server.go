// Package xds serves the translated model to proxies over the Envoy v3
// aggregated discovery service (state of the world, ordered), with
// go-control-plane's server over its own cache (see snapshotCache). It learns
// who a proxy is from its first request, builds that node's snapshot from the
// current model, rebuilds every known node's snapshot when the model changes,
// and tracks what each proxy acknowledged or rejected. At scale, nodes share
// their translated resources (translate.Cache) and each resource is
// marshaled and hashed once per model, not once per node and response.
//
// Two rules protect what proxies already serve:
//   - until its first model (SetModel), a Server gives no configuration to
//     any node: streams are accepted and authorized, nodes are tracked, and
//     each proxy keeps what it has (a new one waits);
//   - a change that would leave a node with no route, or with no endpoint,
//     where its current configuration has some, is held for that node while
//     the model's PolicyVersion is the one its configuration was made with:
//     such a loss comes from discovery alone (an emptied catalog), not from
//     an operator. The node keeps its configuration (ProxyStatus.Held says
//     why) until a model gives it routes and endpoints again or the policy
//     changes. A node that reconnects with a configuration (its requests
//     carry versions) is held the same way when its first configuration
//     would have no endpoint where it reported others
//     (resumeHoldReasonLocked).
package xds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	cplog "github.com/envoyproxy/go-control-plane/pkg/log"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	xdsserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/controlplane/translate"
)

// Limits of the gRPC server.
const (
	maxRecvMsgSize       = 4 << 20
	maxSendMsgSize       = 64 << 20
	maxConcurrentStreams = 10000
)

// ProxyStatus is what the control plane knows of one connected proxy.
type ProxyStatus struct {
	ID          string    `json:"id"`
	Role        string    `json:"role"`
	Name        string    `json:"name"`
	Namespace   string    `json:"namespace"`
	ConnectedAt time.Time `json:"connectedAt"`
	// Version is the content hash of the snapshot the node was last given.
	Version string `json:"version"`
	// Acked maps a type URL to the last version the proxy accepted.
	Acked map[string]string `json:"acked"`
	// Nacked maps a type URL to the error detail of the proxy's last
	// rejection of that type; cleared when a later version is accepted.
	Nacked map[string]string `json:"nacked"`
	// SPIFFEID is the identity the authorizer established for the proxy.
	SPIFFEID string `json:"spiffeID,omitempty"`
	// CertNotAfter is when the proxy's certificate expires.
	CertNotAfter time.Time `json:"certNotAfter,omitzero"`
	// MTLSMode is the inbound mTLS mode of a sidecar's service (from the model).
	MTLSMode string `json:"mtlsMode,omitempty"`
	// Held, when set, says why the proxy keeps its configuration instead of
	// the current model's: the model would remove every route or every
	// endpoint it has, and the policy did not change since its
	// configuration was made.
	Held string `json:"held,omitempty"`
	// HeldSince is when the proxy's configuration was first held.
	HeldSince time.Time `json:"heldSince,omitzero"`
	// Enrolment is the lineage of the proxy's certificate, and TokenID the
	// join token it enrolled with (docs/security.md).
	Enrolment string `json:"enrolment,omitempty"`
	TokenID   string `json:"tokenID,omitempty"`
	// AdminAddress is where the proxy serves its admin endpoints (/metrics),
	// as it reported in node.metadata.admin_address; empty when it did not.
	AdminAddress string `json:"adminAddress,omitempty"`
	// Address is a sidecar's inbound address; for a gateway, Peer.
	Address string `json:"address,omitempty"`
	// Peer is the address the proxy's xDS connection comes from.
	Peer string `json:"peer,omitempty"`
	// Served maps each type URL the proxy asks for to the version the
	// control plane serves it now.
	Served map[string]string `json:"served,omitempty"`
	// InSync: the proxy accepted the version it is served of every type
	// it asks for (see proxySync.inSync).
	InSync bool `json:"inSync"`
	// LastNack is the proxy's last rejection of a configuration, kept
	// after later versions are accepted (InSync says whether it is).
	LastNack *Nack `json:"lastNack,omitempty"`
}

// ProxyIdentity is who a proxy proved to be when its stream opened.
type ProxyIdentity struct {
	SPIFFEID string
	NotAfter time.Time
	// Enrolment and TokenID: the certificate's lineage, when it has one.
	Enrolment, TokenID string
}

// Authorizer decides whether the proxy described by node may receive its
// configuration on the stream whose context is ctx (which carries the peer's
// TLS state). An error refuses the stream; a gRPC status error (such as
// PermissionDenied) reaches the proxy as is.
type Authorizer func(ctx context.Context, node *corev3.Node) (ProxyIdentity, error)

// node is a connected proxy.
type node struct {
	info        translate.NodeInfo
	connectedAt time.Time
	streams     int
	snap        *nodeSnapshot
	version     string
	acked       map[string]string
	nacked      map[string]string
	identity    ProxyIdentity
	// adminAddress is node.metadata.admin_address of its latest stream.
	adminAddress string
	sync         proxySync
	// policyVersion is the model PolicyVersion snap was made from, or last
	// found up to date with.
	policyVersion string
	// held says why the node keeps snap instead of the model's
	// configuration for it; empty when it does not.
	held      string
	heldSince time.Time
	// resumed is, for a proxy that came with a configuration (the first
	// request of its first stream carried a version: it served before, from
	// this control plane before a restart or from another replica), the
	// version of each type it reported having when its stream opened; nil
	// for a proxy that came with none. resumeOpen: the proxy's initial
	// requests may still come (resumeWindow). resumePolicy is the model
	// PolicyVersion when its first configuration was first held.
	resumed      map[string]string
	resumeOpen   bool
	resumePolicy string
	// listeners is, for a proxyless client, the Listener names each of its
	// streams subscribes to (by stream id): it is served an API listener
	// of every one (translate.NodeInfo.Listeners). resubscribed: the next
	// snapshot follows a change of them, and is not held for the routes
	// and endpoints it drops.
	listeners    map[int64][]string
	resubscribed bool
}

// translationInfo is who the node is, with the Listener names a proxyless
// client's streams subscribe to.
func (n *node) translationInfo() translate.NodeInfo {
	info := n.info
	var names []string
	for _, l := range n.listeners {
		names = append(names, l...)
	}
	slices.Sort(names)
	info.Listeners = strings.Join(slices.Compact(names), ",")
	return info
}

// subscribeListenersLocked records the Listener names a proxyless client's
// request subscribes to and, when they change, builds its configuration
// again: it is served a Listener of each name it asks for (on demand), so
// that the go-control-plane watch the request opens next is answered with
// them. Other roles are served their listeners whatever they ask.
func (s *Server) subscribeListenersLocked(streamID int64, id string, n *node, req *discoveryv3.DiscoveryRequest) {
	if n.info.Role != translate.RoleProxyless || req.GetTypeUrl() != resourcev3.ListenerType {
		return
	}
	names := slices.Sorted(slices.Values(req.GetResourceNames()))
	names = slices.Compact(slices.DeleteFunc(names, func(name string) bool { return name == "" || name == "*" || strings.Contains(name, ",") }))
	if len(names) > maxProxylessListeners {
		names = names[:maxProxylessListeners]
	}
	if slices.Equal(names, n.listeners[streamID]) {
		return
	}
	if n.listeners == nil {
		n.listeners = map[int64][]string{}
	}
	n.listeners[streamID] = names
	s.resubscribedLocked(id, n)
}

// resubscribedLocked builds the configuration of a proxyless client whose
// Listener subscriptions changed.
func (s *Server) resubscribedLocked(id string, n *node) {
	if s.model == nil {
		return
	}
	n.resubscribed = true
	s.updateNodeLocked(context.Background(), id, n)
	n.resubscribed = false
}

// maxProxylessListeners bounds the Listener names one proxyless client is
// served (the targets of its channels): the rest go unanswered.
const maxProxylessListeners = 1000

// resumeWindow is how long after a resuming proxy's first request its other
// initial requests (with the versions it has) are awaited: a type it has not
// asked for by then, it holds nothing of.
const resumeWindow = 2 * time.Second

// Server serves xDS. Create it with New.
type Server struct {
	logger *slog.Logger
	cache  *snapshotCache
	xds    xdsserver.Server

	mu sync.Mutex
	// model is the served model; nil until the first SetModel, and until
	// then no node is given a configuration.
	model  *model.Model
	bundle []byte
	// shared and encoder memoize the translation and encoding of the
	// current model and bundle across nodes; replaced when either changes.
	shared     *translate.Cache
	encoder    *encoder
	authorizer Authorizer
	nodes      map[string]*node // by node id
	streams    map[int64]string // stream id -> node id
	// streamNodes is the node each stream authenticated with: a later
	// request may repeat it but never change it.
	streamNodes map[int64]*corev3.Node
	// streamNodeSeen is the node message of each stream's first request:
	// go-control-plane attaches that same message to every later request
	// that carries none, so a request holding it needs no comparison.
	streamNodeSeen map[int64]*corev3.Node
	// contexts of open streams not yet authorized, by stream id.
	contexts map[int64]context.Context

	fullUpdates, endpointUpdates atomic.Int64
	// observer is told of pushes and rejections (SetObserver); guarded by mu.
	observer Observer
	// nodesUpdated counts the snapshots set with a new version (NodesUpdated).
	nodesUpdated atomic.Int64
}

// NodesUpdated is how many times since New a proxy was given a
// configuration of a new version: the difference across a SetModel is the
// number of proxies it updated.
func (s *Server) NodesUpdated() int64 { return s.nodesUpdated.Load() }

// UpdateCounts is how many model changes a Server applied each way.
type UpdateCounts struct {
	// Full: every node translated and encoded again.
	Full int64 `json:"full"`
	// EndpointsOnly: only changed ClusterLoadAssignments replaced (the
	// model differed from the previous one in its endpoints only).
	EndpointsOnly int64 `json:"endpointsOnly"`
}

// UpdateCounts returns how many model changes took each path since New.
func (s *Server) UpdateCounts() UpdateCounts {
	return UpdateCounts{Full: s.fullUpdates.Load(), EndpointsOnly: s.endpointUpdates.Load()}
}

// New returns a server without a model: it serves no configuration until
// the first SetModel. ctx bounds the server's background work.
func New(ctx context.Context, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		logger:         logger,
		nodes:          map[string]*node{},
		streams:        map[int64]string{},
		streamNodes:    map[int64]*corev3.Node{},
		streamNodeSeen: map[int64]*corev3.Node{},
		contexts:       map[int64]context.Context{},
	}
	s.resetGenerationLocked()
	s.cache = newSnapshotCache()
	s.xds = xdsserver.NewServer(ctx, s.cache, xdsserver.CallbackFuncs{
		StreamOpenFunc:    s.onStreamOpen,
		StreamRequestFunc: s.onStreamRequest,
		// (The stream's responses: versions and nonces, for ProxyStatus.)
		StreamResponseFunc: s.onStreamResponse,
		StreamClosedFunc:   s.onStreamClosed,
	}, serverv3.WithOrderedADS(), serverv3.WithLogger(cacheLogger(logger)))
	return s
}

// cacheLogger routes go-control-plane's logs to slog at debug level; its
// warnings stay warnings.
func cacheLogger(l *slog.Logger) cplog.Logger {
	return cplog.LoggerFuncs{
		DebugFunc: func(f string, a ...any) { l.Debug(fmt.Sprintf(f, a...), "component", "xds-cache") },
		InfoFunc:  func(f string, a ...any) { l.Debug(fmt.Sprintf(f, a...), "component", "xds-cache") },
		WarnFunc:  func(f string, a ...any) { l.Warn(fmt.Sprintf(f, a...), "component", "xds-cache") },
		ErrorFunc: func(f string, a ...any) { l.Error(fmt.Sprintf(f, a...), "component", "xds-cache") },
	}
}

// NewGRPCServer returns a gRPC server with meshgate's keepalive and size limits.
func NewGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	base := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxRecvMsgSize),
		grpc.MaxSendMsgSize(maxSendMsgSize),
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Responses reference the cache's shared resource encodings instead
		// of a marshaled copy per stream (see sharingCodec).
		grpc.ForceServerCodecV2(newSharingCodec()),
		// (Each connection's write buffer is released when flushed, gRPC's
		// default: most proxies' connections are idle between changes.)
		// No per-connection read buffer (32 KiB by default, 64 MiB at
		// 2000 proxies): requests are small and rare, and behind TLS the
		// connection already reads whole records.
		grpc.ReadBufferSize(0),
	}
	return grpc.NewServer(append(base, opts...)...)
}

// Register adds ADS, and the separate CDS, EDS, LDS and RDS services for
// clients that do not aggregate, to g.
func (s *Server) Register(g *grpc.Server) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, s.xds)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, s.xds)
	routeservice.RegisterRouteDiscoveryServiceServer(g, s.xds)
	secretservice.RegisterSecretDiscoveryServiceServer(g, s.xds)
}

// SetAuthorizer makes a decide, on the first request of every stream, whether
// the proxy may have its configuration. nil (the default) allows every proxy.
// Streams already authorized are not checked again.
func (s *Server) SetAuthorizer(a Authorizer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authorizer = a
}

// SetTrustBundle makes pem the mesh's trust bundle (served as the ROOTCA
// secret; with it, hops between proxies use mTLS) and rebuilds every
// connected node's snapshot. An empty bundle turns mTLS off.
func (s *Server) SetTrustBundle(ctx context.Context, pem []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bundle = slices.Clone(pem)
	s.resetGenerationLocked()
	if s.model == nil {
		return // kept for the first model
	}
	s.updateAllLocked(ctx)
}

// Serve serves xDS on lis until ctx is done.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	g := NewGRPCServer()
	s.Register(g)
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	select {
	case <-ctx.Done():
		// xDS streams never end on their own: stop rather than drain.
		g.Stop()
		<-errc
		return nil
	case err := <-errc:
		if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve xds on %s: %w", lis.Addr(), err)
		}
		return nil
	}
}

// SetModel makes m the served model and rebuilds every connected node's
// snapshot from it (the first call gives every node waiting for one its
// configuration). When m differs from the served model in endpoints only
// (model.Model.EndpointChanges), only the changed ClusterLoadAssignments are
// translated and encoded, and swapped into the snapshots that hold them. A
// node whose new snapshot would lose every route or endpoint keeps its
// current one (see the package documentation).
func (s *Server) SetModel(ctx context.Context, m *model.Model) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.observePushLocked(time.Now(), s.fullUpdates.Load())
	if changed, ok := m.EndpointChanges(s.model); ok {
		err := s.setEndpointsLocked(ctx, m, changed)
		if err == nil {
			s.endpointUpdates.Add(1)
			return
		}
		if errors.Is(err, errPerProxyEndpoints) {
			s.logger.Debug("endpoint update of per-proxy assignments: translating every node", "error", err)
		} else {
			s.logger.Warn("endpoint-only update failed: translating every node", "error", err)
		}
	}
	s.fullUpdates.Add(1)
	first := s.model == nil
	s.model = m
	s.resetGenerationLocked()
	if first && len(s.nodes) > 0 {
		s.logger.Info("first configuration: serving the proxies that waited for it", "proxies", len(s.nodes))
	}
	s.updateAllLocked(ctx)
}

// Serving reports whether the server has a model (SetModel was called):
// until then no node is given a configuration.
func (s *Server) Serving() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.model != nil
}

// resetGenerationLocked starts a new translation generation for the
// current model and bundle (none without a model).
func (s *Server) resetGenerationLocked() {
	s.shared = nil
	if s.model != nil {
		s.shared = translate.NewCache(s.model, translate.Inputs{TrustBundle: s.bundle})
	}
	s.encoder = newEncoder()
}

// updateAllLocked rebuilds every connected node's snapshot: translated and
// encoded concurrently (nodes share most of their resources), then set in
// node id order.
func (s *Server) updateAllLocked(ctx context.Context) {
	ids := slices.Sorted(maps.Keys(s.nodes))
	built := make([]builtNode, len(ids))
	workers := min(runtime.GOMAXPROCS(0), len(ids))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ids) {
					return
				}
				built[i] = s.buildNode(ids[i], s.nodes[ids[i]].translationInfo())
			}
		})
	}
	wg.Wait()
	for i, id := range ids {
		s.setNodeLocked(ctx, id, s.nodes[id], built[i])
	}
}

// Proxies returns the connected proxies, sorted by id.
func (s *Server) Proxies() []ProxyStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ProxyStatus, 0, len(s.nodes))
	for _, id := range slices.Sorted(maps.Keys(s.nodes)) {
		n := s.nodes[id]
		st := ProxyStatus{
			ID:           id,
			Role:         n.info.Role,
			Name:         n.info.Name(),
			Namespace:    n.info.Namespace,
			ConnectedAt:  n.connectedAt,
			Version:      n.version,
			Acked:        maps.Clone(n.acked),
			Nacked:       maps.Clone(n.nacked),
			SPIFFEID:     n.identity.SPIFFEID,
			CertNotAfter: n.identity.NotAfter,
			Held:         n.held,
			HeldSince:    n.heldSince,
			Enrolment:    n.identity.Enrolment,
			TokenID:      n.identity.TokenID,
			AdminAddress: n.adminAddress,
		}
		n.syncStatusLocked(&st)
		if n.info.Role == translate.RoleSidecar && s.model != nil {
			st.MTLSMode = s.model.Mesh.MTLSMode
			if svc := s.model.Service(n.info.Namespace, n.info.Service); svc != nil {
				st.MTLSMode = svc.MTLSMode
			}
		}
		out = append(out, st)
	}
	return out
}

// Resources returns what is served to the connected node id and its
// version, decoded from the encodings the node is served (the translated
// messages are not kept: at thousands of proxies they were most of the
// control plane's memory).
func (s *Server) Resources(id string) (*translate.Resources, string, bool) {
	s.mu.Lock()
	n, ok := s.nodes[id]
	var snap *nodeSnapshot
	var version string
	if ok {
		snap, version = n.snap, n.version
	}
	s.mu.Unlock()
	if !ok {
		return nil, "", false
	}
	res, err := snap.decode()
	if err != nil {
		s.logger.Error("cannot decode a served snapshot", "node", id, "error", err)
		return nil, "", false
	}
	return res, version, true
}

// decode unmarshals the snapshot's resources (nil: none).
func (snap *nodeSnapshot) decode() (*translate.Resources, error) {
	res := &translate.Resources{}
	if snap == nil {
		return res, nil
	}
	var errs []error
	for _, typeURL := range orderedTypes {
		ts := snap.types[typeURL]
		if ts == nil {
			continue
		}
		for _, e := range ts.list {
			m, err := e.any.UnmarshalNew()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s %q: %w", typeURL, e.name, err))
				continue
			}
			switch v := m.(type) {
			case *listenerv3.Listener:
				res.Listeners = append(res.Listeners, v)
			case *routev3.RouteConfiguration:
				res.Routes = append(res.Routes, v)
			case *clusterv3.Cluster:
				res.Clusters = append(res.Clusters, v)
			case *endpointv3.ClusterLoadAssignment:
				res.Endpoints = append(res.Endpoints, v)
			case *tlsv3.Secret:
				res.Secrets = append(res.Secrets, v)
			default:
				errs = append(errs, fmt.Errorf("%s %q: unexpected message %T", typeURL, e.name, m))
			}
		}
	}
	return res, errors.Join(errs...)
}

func (s *Server) onStreamOpen(ctx context.Context, streamID int64, _ string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.contexts[streamID] = ctx
	return nil
}

// authorize runs the authorizer, without holding the lock, for the first
// request of a stream.
func (s *Server) authorize(streamID int64, n *corev3.Node) (ProxyIdentity, error) {
	s.mu.Lock()
	authorizer, ctx := s.authorizer, s.contexts[streamID]
	delete(s.contexts, streamID)
	s.mu.Unlock()
	if authorizer == nil {
		return ProxyIdentity{}, nil
	}
	if ctx == nil {
		ctx = context.Background()
	}
	id, err := authorizer(ctx, n)
	if err != nil {
		s.logger.Warn("proxy refused", "node", n.GetId(), "error", err)
		if _, ok := status.FromError(err); ok {
			return ProxyIdentity{}, err
		}
		return ProxyIdentity{}, status.Errorf(codes.PermissionDenied, "proxy %q refused: %v", n.GetId(), err)
	}
	return id, nil
}

func (s *Server) onStreamRequest(streamID int64, req *discoveryv3.DiscoveryRequest) error {
	s.mu.Lock()
	_, known := s.streams[streamID]
	peerAddr := peerAddress(s.contexts[streamID])
	s.mu.Unlock()
	var identity ProxyIdentity
	if !known {
		if req.GetNode() == nil {
			return errors.New("the first request of a stream must carry the node")
		}
		var err error
		if identity, err = s.authorize(streamID, req.GetNode()); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id, known := s.streams[streamID]
	if known {
		// go-control-plane takes the node of every request that carries one:
		// a stream may not switch to another proxy's node once authorized.
		if rn := req.GetNode(); rn != nil && rn != s.streamNodeSeen[streamID] && !proto.Equal(rn, s.streamNodes[streamID]) {
			s.logger.Warn("proxy refused: node changed on an open stream", "node", id, "new", rn.GetId())
			return status.Errorf(codes.PermissionDenied, "the node of an xDS stream cannot change (was %q)", id)
		}
	}
	if !known {
		id = req.GetNode().GetId()
		info := translate.NodeInfoFromNode(req.GetNode())
		n, ok := s.nodes[id]
		// A node id names one proxy: a second stream may use it only as the
		// same proxy (same identity and metadata, e.g. reconnecting before
		// the old stream is closed), never to take over another's config.
		if ok && (n.info != info || n.identity.SPIFFEID != identity.SPIFFEID) {
			s.logger.Warn("proxy refused: node id in use by another proxy", "node", id)
			return status.Errorf(codes.PermissionDenied, "node id %q is in use by another proxy", id)
		}
		s.streams[streamID] = id
		s.streamNodes[streamID] = proto.Clone(req.GetNode()).(*corev3.Node)
		s.streamNodeSeen[streamID] = req.GetNode()
		if ok {
			n.identity = identity // the same proxy, perhaps with a renewed certificate
			n.adminAddress = xdsnode.Decode(req.GetNode().GetMetadata()).AdminAddress
			n.sync.peer = peerAddr
		}
		if !ok {
			n = &node{
				info:        info,
				connectedAt: time.Now().UTC(),
				acked:       map[string]string{},
				nacked:      map[string]string{},
				identity:    identity,
				// where its /metrics are, for operator tools
				adminAddress: xdsnode.Decode(req.GetNode().GetMetadata()).AdminAddress,
				sync:         newProxySync(peerAddr),
			}
			s.nodes[id] = n
			s.logger.Info("proxy connected", "node", id, "role", n.info.Role, "namespace", n.info.Namespace, "name", n.info.Name())
			if req.GetVersionInfo() != "" {
				n.resumed, n.resumeOpen = map[string]string{}, true
				n.resumed[req.GetTypeUrl()] = req.GetVersionInfo()
				time.AfterFunc(resumeWindow, func() { s.closeResume(id, n) })
			}
			if s.model != nil {
				s.updateNodeLocked(context.Background(), id, n)
			} else {
				s.logger.Info("proxy waits for the first configuration: it keeps what it has", "node", id)
			}
		}
		n.streams++
	}
	n := s.nodes[id]
	s.subscribeListenersLocked(streamID, id, n, req)
	n.sync.request(req, time.Now())
	if req.GetResponseNonce() == "" {
		s.resumeRequestLocked(id, n, req)
		return nil
	}
	if detail := req.GetErrorDetail(); detail != nil {
		n.nacked[req.GetTypeUrl()] = detail.GetMessage()
		s.observeNackLocked(req.GetTypeUrl())
		s.logger.Warn("proxy rejected configuration", "node", id, "type", req.GetTypeUrl(), "version", req.GetVersionInfo(), "error", detail.GetMessage())
		return nil
	}
	if n.acked[req.GetTypeUrl()] != req.GetVersionInfo() {
		s.logger.Debug("proxy accepted configuration", "node", id, "type", req.GetTypeUrl(), "version", req.GetVersionInfo())
	}
	n.acked[req.GetTypeUrl()] = req.GetVersionInfo()
	delete(n.nacked, req.GetTypeUrl())
	return nil
}

func (s *Server) onStreamClosed(streamID int64, _ *corev3.Node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.contexts, streamID)
	id, ok := s.streams[streamID]
	if !ok {
		return
	}
	delete(s.streams, streamID)
	delete(s.streamNodes, streamID)
	delete(s.streamNodeSeen, streamID)
	n := s.nodes[id]
	n.streams--
	if n.streams > 0 {
		if _, ok := n.listeners[streamID]; ok {
			delete(n.listeners, streamID)
			s.resubscribedLocked(id, n)
		}
		return
	}
	delete(s.nodes, id)
	s.cache.clear(id)
	s.logger.Info("proxy disconnected", "node", id)
}

// builtNode is a node's translated and encoded configuration.
type builtNode struct {
	snap    *nodeSnapshot
	version string
	err     error
}

// buildNode translates and encodes the current generation for one node. A
// node that cannot be translated gets an empty configuration. It reads only
// the generation (s.shared, s.encoder), which the caller holds steady.
func (s *Server) buildNode(id string, info translate.NodeInfo) builtNode {
	switch info.Role {
	case translate.RoleGateway, translate.RoleSidecar, translate.RoleProxyless:
	default:
		s.logger.Warn("proxy has no known role: serving it an empty configuration", "node", id, "role", info.Role)
	}
	res, err := s.shared.Translate(info)
	if err != nil {
		s.logger.Warn("cannot build proxy configuration: serving it an empty configuration", "node", id, "error", err)
		res = &translate.Resources{}
	}
	snap, version, err := s.encoder.snapshot(res)
	return builtNode{snap: snap, version: version, err: err}
}

// setNodeLocked gives a node the configuration buildNode made, unless it
// is held (holdReasonLocked).
func (s *Server) setNodeLocked(ctx context.Context, id string, n *node, b builtNode) {
	if b.err != nil {
		s.logger.Error("cannot build snapshot", "node", id, "error", b.err)
		s.observeBuildFailedLocked()
		return
	}
	s.setSnapshotLocked(ctx, id, n, b.snap, b.version)
}

// setSnapshotLocked makes snap the node's configuration, unless it would
// take every route or endpoint away without a policy change: then the node
// keeps its configuration and is reported held.
func (s *Server) setSnapshotLocked(ctx context.Context, id string, n *node, snap *nodeSnapshot, version string) {
	if reason := s.holdReasonLocked(n, snap); reason != "" {
		if n.snap == nil && n.resumePolicy == "" {
			n.resumePolicy = s.model.PolicyVersion
		}
		if n.held != reason {
			s.logger.Warn("configuration held: the proxy keeps its current one", "node", id, "reason", reason)
		}
		if n.held == "" {
			n.heldSince = time.Now().UTC()
		}
		n.held = reason
		return
	}
	if err := s.cache.setSnapshot(ctx, id, snap); err != nil {
		s.logger.Error("cannot set snapshot", "node", id, "error", err)
		return
	}
	if n.held != "" {
		s.logger.Info("held configuration released", "node", id, "policyChanged", n.policyVersion != s.model.PolicyVersion)
		n.held, n.heldSince = "", time.Time{}
	}
	if n.version != version {
		s.nodesUpdated.Add(1)
	}
	n.snap, n.version, n.policyVersion = snap, version, s.model.PolicyVersion
}

// holdReasonLocked says why next must not replace the node's current
// snapshot, "" when it may: next has no route (HTTP routes across its
// RouteConfigurations) where the current one has some, or no endpoint
// (LbEndpoints across its ClusterLoadAssignments) where it has some, while
// the policy is the one the current snapshot was made with. A node without
// a snapshot yet is held only as resumeHoldReasonLocked says.
func (s *Server) holdReasonLocked(n *node, next *nodeSnapshot) string {
	if n.snap == nil {
		return s.resumeHoldReasonLocked(n, next)
	}
	if n.policyVersion != s.model.PolicyVersion || n.resubscribed {
		return ""
	}
	var lost []string
	if had := n.snap.items(resourcev3.RouteType); had > 0 && next.items(resourcev3.RouteType) == 0 {
		lost = append(lost, fmt.Sprintf("every route (%d)", had))
	}
	if had := n.snap.items(resourcev3.EndpointType); had > 0 && next.items(resourcev3.EndpointType) == 0 {
		lost = append(lost, fmt.Sprintf("every endpoint (%d)", had))
	}
	if len(lost) == 0 {
		return ""
	}
	return "the new configuration would remove " + strings.Join(lost, " and ") + " without a policy change"
}

// resumeHoldReasonLocked says why next must not be the first snapshot of a
// proxy that came with a configuration, "" when it may: next has load
// assignments but no endpoint, while the proxy reported other endpoints
// (an EDS version that is not next's) or has not said yet (resumeWindow).
// Such a loss comes from a catalog that has not settled (a restarted
// control plane or Consul agent whose checks have not run), not from an
// operator: the proxy keeps what it serves until a configuration gives it
// endpoints, or the policy changes. Routes come from the policy alone, so
// they are not compared.
func (s *Server) resumeHoldReasonLocked(n *node, next *nodeSnapshot) string {
	if n.resumed == nil || next.items(resourcev3.EndpointType) > 0 {
		return ""
	}
	if ts := next.types[resourcev3.EndpointType]; ts == nil || len(ts.list) == 0 {
		return ""
	}
	if n.resumePolicy != "" && n.resumePolicy != s.model.PolicyVersion {
		return ""
	}
	had, known := n.resumed[resourcev3.EndpointType]
	switch {
	case known && (had == "" || had == next.types[resourcev3.EndpointType].version):
		return ""
	case !known && !n.resumeOpen:
		return ""
	}
	return "reconnected with endpoints: the first configuration of this control plane has none, without a policy change"
}

// resumeRequestLocked records the version an initial request (no nonce)
// of a proxy that came with a configuration reports, while the node has no
// snapshot yet; an endpoint version may release a held first snapshot.
func (s *Server) resumeRequestLocked(id string, n *node, req *discoveryv3.DiscoveryRequest) {
	if n.resumed == nil || n.snap != nil {
		return
	}
	if _, seen := n.resumed[req.GetTypeUrl()]; seen {
		return
	}
	n.resumed[req.GetTypeUrl()] = req.GetVersionInfo()
	if req.GetTypeUrl() == resourcev3.EndpointType && n.held != "" && s.model != nil {
		s.updateNodeLocked(context.Background(), id, n)
	}
}

// closeResume ends the resume window of node n (id): a held first snapshot
// is decided again, a type the proxy did not ask for counting as one it
// holds nothing of.
func (s *Server) closeResume(id string, n *node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nodes[id] != n || !n.resumeOpen {
		return
	}
	n.resumeOpen = false
	if n.snap == nil && n.held != "" && s.model != nil {
		s.updateNodeLocked(context.Background(), id, n)
	}
}

// updateNodeLocked translates the model for one node and sets its snapshot.
func (s *Server) updateNodeLocked(ctx context.Context, id string, n *node) {
	s.setNodeLocked(ctx, id, n, s.buildNode(id, n.translationInfo()))
}

// snapshot encodes a node's resources. Each type is versioned by a hash of
// its resources' names and content hashes, so a type is resent only when it
// changed; the returned version hashes every type's version.
func (e *encoder) snapshot(res *translate.Resources) (*nodeSnapshot, string, error) {
	snap := &nodeSnapshot{types: make(map[string]*typeSnapshot, len(orderedTypes))}
	add := func(typeURL string, items []types.Resource) error {
		list := make([]*encoded, len(items))
		for i, item := range items {
			enc, err := e.encode(typeURL, cachev3.GetResourceName(item), item)
			if err != nil {
				return err
			}
			list[i] = enc
		}
		snap.types[typeURL] = e.typeSnapshot(list)
		return nil
	}
	err := errors.Join(
		add(resourcev3.ListenerType, asResources(res.Listeners)),
		add(resourcev3.RouteType, asResources(res.Routes)),
		add(resourcev3.ClusterType, asResources(res.Clusters)),
		add(resourcev3.EndpointType, asResources(res.Endpoints)),
		add(resourcev3.SecretType, asResources(res.Secrets)),
	)
	if err != nil {
		return nil, "", err
	}
	return snap, snap.version(), nil
}

// versionedTypes are the types a node snapshot's version covers, in order.
var versionedTypes = [...]string{
	resourcev3.ListenerType,
	resourcev3.RouteType,
	resourcev3.ClusterType,
	resourcev3.EndpointType,
	resourcev3.SecretType,
}

// version hashes the versions of every type of the snapshot.
func (snap *nodeSnapshot) version() string {
	all := sha256.New()
	for _, typeURL := range versionedTypes {
		if ts := snap.types[typeURL]; ts != nil {
			all.Write([]byte(ts.version))
		}
	}
	return hex.EncodeToString(all.Sum(nil)[:8])
}

func asResources[M types.Resource](in []M) []types.Resource {
	out := make([]types.Resource, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}
