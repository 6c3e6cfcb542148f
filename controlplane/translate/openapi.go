package translate

import (
	"fmt"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/controlplane/model"
)

// OpenAPIFilterName is meshgate's request validation HTTP filter on the
// listeners some of whose routes have a TrafficPolicy requestValidation.
// Envoy has no OpenAPI filter, so the filter is meshgate's own, configured
// with an xds.type.v3.TypedStruct of type_url OpenAPITypeURL: at the
// listener the value is {} (nothing to validate), and each validated
// route has a per-route envoy.config.route.v3.FilterConfig holding
// {document, max_body_bytes, report_responses}, the document inline (at
// most policy.MaxOpenAPIDocumentBytes); the other routes need nothing. The
// entry and the per-route configs are optional (is_optional), so that an
// Envoy given the same xDS skips the filter (and does not validate)
// instead of rejecting the listener.
const OpenAPIFilterName = "meshgate.filters.http.openapi"

// OpenAPITypeURL is the TypedStruct type_url of the request validation
// filter (dataplane/filters/openapi).
const OpenAPITypeURL = "meshgate.dev/filters.http.openapi.v1.OpenAPIValidation"

// hasRequestValidation reports whether traffic t validates requests.
func hasRequestValidation(t *model.RouteTraffic) bool {
	return t != nil && t.RequestValidation != nil
}

// openAPIFilter is the request validation filter of a listener.
func openAPIFilter() (*hcmv3.HttpFilter, error) {
	typed, err := anypb.New(&xdstypev3.TypedStruct{TypeUrl: OpenAPITypeURL, Value: &structpb.Struct{}})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", OpenAPIFilterName, err)
	}
	return &hcmv3.HttpFilter{Name: OpenAPIFilterName, IsOptional: true,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed}}, nil
}

// setRequestValidation gives a route the per-route config of the request
// validation filter (rv nil: none).
func setRequestValidation(r *routev3.Route, rv *model.RequestValidation) error {
	if rv == nil {
		return nil
	}
	// Deterministic: the value is a map, and equal configs must be equal
	// bytes (the proxies compare resources).
	ts := new(anypb.Any)
	err := anypb.MarshalFrom(ts, &xdstypev3.TypedStruct{TypeUrl: OpenAPITypeURL, Value: &structpb.Struct{
		Fields: map[string]*structpb.Value{
			"document":         structpb.NewStringValue(rv.Document),
			"max_body_bytes":   structpb.NewNumberValue(float64(rv.MaxBodyBytes)),
			"report_responses": structpb.NewBoolValue(rv.ReportResponses),
		}}}, proto.MarshalOptions{Deterministic: true})
	if err != nil {
		return fmt.Errorf("%s per route: %w", OpenAPIFilterName, err)
	}
	typed, err := anypb.New(&routev3.FilterConfig{Config: ts, IsOptional: true})
	if err != nil {
		return fmt.Errorf("%s per route: %w", OpenAPIFilterName, err)
	}
	if r.TypedPerFilterConfig == nil {
		r.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	r.TypedPerFilterConfig[OpenAPIFilterName] = typed
	return nil
}
