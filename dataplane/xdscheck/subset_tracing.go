package xdscheck

import "google.golang.org/protobuf/reflect/protoreflect"

// Names of the tracing typed configs (docs/observability.md, "On the wire").
const (
	// OpenTelemetryConfigType is the config of the envoy.tracers.opentelemetry
	// provider, the only tracer the proxy implements.
	OpenTelemetryConfigType protoreflect.FullName = "envoy.config.trace.v3.OpenTelemetryConfig"
)

// tracingSubset is HttpConnectionManager.tracing: the OpenTelemetry
// provider exporting OTLP over gRPC (envoy_grpc, to a cluster) or HTTP (to
// a cluster), the three sampling percentages, and literal custom tags.
func tracingSubset() Rules {
	return Rules{
		"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing": Allow(
			"client_sampling", "random_sampling", "overall_sampling", "custom_tags", "provider").
			Requires("provider"),
		"envoy.type.v3.Percent": Allow("value"),
		// Route.tracing: the route's sampling percentages, in place of
		// the connection manager's (custom_tags are not taken there); their
		// FractionalPercent is the core subset's.
		"envoy.config.route.v3.Tracing":           Allow("client_sampling", "random_sampling", "overall_sampling"),
		"envoy.type.tracing.v3.CustomTag":         Allow("tag", "literal").Requires("tag", "literal"),
		"envoy.type.tracing.v3.CustomTag.Literal": Allow("value"),
		"envoy.config.trace.v3.Tracing.Http": Allow("name").
			With("typed_config", Field{AnyTypes: []protoreflect.FullName{OpenTelemetryConfigType}}).
			Requires("typed_config"),
		OpenTelemetryConfigType: Allow("grpc_service", "http_service", "service_name").
			CheckedBy(checkOneExporter),
		"envoy.config.core.v3.GrpcService":           Allow("envoy_grpc", "timeout").Requires("envoy_grpc"),
		"envoy.config.core.v3.GrpcService.EnvoyGrpc": Allow("cluster_name").Requires("cluster_name"),
		"envoy.config.core.v3.HttpService":           Allow("http_uri").Requires("http_uri"),
		"envoy.config.core.v3.HttpUri":               Allow("uri", "cluster", "timeout").Requires("uri", "cluster"),
	}
}

// checkOneExporter requires exactly one of grpc_service and http_service.
func checkOneExporter(m protoreflect.Message) []Violation {
	fields := m.Descriptor().Fields()
	grpc := m.Has(fields.ByName("grpc_service"))
	http := m.Has(fields.ByName("http_service"))
	if grpc == http {
		return []Violation{{Path: "grpc_service", Reason: "exactly one of grpc_service and http_service is required"}}
	}
	return nil
}
