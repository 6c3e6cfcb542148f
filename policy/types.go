package policy

import (
	"time"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/api/spiffeid"
)

// API groups and versions accepted in policy files.
const (
	GatewayAPIVersion  = "gateway.networking.k8s.io/v1"
	GatewayAPIV1beta1  = "gateway.networking.k8s.io/v1beta1"
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
	// KindGatewayClass is cluster-scoped: its namespace is "".
	KindGatewayClass = "GatewayClass"
	// KindReferenceGrant allows references into its namespace.
	KindReferenceGrant = "ReferenceGrant"
	// KindNamespace (apiVersion v1) gives a namespace labels, for the
	// listeners whose allowedRoutes select namespaces by label.
	KindNamespace = "Namespace"
	// CoreAPIVersion is the apiVersion of Kubernetes' core kinds.
	CoreAPIVersion = "v1"
	// KindListenerSet adds listeners to a Gateway that allows it
	// (spec.allowedListeners, GEP-1713).
	KindListenerSet = "ListenerSet"
)

// ListenerSet is a Gateway API ListenerSet with the place it was loaded
// from: listeners added to its parent Gateway (spec.parentRef), if that
// Gateway's spec.allowedListeners admits the ListenerSet's namespace. Its
// listeners are served by the parent's gateway nodes, beside the
// Gateway's own; routes attach to them with a ListenerSet parentRef.
type ListenerSet struct {
	gwapiv1.ListenerSet
	Source Source
	// original is, in a copy of a ListenerSet without the listeners that
	// are not programmed (Evaluate), the ListenerSet as written.
	original *ListenerSet
}

// Namespace is a Kubernetes Namespace document: a namespace's labels.
type Namespace struct {
	Name   string
	Labels map[string]string
	Spec   NamespaceSpec
	Source Source
}

// NamespaceSpec is the spec of a Namespace (as Kubernetes has it; unused).
type NamespaceSpec struct {
	Finalizers []string `json:"finalizers,omitempty"`
}

// ReferenceGrant is a Gateway API ReferenceGrant with the place it was
// loaded from: it lets resources of other namespaces refer to resources of
// its own (Set.BackendPermitted).
type ReferenceGrant struct {
	gwapiv1.ReferenceGrant
	Source Source
}

// GatewayClass is a Gateway API GatewayClass with the place it was loaded
// from. Gateways whose gatewayClassName names one with another
// controllerName than ControllerName are not meshgate's: not served.
type GatewayClass struct {
	gwapiv1.GatewayClass
	Source Source
}

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
	// original is, in a copy of a Gateway without the listeners that are
	// not programmed (Evaluate), the Gateway as written.
	original *Gateway
}

// HTTPRoute is a Gateway API HTTPRoute with the place it was loaded from.
// Its parentRefs name either Gateways (north-south) or Services (east-west,
// the Gateway API mesh profile).
type HTTPRoute struct {
	gwapiv1.HTTPRoute
	Source Source
	// GRPC is the spec of a GRPCRoute, held as the HTTPRoute whose spec
	// routes as it does (see KindGRPCRoute); nil for an HTTPRoute.
	GRPC *gwapiv1.GRPCRouteSpec
	// routeKind, in a route standing for a TCPRoute or TLSRoute in the
	// checks they share with HTTPRoutes (l4Shim), is that kind; "" for an
	// HTTPRoute.
	routeKind string
}

// Service is a meshgate.dev/v1alpha1 Service: a static registration of a
// service's ports and endpoints, used when services do not come from a
// discovery source.
type Service struct {
	Name      string
	Namespace string
	// Annotations are the metadata's (meshgate dev reads
	// meshgate.dev/dev-proxyless-target).
	Annotations map[string]string
	Spec        ServiceSpec
	Source      Source
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
	// ProtocolTCP: bytes, not HTTP (l4route.go: mesh TCP services).
	ProtocolTCP = "TCP"
)

// ServicePort is one port of a Service.
type ServicePort struct {
	// Name of the port; optional when the service has one port.
	Name string `json:"name,omitempty"`
	// Port is the port number clients and backendRefs use (1-65535).
	Port int32 `json:"port"`
	// Protocol is HTTP (default), HTTP2 or TCP.
	Protocol string `json:"protocol,omitempty"`
	// AppProtocol is the application protocol as the Gateway API reads a
	// Kubernetes Service port's appProtocol: kubernetes.io/h2c or grpc
	// (cleartext HTTP/2 to the endpoints, as protocol HTTP2),
	// kubernetes.io/ws or http (HTTP/1.1). Optional; when set it decides
	// the protocol to the endpoints.
	AppProtocol string `json:"appProtocol,omitempty"`
}

// Service port appProtocol values (as the Gateway API defines them).
const (
	AppProtocolH2C       = "kubernetes.io/h2c"
	AppProtocolGRPC      = "grpc"
	AppProtocolWebSocket = "kubernetes.io/ws"
	AppProtocolHTTP      = "http"
)

// UpstreamProtocol is the protocol spoken to the port's endpoints:
// ProtocolHTTP2 for protocol HTTP2 or appProtocol kubernetes.io/h2c or
// grpc, ProtocolHTTP otherwise.
func (p ServicePort) UpstreamProtocol() string {
	switch p.AppProtocol {
	case AppProtocolH2C, AppProtocolGRPC:
		return ProtocolHTTP2
	case AppProtocolWebSocket, AppProtocolHTTP:
		return ProtocolHTTP
	}
	if p.Protocol == ProtocolHTTP2 {
		return ProtocolHTTP2
	}
	return ProtocolHTTP
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
	// Sidecar says the address is a meshgate sidecar's inbound listener:
	// calls to it use mTLS and verify the service's SPIFFE identity.
	Sidecar bool `json:"sidecar,omitempty"`
}

// Set is a complete, validated set of policy resources: the output of Load.
// Slices are sorted by namespace, then name.
type Set struct {
	// Files lists every file read, in load order.
	Files []string
	// OpenAPIDocuments are the OpenAPI documents the TrafficPolicies name
	// by file (requestValidation.openAPI.file), by path, as read and
	// validated when the set was loaded (OpenAPIDocument).
	OpenAPIDocuments map[string][]byte
	// APIKeyConsumerFiles are the consumers of the SecurityPolicies'
	// apiKey.consumersFile, by path, as read and validated when the set
	// was loaded (APIKeyFileConsumers).
	APIKeyConsumerFiles map[string][]APIKeyConsumer

	Gateways   []*Gateway
	HTTPRoutes []*HTTPRoute
	Services   []*Service
	// TCPRoutes and TLSRoutes sorted by namespace, then name.
	TCPRoutes []*TCPRoute
	TLSRoutes []*TLSRoute
	// GatewayClasses sorted by name.
	GatewayClasses []*GatewayClass
	// ReferenceGrants sorted by namespace, then name.
	ReferenceGrants []*ReferenceGrant
	// Namespaces are the Namespace documents (their labels), sorted by name.
	Namespaces []*Namespace
	// ListenerSets are the ListenerSets attached to a Gateway of the set,
	// in the order of their precedence (by namespace, then name: policy
	// files have no creation time).
	ListenerSets []*ListenerSet
	// Secrets sorted by namespace, then name (their data is never shown).
	Secrets []*Secret
	// TLSCertificates are the checked certificates of the TLS Secrets, by
	// "namespace/name" (ListenerCertificates).
	TLSCertificates map[string]*TLSCertificate
	// ACMEIssuers sorted by namespace, then name.
	ACMEIssuers []*ACMEIssuer
	// BackendTLSPolicies sorted by namespace, then name (their
	// precedence); ConfigMaps sorted the same way.
	BackendTLSPolicies []*BackendTLSPolicy
	ConfigMaps         []*ConfigMap
	// BackendCAs are the CA bundles (PEM) of the BackendTLSPolicies'
	// valid caCertificateRefs, by policy "namespace/name" (BackendTLSFor).
	BackendCAs map[string][]byte

	// MeshConfig is the set's only MeshConfig, or nil (every default).
	MeshConfig *MeshConfig
	// SecurityPolicies sorted by namespace, then name.
	SecurityPolicies []*SecurityPolicy
	// TrafficPolicies sorted by namespace, then name.
	TrafficPolicies []*TrafficPolicy
}

// meshgate.dev kinds of the zero-trust mesh.
const (
	KindMeshConfig     = "MeshConfig"
	KindSecurityPolicy = "SecurityPolicy"
)

// mTLS modes of a sidecar's inbound listener.
const (
	// MTLSStrict accepts only mTLS connections with a mesh certificate.
	MTLSStrict = "STRICT"
	// MTLSPermissive accepts mTLS and plaintext connections.
	MTLSPermissive = "PERMISSIVE"
)

// Authorization actions.
const (
	ActionAllow = "ALLOW"
	ActionDeny  = "DENY"
)

// Mesh-wide defaults used when there is no MeshConfig or a field is unset.
const (
	DefaultTrustDomain    = spiffeid.DefaultTrustDomain
	DefaultMTLSMode       = MTLSStrict
	DefaultAction         = ActionAllow
	DefaultCertificateTTL = 24 * time.Hour
	// MinCertificateTTL is the shortest certificateTTL accepted.
	MinCertificateTTL    = time.Minute
	DefaultOutboundScope = OutboundScopeAll
)

// MeshConfig outbound scopes.
const (
	OutboundScopeAll        = "All"
	OutboundScopeAuthorized = "Authorized"
)

// MeshConfig is the meshgate.dev/v1alpha1 MeshConfig: mesh-wide identity,
// mTLS and authorization defaults. A set holds at most one.
type MeshConfig struct {
	Name      string
	Namespace string
	Spec      MeshConfigSpec
	Source    Source
}

// MeshConfigSpec is the spec of a MeshConfig. Unset fields take the Default*
// values.
type MeshConfigSpec struct {
	// TrustDomain of every SPIFFE ID: a lowercase DNS-like name.
	TrustDomain string `json:"trustDomain,omitempty"`
	// MTLS holds the default mode of sidecar inbound listeners.
	MTLS *MTLS `json:"mtls,omitempty"`
	// DefaultAction is ALLOW (default) or DENY: with DENY, a request must
	// match an ALLOW rule at every enforcement point.
	DefaultAction string `json:"defaultAction,omitempty"`
	// CertificateTTL is the lifetime of proxy certificates (Gateway API
	// duration, at least 1m).
	CertificateTTL gwapiv1.Duration `json:"certificateTTL,omitempty"`
	// OutboundScope is what a sidecar's outbound configuration holds: All
	// (default) the services of the mesh, or Authorized only those its
	// identity may call: those whose authorization could allow some request
	// from it (Consul transparent proxy's upstreams from intentions, Kuma's
	// reachable services).
	OutboundScope string `json:"outboundScope,omitempty"`
	// Tracing, when set, makes every gateway and sidecar send OpenTelemetry
	// spans to a collector (docs/observability.md). Unset: no tracing, at no
	// cost to the proxies.
	Tracing *Tracing `json:"tracing,omitempty"`
	// AccessLog, when set and enabled, makes every gateway and sidecar
	// write one JSON line per request (docs/observability.md, "Access
	// logs"). Unset: no access log, at no cost to the proxies.
	AccessLog *AccessLog `json:"accessLog,omitempty"`
	// RateLimitService, when set, is the global rate-limit service (meshgate
	// ratelimit) the proxies ask for TrafficPolicy rateLimit.global limits.
	RateLimitService *RateLimitService `json:"rateLimitService,omitempty"`
}

// Access-log defaults and formats.
const (
	// DefaultAccessLogPath is where the lines go when spec.accessLog.path
	// is unset: the proxy's standard output.
	DefaultAccessLogPath = "/dev/stdout"
	// AccessLogFormatJSON is the only format: one JSON object per line.
	AccessLogFormatJSON = "json"
)

// AccessLog is MeshConfig spec.accessLog: one line per request per proxy.
type AccessLog struct {
	// Enabled turns the access log on (default true when the section is
	// present; false keeps the section but writes nothing).
	Enabled *bool `json:"enabled,omitempty"`
	// Path is /dev/stdout (default), /dev/stderr, or an absolute file path
	// on the proxy's machine, appended to (and reopened when it is moved).
	Path string `json:"path,omitempty"`
	// Format is json (the default and only format).
	Format string `json:"format,omitempty"`
	// Fields, when set, replace the default fields: each is a JSON field
	// name and its value, an Envoy format string of command operators
	// (%RESPONSE_CODE%, %REQ(:PATH)%...) and literal text. The proxy's
	// role and name are added unless Fields names them.
	Fields map[string]string `json:"fields,omitempty"`
}

// Tracing protocols: how spans are sent to the collector (OTLP).
const (
	TracingProtocolGRPC = "grpc"
	TracingProtocolHTTP = "http"
)

// DefaultTracingSampling is the percentage of new traces sampled when
// spec.tracing.sampling is unset: 1%, enough to see a busy mesh's paths
// without its cost. A request that arrives with a trace context follows
// its parent's decision whatever this is.
const DefaultTracingSampling = 1.0

// Tracing is MeshConfig spec.tracing: where the proxies send their spans.
type Tracing struct {
	// Endpoint is the collector's OTLP receiver, ip:port (an OTel Collector,
	// Jaeger, ...). Required.
	Endpoint string `json:"endpoint,omitempty"`
	// Protocol is grpc (default: OTLP/gRPC, usually port 4317) or http
	// (OTLP/HTTP protobuf to /v1/traces, usually port 4318).
	Protocol string `json:"protocol,omitempty"`
	// Sampling is the percentage (0 to 100) of new traces sampled, default
	// DefaultTracingSampling.
	Sampling *float64 `json:"sampling,omitempty"`
	// ResourceAttributes are added to every span (a deployment, a region).
	ResourceAttributes map[string]string `json:"resourceAttributes,omitempty"`
}

// MTLS configures mutual TLS on a sidecar's inbound listener.
type MTLS struct {
	// Mode is STRICT or PERMISSIVE.
	Mode string `json:"mode,omitempty"`
}

// SecurityPolicy is the meshgate.dev/v1alpha1 SecurityPolicy: mTLS mode and
// authorization rules attached to Services, Gateways or HTTPRoutes of its
// namespace.
type SecurityPolicy struct {
	Name      string
	Namespace string
	// Annotations are the metadata's (meshgate dev reads
	// meshgate.dev/dev-jwt-provider).
	Annotations map[string]string
	Spec        SecurityPolicySpec
	Source      Source
	// failClosed: made by Evaluate in place of a rejected policy.
	failClosed bool
}

// SecurityPolicySpec is the spec of a SecurityPolicy.
type SecurityPolicySpec struct {
	// TargetRefs are the resources the policy applies to, in its namespace.
	TargetRefs []PolicyTargetRef `json:"targetRefs"`
	// MTLS sets the inbound mTLS mode of the targeted Services.
	MTLS *MTLS `json:"mtls,omitempty"`
	// Rules are evaluated DENY first, then ALLOW (see docs/security.md).
	Rules []SecurityRule `json:"rules,omitempty"`
	// ExtAuth checks every request of the targets with an external
	// authorization service (docs/api-gateway.md "External authorization").
	ExtAuth *ExtAuth `json:"extAuth,omitempty"`
	// JWT authenticates requests to the targets with JSON Web Tokens
	// (docs/api-gateway.md).
	JWT *JWTAuthentication `json:"jwt,omitempty"`
	// APIKey authenticates requests with API keys mapped to consumers.
	APIKey *APIKeyAuthentication `json:"apiKey,omitempty"`
	// BasicAuth authenticates requests with HTTP basic credentials.
	BasicAuth *BasicAuthentication `json:"basicAuth,omitempty"`
}

// APIKeyAuthentication requires a key of one of its consumers.
type APIKeyAuthentication struct {
	// ExtractFrom: where the key is; unset: the X-API-Key header.
	ExtractFrom *APIKeyExtractFrom `json:"extractFrom,omitempty"`
	// Consumers and the SHA-256 of their keys.
	Consumers []APIKeyConsumer `json:"consumers,omitempty"`
	// SecretRef names a Secret of the policy's namespace holding more
	// consumers: each data key a consumer's name, its value the SHA-256 of
	// its keys (hex, one per line).
	SecretRef *SecretObjectRef `json:"secretRef,omitempty"`
	// SecretConsumers are the consumers of SecretRef, filled by the loader.
	SecretConsumers []APIKeyConsumer `json:"-"`
	// ConsumersFile is a file of more consumers, NAME:SHA256 lines (a
	// path relative to the policy file's directory, or absolute), read by
	// the control plane and watched: a change is a reload
	// (Set.APIKeyFileConsumers).
	ConsumersFile string `json:"consumersFile,omitempty"`
	// ForwardConsumerHeader, when set, is a request header set to the
	// consumer's name for the backend.
	ForwardConsumerHeader string `json:"forwardConsumerHeader,omitempty"`
	// Forward keeps the key in the request sent on (default: removed).
	Forward bool `json:"forward,omitempty"`
}

// SecretObjectRef names a Secret in the referring policy's namespace.
type SecretObjectRef struct {
	Name string `json:"name"`
}

// APIKeyExtractFrom lists where a key may be, in order.
type APIKeyExtractFrom struct {
	Headers []string `json:"headers,omitempty"`
	Params  []string `json:"params,omitempty"`
	Cookies []string `json:"cookies,omitempty"`
}

// APIKeyConsumer is one API consumer: its name and the SHA-256 of its keys
// (64 hex digits each: echo -n KEY | sha256sum).
type APIKeyConsumer struct {
	Name    string   `json:"name"`
	SHA256s []string `json:"sha256"`
}

// BasicAuthentication requires the credentials of one of its users.
type BasicAuthentication struct {
	// Htpasswd is an htpasswd document: user:hash lines, bcrypt ($2y$...)
	// or {SHA}.
	Htpasswd string `json:"htpasswd"`
	// ForwardUsernameHeader, when set, is a request header set to the user's
	// name for the backend.
	ForwardUsernameHeader string `json:"forwardUsernameHeader,omitempty"`
}

// JWTAuthentication requires a valid JWT of one of its providers.
type JWTAuthentication struct {
	// Providers: a request needs a token one of them verifies.
	Providers []JWTProvider `json:"providers"`
	// Optional lets requests without a token through (unauthenticated); a
	// token that is present must still verify.
	Optional bool `json:"optional,omitempty"`
}

// JWTProvider is one issuer of tokens and the keys that verify them.
type JWTProvider struct {
	// Name is unique in the policy (a DNS label).
	Name string `json:"name"`
	// Issuer, when set, must equal the token's iss claim.
	Issuer string `json:"issuer,omitempty"`
	// Audiences, when set: the token's aud must hold one of them.
	Audiences []string `json:"audiences,omitempty"`
	// RemoteJWKS and LocalJWKS: exactly one is set.
	RemoteJWKS *RemoteJWKS `json:"remoteJWKS,omitempty"`
	LocalJWKS  *LocalJWKS  `json:"localJWKS,omitempty"`
	// ExtractFrom: where the token is; unset: Authorization: Bearer, then
	// the access_token query parameter.
	ExtractFrom *JWTExtractFrom `json:"extractFrom,omitempty"`
	// ClockSkew tolerated on exp, nbf and iat (a duration, default 60s).
	ClockSkew string `json:"clockSkew,omitempty"`
	// ClaimToHeaders copies claims into request headers for the backend.
	ClaimToHeaders []ClaimToHeader `json:"claimToHeaders,omitempty"`
	// Forward keeps the token in the request sent to the backend
	// (default: removed).
	Forward bool `json:"forward,omitempty"`
	// Consumers declares the consumers among the token subjects: their
	// requests and rate-limit refusals are counted by name in the
	// proxies' metrics (kind jwt). Other subjects are not counted by name.
	Consumers []JWTConsumer `json:"consumers,omitempty"`
}

// JWTConsumer names the API consumer whose tokens have one subject.
type JWTConsumer struct {
	// Name is the consumer's name (an RFC 1123 label, unique in the
	// provider), the label of its metrics.
	Name string `json:"name"`
	// Subject is the sub claim of the consumer's tokens (unique in the
	// provider).
	Subject string `json:"subject"`
}

// RemoteJWKS is a JWKS fetched from an HTTPS URL.
type RemoteJWKS struct {
	URI string `json:"uri"`
	// CacheDuration: how long fetched keys are used before a refresh
	// (default 10m).
	CacheDuration string `json:"cacheDuration,omitempty"`
	// Timeout bounds a fetch and a request's wait for the first one
	// (default 5s).
	Timeout string `json:"timeout,omitempty"`
}

// LocalJWKS is a JWKS given inline or in a file on the proxies' hosts
// (read again when it changes). Exactly one is set.
type LocalJWKS struct {
	Inline string `json:"inline,omitempty"`
	File   string `json:"file,omitempty"`
}

// JWTExtractFrom lists where a token may be: the first that holds one is
// used.
type JWTExtractFrom struct {
	Headers []JWTHeader `json:"headers,omitempty"`
	Params  []string    `json:"params,omitempty"`
	Cookies []string    `json:"cookies,omitempty"`
}

// JWTHeader is a request header holding a token after ValuePrefix
// ("Bearer ").
type JWTHeader struct {
	Name        string `json:"name"`
	ValuePrefix string `json:"valuePrefix,omitempty"`
}

// ClaimToHeader copies a claim ("a.b" for a nested one) into a header.
type ClaimToHeader struct {
	Header string `json:"header"`
	Claim  string `json:"claim"`
}

// ExtAuth is a SecurityPolicy's external authorization, after Envoy
// Gateway's SecurityPolicy extAuth: the service, the request headers sent
// to it, the body, what happens when it cannot answer, and how long it
// may take.
type ExtAuth struct {
	// HTTP or GRPC is the authorization service (exactly one).
	HTTP *HTTPExtAuthService `json:"http,omitempty"`
	GRPC *GRPCExtAuthService `json:"grpc,omitempty"`
	// HeadersToExtAuth are the request headers sent to the service (HTTP:
	// besides Host, Authorization, Content-Length, the method and path;
	// gRPC: none means all).
	HeadersToExtAuth []string `json:"headersToExtAuth,omitempty"`
	// BodyToExtAuth sends the first bytes of the request body along.
	BodyToExtAuth *BodyToExtAuth `json:"bodyToExtAuth,omitempty"`
	// FailureMode is Closed (the default: a check that fails denies the
	// request with 403) or Open (the request goes through).
	FailureMode string `json:"failureMode,omitempty"`
	// Timeout bounds a check (default 10s).
	Timeout gwapiv1.Duration `json:"timeout,omitempty"`
}

// HTTPExtAuthService is an HTTP authorization service: a 200 allows.
type HTTPExtAuthService struct {
	// BackendRef is the Service port of the authorization service.
	BackendRef gwapiv1.BackendObjectReference `json:"backendRef"`
	// Path is put in front of the request's path in the check.
	Path string `json:"path,omitempty"`
	// HeadersToBackend are the headers of the service's 200 set on the
	// request; none: every header but Host.
	HeadersToBackend []string `json:"headersToBackend,omitempty"`
}

// GRPCExtAuthService is an envoy.service.auth.v3 Authorization service.
type GRPCExtAuthService struct {
	// BackendRef is the Service port (HTTP/2) of the service.
	BackendRef gwapiv1.BackendObjectReference `json:"backendRef"`
}

// BodyToExtAuth says how much of the request body the service gets.
type BodyToExtAuth struct {
	// MaxRequestBytes is how many bytes at most (1 to 1048576); a longer
	// body is cut.
	MaxRequestBytes uint32 `json:"maxRequestBytes"`
}

// External authorization failure modes.
const (
	ExtAuthFailOpen   = "Open"
	ExtAuthFailClosed = "Closed"
)

// PolicyTargetRef names a resource in the policy's namespace: a Service
// (group "", unset or meshgate.dev), or a Gateway or HTTPRoute (group unset
// or gateway.networking.k8s.io).
type PolicyTargetRef struct {
	Group *string `json:"group,omitempty"`
	Kind  string  `json:"kind"`
	Name  string  `json:"name"`
}

// SecurityRule is one authorization rule. It matches a request when some
// entry of From and some entry of To match; an absent From or To matches
// everything.
type SecurityRule struct {
	// Name is optional, unique in the policy; it names the rule in logs.
	Name string `json:"name,omitempty"`
	// Action is ALLOW or DENY.
	Action string          `json:"action"`
	From   []RuleSource    `json:"from,omitempty"`
	To     []RuleOperation `json:"to,omitempty"`
}

// RuleSource matches the caller. Every field set must match (within a
// field, any value).
type RuleSource struct {
	// Services are "name" (the policy's namespace), "namespace/name", or "*"
	// (any mesh identity).
	Services []string `json:"services,omitempty"`
	// Identities are SPIFFE IDs; "*" matches within a path segment, "**"
	// across segments.
	Identities []string `json:"identities,omitempty"`
	// Namespaces match any identity of those namespaces.
	Namespaces []string `json:"namespaces,omitempty"`
	// IPBlocks are CIDRs or IP addresses of the TCP peer.
	IPBlocks []string `json:"ipBlocks,omitempty"`
	// Principals are authenticated principals: a JWT's subject (sub).
	Principals []string `json:"principals,omitempty"`
	// Claims match claims of the request's verified JWT: all must match.
	Claims []ClaimMatch `json:"claims,omitempty"`
}

// ClaimMatch matches one JWT claim ("a.b" for a nested one): a string claim
// equal to one of Values, or a list claim (or the space-separated scope)
// holding one of them.
type ClaimMatch struct {
	Name   string   `json:"name"`
	Values []string `json:"values"`
}

// RuleOperation matches the request. Every field set must match (within a
// field, any value).
type RuleOperation struct {
	Methods []string `json:"methods,omitempty"`
	// Paths: exact "/a"; prefix "/a/*"; "*" within a segment, "**" across.
	Paths   []string     `json:"paths,omitempty"`
	Headers []RuleHeader `json:"headers,omitempty"`
}

// RuleHeader matches a request header exactly.
type RuleHeader struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}
