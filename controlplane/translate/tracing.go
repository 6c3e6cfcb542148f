package translate

import (
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingtypev3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

// Tracing on the wire (docs/observability.md).
const (
	// OpenTelemetryTracerName is the tracing provider of every listener's
	// HttpConnectionManager when the mesh traces.
	OpenTelemetryTracerName = "envoy.tracers.opentelemetry"
	// TracingClusterName is the STATIC cluster of the collector.
	TracingClusterName = "meshgate_tracing_collector"
	// Span attributes the control plane sets as literal custom tags.
	TagRole      = "meshgate.role"
	TagNamespace = "meshgate.namespace"
	// TagSPIFFEID is the proxy's own identity (the peer's is set by the
	// proxy per request).
	TagSPIFFEID = "meshgate.spiffe_id"
	// Roles, the values of TagRole.
	TracingRoleGateway = "gateway"
	TracingRoleSidecar = "sidecar"
)

// tracingExportTimeout bounds one export to the collector.
const tracingExportTimeout = 5 * time.Second

// traceListener sets, when the mesh traces (t not nil), the tracing of l's
// HttpConnectionManager: the OpenTelemetry provider exporting to the
// collector cluster as service, random_sampling at the mesh's percentage,
// and the mesh's attributes, role, namespace and the proxy's SPIFFE ID as
// literal custom tags. Without tracing l is left as it is.
func traceListener(l *listenerv3.Listener, m *model.Model, service, namespace, role string) error {
	t := m.Mesh.Tracing
	if t == nil {
		return nil
	}
	tracing, err := hcmTracing(t, service, namespace, role, m.Mesh.SPIFFEID(namespace, service))
	if err != nil {
		return fmt.Errorf("listener %q: tracing: %w", l.GetName(), err)
	}
	for _, chain := range l.GetFilterChains() {
		for _, f := range chain.GetFilters() {
			if f.GetName() != httpConnectionManagerName {
				continue
			}
			hcm := &hcmv3.HttpConnectionManager{}
			if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
				return fmt.Errorf("listener %q: connection manager: %w", l.GetName(), err)
			}
			hcm.Tracing = tracing
			a, err := anypb.New(hcm)
			if err != nil {
				return fmt.Errorf("listener %q: connection manager: %w", l.GetName(), err)
			}
			f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
		}
	}
	return nil
}

// hcmTracing is HttpConnectionManager.tracing for the mesh's tracing t.
func hcmTracing(t *model.Tracing, service, namespace, role, spiffeID string) (*hcmv3.HttpConnectionManager_Tracing, error) {
	otel := &tracev3.OpenTelemetryConfig{ServiceName: service}
	if t.Protocol == policy.TracingProtocolHTTP {
		otel.HttpService = &corev3.HttpService{HttpUri: &corev3.HttpUri{
			Uri:              "http://" + t.Endpoint + "/v1/traces",
			HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: TracingClusterName},
			Timeout:          durationpb.New(tracingExportTimeout),
		}}
	} else {
		otel.GrpcService = &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: TracingClusterName}},
			Timeout:         durationpb.New(tracingExportTimeout),
		}
	}
	cfg, err := anypb.New(otel)
	if err != nil {
		return nil, err
	}
	tags := []*tracingtypev3.CustomTag{literalTag(TagRole, role), literalTag(TagNamespace, namespace), literalTag(TagSPIFFEID, spiffeID)}
	for _, k := range slices.Sorted(maps.Keys(t.Attributes)) {
		tags = append(tags, literalTag(k, t.Attributes[k]))
	}
	return &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: t.SamplingPercent},
		CustomTags:     tags,
		Provider: &tracev3.Tracing_Http{
			Name:       OpenTelemetryTracerName,
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: cfg},
		},
	}, nil
}

func literalTag(name, value string) *tracingtypev3.CustomTag {
	return &tracingtypev3.CustomTag{Tag: name, Type: &tracingtypev3.CustomTag_Literal_{
		Literal: &tracingtypev3.CustomTag_Literal{Value: value},
	}}
}

// tracingCluster is the STATIC cluster of the collector at t.Endpoint
// (ip:port, checked by policy): HTTP/2 for OTLP/gRPC. Nil without tracing.
func tracingCluster(t *model.Tracing) (*clusterv3.Cluster, error) {
	if t == nil {
		return nil, nil
	}
	ap, err := netip.ParseAddrPort(t.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("tracing endpoint %q: %w", t.Endpoint, err)
	}
	c := &clusterv3.Cluster{
		Name:                 TracingClusterName,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: TracingClusterName,
			Endpoints: []*endpointv3.LocalityLbEndpoints{localityEndpoints(nil,
				lbEndpoint(ap.Addr().Unmap().String(), uint32(ap.Port()), nil, false))},
		},
	}
	if t.Protocol != policy.TracingProtocolHTTP {
		if err := setHTTP2(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// routeTracing is Route.tracing for a rule whose route overrides the
// mesh's sampling (model.Rule.TracingSampling): random_sampling at its
// percentage, which replaces the connection manager's for the requests of
// the route that start a trace. Nil when the mesh does not trace or the
// rule has no override.
func routeTracing(m *model.Model, rule *model.Rule) *routev3.Tracing {
	if m.Mesh.Tracing == nil || rule.TracingSampling == nil {
		return nil
	}
	return &routev3.Tracing{RandomSampling: samplingFraction(*rule.TracingSampling)}
}

// samplingFraction is pct (0 to 100) as a FractionalPercent: per hundred
// when whole, else per million.
func samplingFraction(pct float64) *typev3.FractionalPercent {
	if pct == math.Trunc(pct) {
		return &typev3.FractionalPercent{Numerator: uint32(pct), Denominator: typev3.FractionalPercent_HUNDRED}
	}
	return &typev3.FractionalPercent{Numerator: uint32(math.Round(pct * 10000)), Denominator: typev3.FractionalPercent_MILLION}
}
