// Package xdsclient is the proxy's xDS v3 client: one aggregated (ADS),
// state-of-the-world stream to a control plane, subscriptions that follow the
// accepted clusters and listeners (endpoint, route and secret names),
// ACK/NACK, and reconnection with backoff that resumes from the last accepted
// versions.
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"
	"unicode/utf8"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/internal/backoff"

	// Registers the endpoint and route resource types for Any decoding.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// Type URLs of the resources the client subscribes to, in subscription order.
const (
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	SecretType   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// LocalSecretName is the secret of the proxy's own certificate and key: a
// static secret of the proxy, resolved from its identity provider, never
// requested over SDS (docs/xds.md).
const LocalSecretName = "default"

// ApplyFunc receives every response: the decoded resources of one type and the
// response's version. A nil error ACKs the response; an error NACKs it with the
// error's text as detail. It is called from one goroutine at a time.
type ApplyFunc func(ctx context.Context, typeURL string, resources []proto.Message, version string) error

// Options configure a Client.
type Options struct {
	// Node identifies the proxy; required, with an Id.
	Node *corev3.Node
	// Addresses of control-plane replicas (host:port); the client rotates
	// among them when a stream fails. At least one.
	Addresses []string
	// Apply is called for every response; required.
	Apply ApplyFunc
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
	// TransportCredentials secure the connection; insecure when nil.
	TransportCredentials credentials.TransportCredentials
	// BackoffInitial and BackoffMax bound the reconnect delay (100ms and 5s by default).
	BackoffInitial, BackoffMax time.Duration
	// KeepaliveTime is the interval of HTTP/2 pings on an idle connection
	// (30s by default). The control plane must permit it (keepalive.EnforcementPolicy).
	KeepaliveTime time.Duration
	// MaxRecvMsgSize bounds one response (64 MiB by default).
	MaxRecvMsgSize int
}

// Client is an ADS client. Create it with New and start it with Run.
type Client struct {
	opts   Options
	logger *slog.Logger
	// state is owned by the Run goroutine.
	versions map[string]string   // last accepted version per type
	names    map[string][]string // resource names subscribed per non-wildcard type
	// secretRefs are the SDS names the accepted listeners (ListenerType) and
	// clusters (ClusterType) reference; the Secret subscription is their union.
	secretRefs map[string][]string
	// connected: a stream is open and has delivered a response (metrics).
	connected atomic.Bool
}

// Connected reports whether the client has an open stream to a control
// plane that has delivered a response; false while it reconnects.
func (c *Client) Connected() bool { return c.connected.Load() }

// New checks opts and returns a Client.
func New(opts Options) (*Client, error) {
	if opts.Node == nil || opts.Node.GetId() == "" {
		return nil, errors.New("xdsclient: node with an id is required")
	}
	if len(opts.Addresses) == 0 {
		return nil, errors.New("xdsclient: at least one control-plane address is required")
	}
	if opts.Apply == nil {
		return nil, errors.New("xdsclient: Apply is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.TransportCredentials == nil {
		opts.TransportCredentials = insecure.NewCredentials()
	}
	if opts.BackoffInitial <= 0 {
		opts.BackoffInitial = 100 * time.Millisecond
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = 5 * time.Second
	}
	if opts.KeepaliveTime <= 0 {
		opts.KeepaliveTime = 30 * time.Second
	}
	if opts.MaxRecvMsgSize <= 0 {
		opts.MaxRecvMsgSize = 64 << 20
	}
	return &Client{
		opts:       opts,
		logger:     opts.Logger.With("component", "xdsclient"),
		versions:   make(map[string]string),
		names:      make(map[string][]string),
		secretRefs: make(map[string][]string),
	}, nil
}

// Run connects and keeps the stream up, reconnecting with exponential backoff
// and jitter across the configured addresses, until ctx is done. It returns
// ctx.Err() then. Run must not be called more than once at a time.
func (c *Client) Run(ctx context.Context) error {
	retry := backoff.New(c.opts.BackoffInitial, c.opts.BackoffMax)
	for attempt := 0; ; attempt++ {
		addr := c.opts.Addresses[attempt%len(c.opts.Addresses)]
		received, err := c.session(ctx, addr)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if received {
			retry.Reset()
		}
		wait := retry.Next()
		if status.Code(err) == codes.ResourceExhausted {
			// Typically a response over MaxRecvMsgSize: it never reached
			// Apply, so the last accepted configuration keeps serving.
			c.logger.Error("xDS response too large or resources exhausted; keeping the last accepted configuration and reconnecting",
				"address", addr, "max_recv_bytes", c.opts.MaxRecvMsgSize, "error", err, "retry_in", wait)
		} else {
			c.logger.Warn("xDS stream ended; reconnecting", "address", addr, "error", err, "retry_in", wait)
		}
		if !backoff.Sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}

// session runs one stream to addr. received reports whether any response
// arrived (a healthy stream resets the backoff).
func (c *Client) session(ctx context.Context, addr string) (received bool, err error) {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(c.opts.TransportCredentials),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                c.opts.KeepaliveTime,
			Timeout:             10 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(c.opts.MaxRecvMsgSize)),
	)
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	streamCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(streamCtx)
	if err != nil {
		return false, fmt.Errorf("open ADS stream to %s: %w", addr, err)
	}
	s := &session{client: c, stream: stream, nonces: make(map[string]string), sent: make(map[string]bool)}
	if err := s.subscribeAll(); err != nil {
		return false, err
	}
	c.logger.Info("xDS stream opened", "address", addr, "node", c.opts.Node.GetId())
	defer c.connected.Store(false)
	for {
		resp, err := stream.Recv()
		if err != nil {
			return received, fmt.Errorf("receive from %s: %w", addr, err)
		}
		received = true
		c.connected.Store(true)
		if err := s.handle(ctx, resp); err != nil {
			return received, err
		}
	}
}

// session is the per-stream state; only its goroutine touches it.
type session struct {
	client *Client
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	nonces map[string]string // last nonce per type on this stream
	sent   map[string]bool   // whether a request for the type went out on this stream
	// nodeSent: the node goes in the first request of a stream only.
	nodeSent bool
}

// subscribeAll sends the initial requests: wildcard clusters and listeners,
// and the last known endpoint, route and secret names, each with its last
// accepted version so the control plane can resume.
func (s *session) subscribeAll() error {
	for _, typeURL := range []string{ClusterType, ListenerType, EndpointType, RouteType, SecretType} {
		if !isWildcard(typeURL) && len(s.client.names[typeURL]) == 0 {
			continue
		}
		if err := s.send(typeURL, s.client.versions[typeURL], nil); err != nil {
			return err
		}
	}
	return nil
}

func isWildcard(typeURL string) bool { return typeURL == ClusterType || typeURL == ListenerType }

// send writes one DiscoveryRequest for typeURL with the current names and
// the last nonce received for the type.
func (s *session) send(typeURL, version string, detail error) error {
	req := &discoveryv3.DiscoveryRequest{
		VersionInfo:   version,
		Node:          s.client.opts.Node,
		ResourceNames: s.client.names[typeURL],
		TypeUrl:       typeURL,
		ResponseNonce: s.nonces[typeURL],
	}
	if detail != nil {
		req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: ErrorDetail(detail)}
	}
	if s.nodeSent {
		req.Node = nil
	}
	s.nodeSent = true
	if err := s.stream.Send(req); err != nil {
		return fmt.Errorf("send %s request: %w", shortType(typeURL), err)
	}
	s.sent[typeURL] = true
	return nil
}

// handle applies one response, ACKs or NACKs it, then updates the endpoint
// and route subscriptions when accepted clusters or listeners changed them.
func (s *session) handle(ctx context.Context, resp *discoveryv3.DiscoveryResponse) error {
	c := s.client
	typeURL := resp.GetTypeUrl()
	s.nonces[typeURL] = resp.GetNonce()
	resources, err := decode(typeURL, resp.GetResources())
	if err == nil {
		err = c.opts.Apply(ctx, typeURL, resources, resp.GetVersionInfo())
	}
	if err != nil {
		c.logger.Warn("NACK", "type", shortType(typeURL), "version", resp.GetVersionInfo(), "error", ErrorDetail(err))
		return s.send(typeURL, c.versions[typeURL], err)
	}
	c.versions[typeURL] = resp.GetVersionInfo()
	c.logger.Debug("ACK", "type", shortType(typeURL), "version", resp.GetVersionInfo(), "resources", len(resources))
	if err := s.send(typeURL, resp.GetVersionInfo(), nil); err != nil {
		return err
	}
	switch typeURL {
	case ClusterType:
		c.secretRefs[ClusterType] = SecretNames(resources)
		if err := s.resubscribe(EndpointType, EndpointNames(resources)); err != nil {
			return err
		}
	case ListenerType:
		c.secretRefs[ListenerType] = SecretNames(resources)
		if err := s.resubscribe(RouteType, RouteNames(resources)); err != nil {
			return err
		}
	default:
		return nil
	}
	secrets := slices.Concat(c.secretRefs[ClusterType], c.secretRefs[ListenerType])
	slices.Sort(secrets)
	return s.resubscribe(SecretType, slices.Compact(secrets))
}

// resubscribe sends a request for the dependent type when its names changed
// (or were never requested on this stream).
func (s *session) resubscribe(dependent string, names []string) error {
	c := s.client
	if slices.Equal(names, c.names[dependent]) && (len(names) == 0 || s.sent[dependent]) {
		return nil
	}
	c.names[dependent] = names
	if len(names) == 0 && !s.sent[dependent] {
		return nil // an empty first request would mean wildcard
	}
	return s.send(dependent, c.versions[dependent], nil)
}

// MaxErrorDetailBytes bounds the error text of a NACK: a rejected resource
// may hold megabytes, and an error quoting it must not become a request the
// control plane refuses (or a log line that size).
const MaxErrorDetailBytes = 4 << 10

// ErrorDetail is the text a NACK carries for err: err.Error(), cut to
// MaxErrorDetailBytes (at a rune boundary) with a note of the full length.
func ErrorDetail(err error) string {
	msg := err.Error()
	if len(msg) <= MaxErrorDetailBytes {
		return msg
	}
	cut := MaxErrorDetailBytes
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (error truncated, %d bytes in all)", msg[:cut], len(msg))
}

// decode unpacks the resources of a response, all of which must be of typeURL.
func decode(typeURL string, anys []*anypb.Any) ([]proto.Message, error) {
	switch typeURL {
	case ClusterType, ListenerType, EndpointType, RouteType, SecretType:
	default:
		return nil, fmt.Errorf("resource type %q not supported", typeURL)
	}
	out := make([]proto.Message, 0, len(anys))
	for i, a := range anys {
		if a.GetTypeUrl() != typeURL {
			return nil, fmt.Errorf("resource %d: type %q in a %s response", i, a.GetTypeUrl(), shortType(typeURL))
		}
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("resource %d: decode %s: %w", i, shortType(typeURL), err)
		}
		out = append(out, m)
	}
	return out, nil
}

// EndpointNames returns the sorted, distinct ClusterLoadAssignment names the
// EDS clusters among resources need.
func EndpointNames(clusters []proto.Message) []string {
	var names []string
	for _, m := range clusters {
		c, ok := m.(*clusterv3.Cluster)
		if !ok || c.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		name := c.GetEdsClusterConfig().GetServiceName()
		if name == "" {
			name = c.GetName()
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// RouteNames returns the sorted, distinct RouteConfiguration names the
// listeners among resources reference through RDS.
func RouteNames(listeners []proto.Message) []string {
	var names []string
	for _, m := range listeners {
		l, ok := m.(*listenerv3.Listener)
		if !ok {
			continue
		}
		for _, chain := range l.GetFilterChains() {
			for _, f := range chain.GetFilters() {
				hcm := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig() == nil || f.GetTypedConfig().UnmarshalTo(hcm) != nil {
					continue
				}
				if name := hcm.GetRds().GetRouteConfigName(); name != "" {
					names = append(names, name)
				}
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

func shortType(typeURL string) string {
	switch typeURL {
	case ClusterType:
		return "CDS"
	case ListenerType:
		return "LDS"
	case EndpointType:
		return "EDS"
	case RouteType:
		return "RDS"
	case SecretType:
		return "SDS"
	}
	return typeURL
}

// SecretNames returns the sorted, distinct Secret names the TLS contexts of
// the listeners and clusters among resources request over SDS (every
// SdsSecretConfig with an sds_config), never LocalSecretName.
func SecretNames(resources []proto.Message) []string {
	var names []string
	add := func(ctx *tlsv3.CommonTlsContext) {
		refs := slices.Clone(ctx.GetTlsCertificateSdsSecretConfigs())
		refs = append(refs, ctx.GetValidationContextSdsSecretConfig(),
			ctx.GetCombinedValidationContext().GetValidationContextSdsSecretConfig())
		for _, ref := range refs {
			if ref.GetSdsConfig() != nil && ref.GetName() != "" && ref.GetName() != LocalSecretName {
				names = append(names, ref.GetName())
			}
		}
	}
	for _, m := range resources {
		switch r := m.(type) {
		case *listenerv3.Listener:
			for _, chain := range r.GetFilterChains() {
				ctx := &tlsv3.DownstreamTlsContext{}
				if tc := chain.GetTransportSocket().GetTypedConfig(); tc != nil && tc.UnmarshalTo(ctx) == nil {
					add(ctx.GetCommonTlsContext())
				}
			}
		case *clusterv3.Cluster:
			sockets := []*corev3.TransportSocket{r.GetTransportSocket()}
			for _, match := range r.GetTransportSocketMatches() {
				sockets = append(sockets, match.GetTransportSocket())
			}
			for _, socket := range sockets {
				ctx := &tlsv3.UpstreamTlsContext{}
				if tc := socket.GetTypedConfig(); tc != nil && tc.UnmarshalTo(ctx) == nil {
					add(ctx.GetCommonTlsContext())
				}
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}
