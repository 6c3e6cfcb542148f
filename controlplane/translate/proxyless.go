package translate

import (
	"fmt"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/controlplane/model"
)

// CertificateProviderInstance is the certificate provider instance a
// proxyless gRPC client's bootstrap declares (certificate_providers), and
// that its clusters' TLS contexts name for the client's certificate and
// for the trust bundle (gRFC A29): `meshgate bootstrap grpc` writes it as
// a file_watcher over the files it enrols and renews.
const CertificateProviderInstance = "meshgate"

// proxyless adds to res what a proxyless gRPC client (role proxyless)
// receives: for each Listener name it subscribed to (node.Listeners), an
// API listener of that name (gRFC A27). A name that is a domain of the
// outbound route configuration a sidecar of the client's service would get
// (name, name:port, name.namespace, name.namespace:port) is served the
// route configuration "outbound" over RDS: the same virtual hosts and
// routes, without the per-filter configs of HTTP filters the client does
// not run (it runs the router alone). Any other name gets an API listener
// whose inline route configuration has no virtual host, which grpc-go
// answers at once with UNAVAILABLE (an absent listener would leave the
// client waiting for its resource timeout). The clusters are the
// sidecar's, with mTLS by certificate provider instances instead of
// transport socket matches and SDS secrets, and a balancing policy gRPC
// implements (docs/interop.md says what a proxyless client does not
// enforce).
func proxyless(p parts, res *Resources, node NodeInfo) (*clusterSet, error) {
	m, in := p.translation()
	out, err := p.outbound(model.NamespacedName{Namespace: node.Namespace, Name: node.Service})
	if err != nil {
		return nil, err
	}
	rc, err := grpcRouteConfiguration(out.routes)
	if err != nil {
		return nil, err
	}
	domains := map[string]bool{}
	for _, vh := range rc.GetVirtualHosts() {
		for _, d := range vh.GetDomains() {
			domains[d] = true
		}
	}
	rds, err := apiListenerManager(&hcmv3.HttpConnectionManager{RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
		ConfigSource: adsConfigSource(), RouteConfigName: OutboundName,
	}}})
	if err != nil {
		return nil, err
	}
	served := false
	for _, name := range node.listenerNames() {
		hcm := rds
		if !domains[name] {
			if hcm, err = apiListenerManager(&hcmv3.HttpConnectionManager{RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{
				RouteConfig: &routev3.RouteConfiguration{Name: name},
			}}); err != nil {
				return nil, err
			}
		} else {
			served = true
		}
		res.Listeners = append(res.Listeners, &listenerv3.Listener{Name: name, ApiListener: &listenerv3.ApiListener{ApiListener: hcm}})
	}
	if !served {
		return &clusterSet{}, nil
	}
	res.Routes = append(res.Routes, rc)
	list := make([]*ownCluster, len(out.clusters.clusters))
	for i, c := range out.clusters.clusters {
		gc, err := grpcCluster(c, in.mtls() && m != nil)
		if err != nil {
			return nil, err
		}
		list[i] = &ownCluster{cluster: gc, endpoints: out.clusters.endpoints[i]}
	}
	return newClusterSet(list), nil
}

// apiListenerManager is hcm, the HttpConnectionManager of an API listener
// with its routes set, encoded with the router filter alone (the HTTP filters gRPC
// implements on a client, fault injection and the like, are not among
// those meshgate configures on a sidecar's outbound listener in a way it
// would read).
func apiListenerManager(hcm *hcmv3.HttpConnectionManager) (*anypb.Any, error) {
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, fmt.Errorf("api listener: router config: %w", err)
	}
	hcm.StatPrefix = OutboundName
	hcm.HttpFilters = []*hcmv3.HttpFilter{{
		Name:       routerFilterName,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router},
	}}
	typed, err := anypb.New(hcm)
	if err != nil {
		return nil, fmt.Errorf("api listener: connection manager: %w", err)
	}
	return typed, nil
}

// grpcRouteConfiguration is rc as a proxyless client reads it: without
// per-filter configs (its API listeners run the router alone, and grpc-go
// refuses a per-filter config of a filter it does not know), and with a
// retry policy of no retries where rc has num_retries 0 (grpc-go refuses
// 0; a policy that retries on nothing is the same, and still replaces the
// virtual host's).
func grpcRouteConfiguration(rc *routev3.RouteConfiguration) (*routev3.RouteConfiguration, error) {
	out := proto.Clone(rc).(*routev3.RouteConfiguration)
	out.TypedPerFilterConfig = nil
	noRetry := func(p *routev3.RetryPolicy) *routev3.RetryPolicy {
		if p != nil && p.GetNumRetries() != nil && p.GetNumRetries().GetValue() == 0 {
			return &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(1)}
		}
		return p
	}
	for _, vh := range out.GetVirtualHosts() {
		vh.TypedPerFilterConfig = nil
		vh.RetryPolicy = noRetry(vh.RetryPolicy)
		for _, r := range vh.GetRoutes() {
			r.TypedPerFilterConfig = nil
			if ra := r.GetRoute(); ra != nil {
				ra.RetryPolicy = noRetry(ra.RetryPolicy)
				for _, w := range ra.GetWeightedClusters().GetClusters() {
					w.TypedPerFilterConfig = nil
				}
			}
		}
	}
	return out, nil
}

// grpcCluster is c as a proxyless client reads it. A cluster with the mTLS
// transport socket match (it has sidecar endpoints) gets one transport
// socket instead, for every endpoint: the client's certificate and the
// trust bundle from CertificateProviderInstance, and the SAN of the
// destination's SPIFFE ID (match_subject_alt_names, the field gRPC reads).
// Without mTLS, a cluster's own transport socket (a BackendTLSPolicy's,
// with an inline CA that gRPC does not read) is left out: the client
// speaks plaintext. RANDOM balancing becomes ROUND_ROBIN and MAGLEV
// RING_HASH, the nearest policies gRPC implements.
func grpcCluster(c *clusterv3.Cluster, mtls bool) (*clusterv3.Cluster, error) {
	out := proto.Clone(c).(*clusterv3.Cluster)
	matches := out.TransportSocketMatches
	out.TransportSocketMatches = nil
	out.TransportSocket = nil
	switch out.LbPolicy {
	case clusterv3.Cluster_RANDOM:
		out.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	case clusterv3.Cluster_MAGLEV:
		out.LbPolicy = clusterv3.Cluster_RING_HASH
		out.LbConfig = nil
	}
	if !mtls || len(matches) == 0 {
		return out, nil
	}
	upstream := &tlsv3.UpstreamTlsContext{}
	if err := matches[0].GetTransportSocket().GetTypedConfig().UnmarshalTo(upstream); err != nil {
		return nil, fmt.Errorf("cluster %q: mtls transport socket: %w", c.Name, err)
	}
	var sans []*matcherv3.StringMatcher
	for _, san := range upstream.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames() {
		sans = append(sans, san.GetMatcher())
	}
	provider := &tlsv3.CertificateProviderPluginInstance{InstanceName: CertificateProviderInstance}
	ts, err := transportSocket(&tlsv3.UpstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateProviderInstance: provider,
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				CaCertificateProviderInstance: provider,
				//lint:ignore SA1019 grpc-go reads match_subject_alt_names, not the typed field Envoy prefers
				MatchSubjectAltNames: sans,
			}},
			AlpnProtocols: slices.Clone(upstream.GetCommonTlsContext().GetAlpnProtocols()),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", c.Name, err)
	}
	out.TransportSocket = ts
	return out, nil
}

// listenerNames is the node's Listeners, split.
func (n NodeInfo) listenerNames() []string {
	if n.Listeners == "" {
		return nil
	}
	names := strings.Split(n.Listeners, ",")
	slices.Sort(names)
	return slices.Compact(names)
}
