// Package envoybootstrap builds the bootstrap of an Envoy that joins a
// meshgate mesh (`meshgate bootstrap envoy`, docs/interop.md): its node
// (id, cluster and meshgate's node metadata, api/xdsnode), ADS over gRPC
// with mTLS to the control plane (the static cluster xds_cluster), the
// static cluster sds-grpc to the local identity agent's Unix socket
// (`meshgate sidecar --envoy`), which serves the proxy's certificate and
// the trust bundle, and the admin endpoint on loopback.
package envoybootstrap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshgate/meshgate/api/xdsnode"
)

// Names in the bootstrap, as the control plane references them.
const (
	// XDSClusterName is the static cluster that reaches the control plane
	// (ADS).
	XDSClusterName = "xds_cluster"
	// SDSClusterName is the static cluster that reaches the agent's Unix
	// socket: the control plane references the proxy's own certificate
	// for an Envoy node through it.
	SDSClusterName = "sds-grpc"
	// IdentitySecretName and RootCASecretName are the secrets the agent
	// serves over SDS.
	IdentitySecretName = "default"
	RootCASecretName   = "ROOTCA"

	// DefaultAdminAddress is the Envoy admin endpoint's address.
	DefaultAdminAddress = "127.0.0.1:15000"
	// ConnectTimeout of the static clusters.
	ConnectTimeout = 5 * time.Second
)

// Options are what the bootstrap says.
type Options struct {
	// NodeID is node.id; it must start with xdsnode.IDPrefix of the
	// identity (the control plane refuses other ids).
	NodeID string
	// Metadata is node.metadata: the role, namespace, service or gateway,
	// and a sidecar's listener addresses.
	Metadata xdsnode.Metadata
	// ControlPlanes are the control plane's xDS addresses (host:port); at
	// least one. A host that is not an IP address is resolved by DNS.
	ControlPlanes []string
	// ControlPlaneID is the SPIFFE ID the control plane's certificate must
	// carry (spiffeid.ControlPlane).
	ControlPlaneID string
	// SDSSocket is the agent's Unix socket.
	SDSSocket string
	// AdminAddress (host:port) of the admin endpoint; DefaultAdminAddress
	// when empty.
	AdminAddress string
}

// Build returns the bootstrap of opts. It passes ValidateAll.
func Build(opts Options) (*bootstrapv3.Bootstrap, error) {
	if opts.NodeID == "" {
		return nil, errors.New("envoy bootstrap: a node id is required")
	}
	if len(opts.ControlPlanes) == 0 {
		return nil, errors.New("envoy bootstrap: at least one control-plane address is required")
	}
	if opts.SDSSocket == "" {
		return nil, errors.New("envoy bootstrap: the SDS socket is required")
	}
	if opts.AdminAddress == "" {
		opts.AdminAddress = DefaultAdminAddress
	}
	admin, err := socketAddress("admin address", opts.AdminAddress)
	if err != nil {
		return nil, err
	}
	if ip, perr := netip.ParseAddr(admin.GetSocketAddress().GetAddress()); perr != nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("envoy bootstrap: admin address %q: want a loopback IP address (the admin endpoint can stop the proxy)", opts.AdminAddress)
	}
	xds, err := xdsCluster(opts)
	if err != nil {
		return nil, err
	}
	sds, err := sdsCluster(opts.SDSSocket)
	if err != nil {
		return nil, err
	}
	ads := &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	b := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: opts.NodeID, Cluster: opts.Metadata.Name(), Metadata: opts.Metadata.Struct()},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Clusters: []*clusterv3.Cluster{xds, sds},
		},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:                   corev3.ApiConfigSource_GRPC,
				TransportApiVersion:       corev3.ApiVersion_V3,
				SetNodeOnFirstMessageOnly: true,
				GrpcServices:              []*corev3.GrpcService{envoyGrpc(XDSClusterName)},
			},
			LdsConfig: ads,
			CdsConfig: proto.Clone(ads).(*corev3.ConfigSource),
		},
		Admin: &bootstrapv3.Admin{Address: admin},
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("envoy bootstrap: %w", err)
	}
	return b, nil
}

// SDSConfig is the config source of a secret served by the agent.
func SDSConfig() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
			ApiType:             corev3.ApiConfigSource_GRPC,
			TransportApiVersion: corev3.ApiVersion_V3,
			GrpcServices:        []*corev3.GrpcService{envoyGrpc(SDSClusterName)},
		}},
	}
}

func envoyGrpc(cluster string) *corev3.GrpcService {
	return &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster}}}
}

// http2Options makes a cluster speak HTTP/2 (gRPC).
func http2Options() (map[string]*anypb.Any, error) {
	typed, err := anypb.New(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})
	if err != nil {
		return nil, err
	}
	return map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed}, nil
}

// xdsCluster reaches the control plane with mTLS: the agent's certificate,
// the control plane verified against the agent's trust bundle and its
// SPIFFE ID.
func xdsCluster(opts Options) (*clusterv3.Cluster, error) {
	if opts.ControlPlaneID == "" {
		return nil, errors.New("envoy bootstrap: the control plane's SPIFFE ID is required")
	}
	discovery := clusterv3.Cluster_STATIC
	var endpoints []*endpointv3.LbEndpoint
	for _, cp := range opts.ControlPlanes {
		addr, err := socketAddress("control-plane address", cp)
		if err != nil {
			return nil, err
		}
		if _, err := netip.ParseAddr(addr.GetSocketAddress().GetAddress()); err != nil {
			discovery = clusterv3.Cluster_STRICT_DNS
		}
		endpoints = append(endpoints, lbEndpoint(addr))
	}
	tlsCtx, err := anypb.New(&tlsv3.UpstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: IdentitySecretName, SdsConfig: SDSConfig()}},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext: &tlsv3.CertificateValidationContext{
						MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
							SanType: tlsv3.SubjectAltNameMatcher_URI,
							Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: opts.ControlPlaneID}},
						}},
					},
					ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: RootCASecretName, SdsConfig: SDSConfig()},
				},
			},
			AlpnProtocols: []string{"h2"},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("envoy bootstrap: %w", err)
	}
	protocol, err := http2Options()
	if err != nil {
		return nil, fmt.Errorf("envoy bootstrap: %w", err)
	}
	return &clusterv3.Cluster{
		Name:                          XDSClusterName,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: discovery},
		ConnectTimeout:                durationpb.New(ConnectTimeout),
		TypedExtensionProtocolOptions: protocol,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: XDSClusterName, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: endpoints,
		}}},
		TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsCtx}},
	}, nil
}

// sdsCluster reaches the agent's Unix socket, plaintext (the socket is the
// owner's only).
func sdsCluster(socket string) (*clusterv3.Cluster, error) {
	protocol, err := http2Options()
	if err != nil {
		return nil, fmt.Errorf("envoy bootstrap: %w", err)
	}
	return &clusterv3.Cluster{
		Name:                          SDSClusterName,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:                durationpb.New(ConnectTimeout),
		TypedExtensionProtocolOptions: protocol,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: SDSClusterName, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(&corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: socket}}})},
		}}},
	}, nil
}

func lbEndpoint(addr *corev3.Address) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr}}}
}

// socketAddress parses host:port.
func socketAddress(field, hostport string) (*corev3.Address, error) {
	host, portText, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("envoy bootstrap: %s %q: %w", field, hostport, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || host == "" || port == 0 {
		return nil, fmt.Errorf("envoy bootstrap: %s %q: want host:port with a port from 1 to 65535", field, hostport)
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}, nil
}
