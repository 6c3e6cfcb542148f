package policy

import (
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// API groups and versions accepted in policy files.
const (
	GatewayAPIVersion  = "gateway.networking.k8s.io/v1"
	MeshgateAPIVersion = "meshgate.dev/v1alpha1"
	MeshgateGroup      = "meshgate.dev"
	GatewayGroup       = "gateway.networking.k8s.io"
	DefaultNamespace   = "default"
)

// Kinds accepted in policy files.
const (
	KindGateway   = "Gateway"
	KindHTTPRoute = "HTTPRoute"
	KindService   = "Service"
)

// Source locates a resource in the policy files it was loaded from.
type Source struct {
	// File is the path of the file as given to the loader.
	File string
	// Line is the 1-based line of the document's first key.
	Line int
	// fields maps a field path ("spec.rules[0].backendRefs[1].name") to its
	// 1-based line, for errors found after parsing.
	fields map[string]int
}

// LineOf returns the line of the field at path, or of the closest ancestor
// that has a known line, or of the resource itself.
func (s Source) LineOf(path string) int {
	for p := path; p != ""; p = parentPath(p) {
		if l, ok := s.fields[p]; ok {
			return l
		}
	}
	return s.Line
}

// WithFields returns a copy of s that knows the lines of the given field paths.
func (s Source) WithFields(fields map[string]int) Source {
	s.fields = fields
	return s
}

// parentPath strips the last element from a field path:
// "a.b[1].c" -> "a.b[1]" -> "a.b" -> "a" -> "".
func parentPath(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		switch p[i] {
		case '.':
			return p[:i]
		case '[':
			return p[:i]
		}
	}
	return ""
}

// Gateway is a Gateway API Gateway with the place it was loaded from.
type Gateway struct {
	gwapiv1.Gateway
	Source Source
}

// HTTPRoute is a Gateway API HTTPRoute with the place it was loaded from.
// Its parentRefs name either Gateways (north-south) or Services (east-west,
// the Gateway API mesh profile).
type HTTPRoute struct {
	gwapiv1.HTTPRoute
	Source Source
}

// Service is a meshgate.dev/v1alpha1 Service: a static registration of a
// service's ports and endpoints, used when services do not come from a
// discovery source.
type Service struct {
	Name      string
	Namespace string
	Spec      ServiceSpec
	Source    Source
}

// ServiceSpec is the spec of a Service.
type ServiceSpec struct {
	// Ports the service is called on. At least one.
	Ports []ServicePort `json:"ports"`
	// Endpoints are the addresses that serve the service. When a service runs
	// behind a sidecar, its endpoints are the sidecars' inbound addresses.
	Endpoints []Endpoint `json:"endpoints,omitempty"`
}

// Service port protocols.
const (
	ProtocolHTTP  = "HTTP"
	ProtocolHTTP2 = "HTTP2" // cleartext HTTP/2 (h2c) to the endpoints
)

// ServicePort is one port of a Service.
type ServicePort struct {
	// Name of the port; optional when the service has one port.
	Name string `json:"name,omitempty"`
	// Port is the port number clients and backendRefs use (1-65535).
	Port int32 `json:"port"`
	// Protocol is HTTP (default) or HTTP2.
	Protocol string `json:"protocol,omitempty"`
}

// Endpoint is one instance of a Service.
type Endpoint struct {
	// Address is host:port.
	Address string `json:"address"`
	// Port names the service port (by name or number) this endpoint serves;
	// optional when the service has one port.
	Port string `json:"port,omitempty"`
	// Labels select endpoints in routes and policies (e.g. version: v2).
	Labels map[string]string `json:"labels,omitempty"`
}

// Set is a complete, validated set of policy resources: the output of Load.
// Slices are sorted by namespace, then name.
type Set struct {
	// Files lists every file read, in load order.
	Files []string

	Gateways   []*Gateway
	HTTPRoutes []*HTTPRoute
	Services   []*Service
}
