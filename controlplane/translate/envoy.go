package translate

import (
	"cmp"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"

	"github.com/meshgate/meshgate/api/envoybootstrap"
)

// An Envoy node (NodeInfo.Envoy) receives the resources of its role with
// two differences, made here on copies of the shared messages:
//
//   - the proxy's own certificate, SDS secret "default", is referenced with
//     an sds_config pointing at the bootstrap's static cluster "sds-grpc"
//     (the SDS server of `meshgate sidecar --envoy` on a Unix socket);
//     meshgate's proxies resolve it from their identity without one;
//   - an API key filter (and its per-route configs) carries no key hashes:
//     its config becomes EnvoyAPIKeyTypeURL, a meshgate extension Envoy does
//     not have and that is not optional, so an Envoy refuses the listener
//     (and route configuration) instead of accepting "sha256:<hex>" as a
//     literal key, which would make a leaked hash a key. API keys fail
//     closed on an Envoy;
//   - the cluster of each remote JWKS ("jwks|host:port", http_uri.cluster)
//     is added: a STRICT_DNS cluster to that host, TLS verified against the
//     system's roots for an https URI (the meshgate proxy fetches the URI
//     itself).

// EnvoyAPIKeyTypeURL is the type of the config an Envoy node gets in place
// of an API key filter's: a TypedStruct of this type, which no Envoy
// implements.
const EnvoyAPIKeyTypeURL = "meshgate.dev/meshgate.filters.http.api_key_auth_sha256"

// identitySdsConfigForEnvoy references the proxy's own certificate through
// the bootstrap's SDS cluster.
func identitySdsConfigForEnvoy() *corev3.ConfigSource { return envoybootstrap.SDSConfig() }

// forEnvoy adapts res for an Envoy node, replacing (never modifying) the
// messages it changes.
func forEnvoy(res *Resources) error {
	for i, l := range res.Listeners {
		changed, err := listenerForEnvoy(l)
		if err != nil {
			return fmt.Errorf("listener %q for envoy: %w", l.Name, err)
		}
		if changed != nil {
			res.Listeners[i] = changed
		}
	}
	for i, c := range res.Clusters {
		changed, err := clusterForEnvoy(c)
		if err != nil {
			return fmt.Errorf("cluster %q for envoy: %w", c.Name, err)
		}
		if changed != nil {
			res.Clusters[i] = changed
		}
	}
	jwks, err := jwksClustersForEnvoy(res.Listeners)
	if err != nil {
		return err
	}
	if len(jwks) > 0 {
		res.Clusters = append(slices.Clone(res.Clusters), jwks...)
		slices.SortFunc(res.Clusters, func(a, b *clusterv3.Cluster) int { return cmp.Compare(a.Name, b.Name) })
	}
	for i, rc := range res.Routes {
		changed, err := routeConfigForEnvoy(rc)
		if err != nil {
			return fmt.Errorf("route configuration %q: %w", rc.Name, err)
		}
		if changed != nil {
			res.Routes[i] = changed
		}
	}
	return nil
}

// listenerForEnvoy is a copy of l adapted for Envoy, or nil when l needs
// no change.
func listenerForEnvoy(l *listenerv3.Listener) (*listenerv3.Listener, error) {
	out := proto.Clone(l).(*listenerv3.Listener)
	changed := false
	for _, chain := range out.FilterChains {
		c, err := transportSocketForEnvoy(chain.TransportSocket)
		if err != nil {
			return nil, err
		}
		changed = changed || c
		for _, f := range chain.Filters {
			c, err := hcmForEnvoy(f)
			if err != nil {
				return nil, err
			}
			changed = changed || c
		}
	}
	if !changed {
		return nil, nil
	}
	return out, nil
}

// clusterForEnvoy is a copy of c adapted for Envoy, or nil.
func clusterForEnvoy(c *clusterv3.Cluster) (*clusterv3.Cluster, error) {
	out := proto.Clone(c).(*clusterv3.Cluster)
	changed, err := transportSocketForEnvoy(out.TransportSocket)
	if err != nil {
		return nil, err
	}
	for _, m := range out.TransportSocketMatches {
		c, err := transportSocketForEnvoy(m.TransportSocket)
		if err != nil {
			return nil, err
		}
		changed = changed || c
	}
	if !changed {
		return nil, nil
	}
	return out, nil
}

// transportSocketForEnvoy gives the identity secret of ts's TLS context the
// SDS cluster's config source, in place; it reports whether it changed ts.
func transportSocketForEnvoy(ts *corev3.TransportSocket) (bool, error) {
	typed := ts.GetTypedConfig()
	if typed == nil {
		return false, nil
	}
	msg, err := typed.UnmarshalNew()
	if err != nil {
		return false, fmt.Errorf("transport socket %q: %w", ts.Name, err)
	}
	var common *tlsv3.CommonTlsContext
	switch ctx := msg.(type) {
	case *tlsv3.DownstreamTlsContext:
		common = ctx.GetCommonTlsContext()
	case *tlsv3.UpstreamTlsContext:
		common = ctx.GetCommonTlsContext()
	default:
		return false, nil
	}
	changed := false
	for _, sds := range common.GetTlsCertificateSdsSecretConfigs() {
		if sds.Name == IdentitySecretName && sds.SdsConfig == nil {
			sds.SdsConfig = identitySdsConfigForEnvoy()
			changed = true
		}
	}
	if !changed {
		return false, nil
	}
	repacked, err := deterministicAny(msg)
	if err != nil {
		return false, fmt.Errorf("transport socket %q: %w", ts.Name, err)
	}
	ts.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: repacked}
	return true, nil
}

// failsClosedOnEnvoy reports whether the meshgate HTTP filter name is one
// that protects the backend or the client (request validation, the response
// size limit): an Envoy, which has no implementation of it, must refuse the
// listener rather than skip the filter and let requests through unchecked.
// meshgate's other extensions (the response cache, consumer counting) it
// skips, as is_optional says.
func failsClosedOnEnvoy(name string) bool {
	return name == OpenAPIFilterName || name == ResponseLimitFilterName
}

// hcmForEnvoy replaces the API key filter of f's HttpConnectionManager, and
// makes the filters that fail closed on an Envoy non-optional, in place; it
// reports whether it changed f.
func hcmForEnvoy(f *listenerv3.Filter) (bool, error) {
	typed := f.GetTypedConfig()
	if typed == nil || typed.TypeUrl != "type.googleapis.com/"+string((&hcmv3.HttpConnectionManager{}).ProtoReflect().Descriptor().FullName()) {
		return false, nil
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := typed.UnmarshalTo(hcm); err != nil {
		return false, fmt.Errorf("filter %q: %w", f.Name, err)
	}
	changed := false
	for _, hf := range hcm.HttpFilters {
		if failsClosedOnEnvoy(hf.Name) && hf.IsOptional {
			hf.IsOptional = false
			changed = true
		}
		if hf.Name == APIKeyFilterName {
			cfg, err := envoyAPIKeyConfig()
			if err != nil {
				return false, err
			}
			hf.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: cfg}
			hf.IsOptional = false
			changed = true
		}
	}
	if !changed {
		return false, nil
	}
	repacked, err := deterministicAny(hcm)
	if err != nil {
		return false, fmt.Errorf("filter %q: %w", f.Name, err)
	}
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: repacked}
	return true, nil
}

// routeConfigForEnvoy is a copy of rc whose API key per-route configs are
// replaced, or nil when it has none.
func routeConfigForEnvoy(rc *routev3.RouteConfiguration) (*routev3.RouteConfiguration, error) {
	has := func(cfgs map[string]*anypb.Any) bool { _, ok := cfgs[APIKeyFilterName]; return ok }
	found := has(rc.TypedPerFilterConfig)
	for _, vh := range rc.VirtualHosts {
		found = found || has(vh.TypedPerFilterConfig)
		for _, r := range vh.Routes {
			found = found || has(r.TypedPerFilterConfig)
		}
	}
	if !found {
		return nil, nil
	}
	cfg, err := envoyAPIKeyConfig()
	if err != nil {
		return nil, err
	}
	out := proto.Clone(rc).(*routev3.RouteConfiguration)
	replace := func(cfgs map[string]*anypb.Any) {
		if has(cfgs) {
			cfgs[APIKeyFilterName] = cfg
		}
	}
	replace(out.TypedPerFilterConfig)
	for _, vh := range out.VirtualHosts {
		replace(vh.TypedPerFilterConfig)
		for _, r := range vh.Routes {
			replace(r.TypedPerFilterConfig)
		}
	}
	return out, nil
}

// envoyAPIKeyConfig is the API key filter's config for an Envoy: a
// TypedStruct of EnvoyAPIKeyTypeURL without any key.
func envoyAPIKeyConfig() (*anypb.Any, error) {
	typed, err := anypb.New(&xdstypev3.TypedStruct{TypeUrl: EnvoyAPIKeyTypeURL, Value: &structpb.Struct{}})
	if err != nil {
		return nil, fmt.Errorf("%s for envoy: %w", APIKeyFilterName, err)
	}
	return typed, nil
}

// jwksConnectTimeout is the connect timeout of a remote JWKS's cluster.
const jwksConnectTimeout = 5 * time.Second

// jwksClustersForEnvoy are the clusters of the remote JWKS the JWT filters
// of listeners fetch, once each, sorted by name.
func jwksClustersForEnvoy(listeners []*listenerv3.Listener) ([]*clusterv3.Cluster, error) {
	uris := map[string]string{} // cluster name -> URI
	for _, l := range listeners {
		for _, chain := range l.FilterChains {
			for _, f := range chain.Filters {
				hcm := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().MessageIs(hcm) {
					if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
						return nil, fmt.Errorf("listener %q: %w", l.Name, err)
					}
				}
				for _, hf := range hcm.HttpFilters {
					jwt := &jwtv3.JwtAuthentication{}
					if !hf.GetTypedConfig().MessageIs(jwt) {
						continue
					}
					if err := hf.GetTypedConfig().UnmarshalTo(jwt); err != nil {
						return nil, fmt.Errorf("listener %q: %w", l.Name, err)
					}
					for _, p := range jwt.Providers {
						if uri := p.GetRemoteJwks().GetHttpUri(); uri.GetCluster() != "" {
							uris[uri.GetCluster()] = uri.Uri
						}
					}
				}
			}
		}
	}
	out := make([]*clusterv3.Cluster, 0, len(uris))
	for name, uri := range uris {
		c, err := jwksCluster(name, uri)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *clusterv3.Cluster) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

// jwksCluster is the cluster name of the JWKS at uri: its host by DNS,
// with TLS to it for https.
func jwksCluster(name, uri string) (*clusterv3.Cluster, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("jwks %q: %w", uri, err)
	}
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" {
			port = "80"
		}
	}
	portNumber, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("jwks %q: port: %w", uri, err)
	}
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
		ConnectTimeout:       durationpb.New(jwksConnectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			// Locality and weight as in every load assignment the control
			// plane sends (the shape grpc-go needs too).
			Locality:            &corev3.Locality{},
			LoadBalancingWeight: wrapperspb.UInt32(1),
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: u.Hostname(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(portNumber)},
				}}},
			}}}},
		}}},
	}
	if u.Scheme == "https" {
		sni, sanType := u.Hostname(), tlsv3.SubjectAltNameMatcher_DNS
		if net.ParseIP(sni) != nil {
			sni, sanType = "", tlsv3.SubjectAltNameMatcher_IP_ADDRESS
		}
		ts, err := transportSocket(&tlsv3.UpstreamTlsContext{
			Sni: sni,
			CommonTlsContext: &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{
				ValidationContext: &tlsv3.CertificateValidationContext{
					SystemRootCerts: &tlsv3.CertificateValidationContext_SystemRootCerts{},
					MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
						SanType: sanType,
						Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: u.Hostname()}},
					}},
				},
			}},
		})
		if err != nil {
			return nil, fmt.Errorf("jwks %q: %w", uri, err)
		}
		c.TransportSocket = ts
	}
	return c, nil
}
