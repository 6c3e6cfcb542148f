package buffer

import (
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// Names of the buffer typed configs (docs/xds.md "Request body limits").
const (
	configType   protoreflect.FullName = "envoy.extensions.filters.http.buffer.v3.Buffer"
	perRouteType protoreflect.FullName = "envoy.extensions.filters.http.buffer.v3.BufferPerRoute"
)

// subsetRules is the buffer filter's part of the subset of docs/xds.md:
// max_request_bytes (required, as Envoy requires it), and per route either
// disabled or a Buffer of its own.
func subsetRules() xdscheck.Rules {
	return xdscheck.Rules{
		configType:   xdscheck.Allow("max_request_bytes").Requires("max_request_bytes"),
		perRouteType: xdscheck.Allow("disabled", "buffer"),
	}
}
