package translate

import (
	"fmt"

	grpcwebv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_web/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/controlplane/model"
)

// GRPCWebFilterName is the name of the gRPC-Web filter entry.
const GRPCWebFilterName = "envoy.filters.http.grpc_web"

// grpcWebFilter is the gRPC-Web filter (envoy.extensions.filters.http.
// grpc_web.v3.GrpcWeb): a browser's gRPC-Web call is translated to gRPC
// for the backend, and the answer back.
func grpcWebFilter() (*hcmv3.HttpFilter, error) {
	typed, err := anypb.New(&grpcwebv3.GrpcWeb{})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", GRPCWebFilterName, err)
	}
	return &hcmv3.HttpFilter{Name: GRPCWebFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed}}, nil
}

// routesToGRPC reports whether a rule forwards to a Service port that
// speaks HTTP/2 (protocol HTTP2, as gRPC backends do): a gateway listener
// serving such a rule runs the gRPC-Web filter, as Envoy Gateway runs it
// on the listeners a GRPCRoute attaches to. A listener whose routes all go
// to HTTP/1.1 backends, which cannot answer gRPC, does without it.
func routesToGRPC(m *model.Model, rules []*model.Rule) bool {
	for _, r := range rules {
		if r.Action == nil {
			continue
		}
		for _, b := range r.Action.Backends {
			if b.Cluster == "" || b.Weight <= 0 {
				continue
			}
			svc := m.Service(b.Service.Namespace, b.Service.Name)
			if svc == nil {
				continue
			}
			if port := svc.Port(b.Port); port != nil && port.Protocol == model.ProtocolHTTP2 {
				return true
			}
		}
	}
	return false
}
