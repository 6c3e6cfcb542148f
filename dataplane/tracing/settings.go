// Package tracing is the OpenTelemetry tracing of a proxy listener, as an
// HttpConnectionManager's tracing configures it (docs/observability.md):
// the envoy.tracers.opentelemetry provider (OpenTelemetryConfig) exporting
// OTLP over gRPC (grpc_service.envoy_grpc) or HTTP (http_service) to the
// endpoints of a cluster, random_sampling, client_sampling and
// overall_sampling, and literal custom_tags.
//
// A Tracer is built with the OpenTelemetry Go SDK: a server span per request
// received and a client span per upstream attempt, W3C traceparent and
// tracestate extracted and injected (B3 single and multi header accepted on
// input), parent-based sampling, and a bounded export queue that drops
// spans, counted, rather than ever blocking a request. A listener without
// tracing has no Tracer and pays nothing.
package tracing

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.opentelemetry.io/otel/attribute"
)

// ProviderName is the only tracing provider implemented.
const ProviderName = "envoy.tracers.opentelemetry"

// DefaultExportTimeout bounds one export when the config gives no timeout.
const DefaultExportTimeout = 5 * time.Second

// Protocol is how spans are exported.
type Protocol int

// Export protocols.
const (
	GRPC Protocol = iota // OTLP/gRPC
	HTTP                 // OTLP/HTTP (protobuf)
)

// Settings is a checked HttpConnectionManager.tracing: what a Tracer is
// built from. Two listeners with equal Keys share one Tracer.
type Settings struct {
	// Service is OpenTelemetryConfig.service_name, the spans' service.name.
	Service string
	// Cluster is the collector's cluster (envoy_grpc.cluster_name or
	// http_uri.cluster); spans go to its endpoints.
	Cluster  string
	Protocol Protocol
	// URLPath is the path spans are posted to, and Authority the Host they
	// are posted with (HTTP only: http_uri.uri's).
	URLPath, Authority string
	// Timeout bounds one export.
	Timeout time.Duration
	// Ratio is the probability that a new trace (no sampled or unsampled
	// parent) is sampled: random_sampling x overall_sampling.
	Ratio float64
	// Random and Overall are random_sampling and overall_sampling as
	// ratios (a route's Route.tracing may replace either: RouteRatio).
	Random, Overall float64
	// Tags are the literal custom_tags, set on every span.
	Tags []attribute.KeyValue
}

// Key identifies equal settings.
func (s *Settings) Key() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%q %q %d %q %q %s %g %g %g", s.Service, s.Cluster, s.Protocol, s.URLPath, s.Authority, s.Timeout, s.Ratio, s.Random, s.Overall)
	for _, t := range s.Tags {
		fmt.Fprintf(&b, " %q=%q", t.Key, t.Value.AsString())
	}
	return b.String()
}

// Parse reads an HttpConnectionManager.tracing already checked against the
// subset (dataplane/xdscheck); nil gives nil (no tracing). Errors name the
// field.
func Parse(t *hcmv3.HttpConnectionManager_Tracing) (*Settings, error) {
	if t == nil {
		return nil, nil
	}
	p := t.GetProvider()
	if p.GetName() != ProviderName && p.GetName() != "" {
		return nil, fmt.Errorf("tracing.provider.name: %q not supported (want %s)", p.GetName(), ProviderName)
	}
	cfg := &tracev3.OpenTelemetryConfig{}
	if err := p.GetTypedConfig().UnmarshalTo(cfg); err != nil {
		return nil, fmt.Errorf("tracing.provider.typed_config: %w", err)
	}
	s := &Settings{Service: cfg.GetServiceName(), Timeout: DefaultExportTimeout}
	if s.Service == "" {
		s.Service = "meshgate"
	}
	switch {
	case cfg.GetGrpcService() != nil:
		g := cfg.GetGrpcService()
		s.Protocol, s.Cluster = GRPC, g.GetEnvoyGrpc().GetClusterName()
		if d := g.GetTimeout(); d != nil {
			s.Timeout = d.AsDuration()
		}
	case cfg.GetHttpService() != nil:
		u := cfg.GetHttpService().GetHttpUri()
		s.Protocol, s.Cluster = HTTP, u.GetCluster()
		parsed, err := url.Parse(u.GetUri())
		if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "") {
			return nil, fmt.Errorf("tracing.provider.typed_config.http_service.http_uri.uri: %q is not an http URL", u.GetUri())
		}
		s.URLPath, s.Authority = parsed.EscapedPath(), parsed.Host
		if s.URLPath == "" {
			s.URLPath = "/v1/traces"
		}
		if d := u.GetTimeout(); d != nil {
			s.Timeout = d.AsDuration()
		}
	default:
		return nil, errors.New("tracing.provider.typed_config: grpc_service or http_service required")
	}
	if s.Cluster == "" {
		return nil, errors.New("tracing.provider.typed_config: the collector's cluster is required")
	}
	if s.Timeout <= 0 {
		return nil, fmt.Errorf("tracing.provider.typed_config: timeout %s must be positive", s.Timeout)
	}
	random, err := percent("tracing.random_sampling", t.GetRandomSampling())
	if err != nil {
		return nil, err
	}
	overall, err := percent("tracing.overall_sampling", t.GetOverallSampling())
	if err != nil {
		return nil, err
	}
	if _, err := percent("tracing.client_sampling", t.GetClientSampling()); err != nil {
		return nil, err
	}
	s.Ratio, s.Random, s.Overall = random*overall, random, overall
	for i, tag := range t.GetCustomTags() {
		if tag.GetTag() == "" {
			return nil, fmt.Errorf("tracing.custom_tags[%d].tag: required", i)
		}
		s.Tags = append(s.Tags, attribute.String(tag.GetTag(), tag.GetLiteral().GetValue()))
	}
	return s, nil
}

// percent reads a sampling percentage as a ratio; unset is 100% (Envoy's
// default for all three).
func percent(field string, p *typev3.Percent) (float64, error) {
	if p == nil {
		return 1, nil
	}
	v := p.GetValue()
	if !(v >= 0 && v <= 100) {
		return 0, fmt.Errorf("%s.value: %s is not a percentage from 0 to 100", field, strconv.FormatFloat(v, 'g', -1, 64))
	}
	return v / 100, nil
}
