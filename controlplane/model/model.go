// Package model compiles a validated policy.Set into meshgate's immutable
// routing model: services with their ports and endpoints, gateways with their
// listeners grouped by port, and for every gateway hostname and every service
// the route rules attached to it, already sorted in Gateway API precedence
// order. The model knows nothing of xDS; controlplane/translate turns it into
// Envoy resources per node.
package model

import (
	"net/netip"
	"regexp"
	"strconv"
	"time"
)

// Model is the compiled, immutable routing model. It must not be modified
// after Compile returns it; every node's translation reads it concurrently.
type Model struct {
	// Version is a hash of the model's content: equal inputs give equal versions.
	Version string `json:"-"`
	// RoutingVersion hashes everything but the endpoints (it does include
	// whether each service port has a sidecar endpoint): two models with
	// the same RoutingVersion differ at most in their endpoints, which only
	// the ClusterLoadAssignments carry (see EndpointChanges).
	RoutingVersion string `json:"-"`
	// PolicyVersion identifies the policy documents the model was compiled
	// from (see PolicyVersion and CompileWith): the files or KV entries an
	// operator writes, not the services a discovery source adds. Two models
	// with the same PolicyVersion differ only by what was discovered; empty
	// when the compiler was not told.
	PolicyVersion string `json:"-"`
	// Services sorted by namespace, then name.
	Services []*Service `json:"services"`
	// Gateways sorted by namespace, then name.
	Gateways []*Gateway `json:"gateways"`
	// Mesh is the mesh-wide identity and security configuration.
	Mesh Mesh `json:"mesh"`
	// Problems are the resources of the set the compiler could not
	// represent, left out (see Compile): bugs, as the policy validated them.
	Problems []CompileProblem `json:"-"`

	services map[NamespacedName]*Service
	gateways map[NamespacedName]*Gateway
	// regexps are the compiled identity patterns of the authorizations.
	regexps map[string]*regexp.Regexp
	// reach indexes the services' authorizations for CallableBy.
	reach *reachIndex

	// endpoints is the endpoint index: the endpoints of every service port
	// by cluster name, what the ClusterLoadAssignments are built from.
	// static are those of the policy's Services (spec.endpoints); the
	// discovered services' are added to them (WithDiscovered).
	endpoints, static map[string][]*Endpoint
	// routingDigest hashes the model without its endpoints (hashRouting).
	routingDigest []byte
}

// NamespacedName identifies a resource.
type NamespacedName struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// String returns "namespace/name".
func (n NamespacedName) String() string { return n.Namespace + "/" + n.Name }

// Service returns the service namespace/name, or nil.
func (m *Model) Service(namespace, name string) *Service {
	return m.services[NamespacedName{Namespace: namespace, Name: name}]
}

// Gateway returns the gateway namespace/name, or nil.
func (m *Model) Gateway(namespace, name string) *Gateway {
	return m.gateways[NamespacedName{Namespace: namespace, Name: name}]
}

// Service protocols on the wire to its endpoints.
const (
	ProtocolHTTP  = "HTTP"
	ProtocolHTTP2 = "HTTP2"
)

// Service is a callable service.
type Service struct {
	NamespacedName
	// Ports in declaration order; at least one.
	Ports []*ServicePort `json:"ports"`
	// MTLSMode of the service's sidecar inbound listeners: its
	// SecurityPolicy's mtls.mode, else the mesh's.
	MTLSMode string `json:"mtlsMode"`
	// Authorization enforced at the service's sidecar inbound listeners;
	// nil: none.
	Authorization *Authorization `json:"authorization,omitempty"`
	// ExtAuth of its SecurityPolicies, checking every request at the
	// service's sidecar inbound listeners; nil: none.
	ExtAuth *ExtAuth `json:"extAuth,omitempty"`
	// Authentication required at the service's sidecar inbound
	// listeners; nil: none.
	Authentication *Authentication `json:"authentication,omitempty"`
	// VIP is the service's virtual IPv4 address, from the range of the
	// compiler's ServiceAddressing (vip.go): stable as documented there.
	// Invalid (zero) when the range is full.
	VIP netip.Addr `json:"vip,omitzero"`
	// Hostnames are the DNS names the service answers to in the mesh
	// (servicemeta.Hostnames): "name", "name.namespace",
	// "name.namespace.svc.<domain>".
	Hostnames []string `json:"hostnames,omitempty"`
}

// DefaultPort is the port a call without a port in its Host reaches: port 80
// when the service has it, else its first port.
func (s *Service) DefaultPort() *ServicePort {
	if p := s.Port(80); p != nil {
		return p
	}
	return s.Ports[0]
}

// Port returns the service port with that number, or nil.
func (s *Service) Port(number int32) *ServicePort {
	for _, p := range s.Ports {
		if p.Number == number {
			return p
		}
	}
	return nil
}

// ServicePort is one port of a service, with the endpoints that serve it.
type ServicePort struct {
	Name     string `json:"name,omitempty"`
	Number   int32  `json:"number"`
	Protocol string `json:"protocol"`
	// Cluster is the name of the cluster that load balances this port.
	// Its endpoints are in the model's endpoint index (Model.Endpoints).
	Cluster string `json:"cluster"`
	// Routes are the rules of the producer HTTPRoutes of this port: those
	// in the service's namespace whose parentRef is this service (the
	// Gateway API mesh profile) without a port and sectionName, or with this
	// port's number or name; in precedence order. They shape the calls of
	// every caller without consumer routes for the port.
	Routes []*Rule `json:"routes,omitempty"`
	// ConsumerRoutes are, by namespace, the rules of the consumer HTTPRoutes
	// of this port: routes in another namespace than the service's whose
	// parentRef selects this port as above; in precedence order. They shape
	// the calls of the callers in their namespace only, instead of Routes.
	ConsumerRoutes map[string][]*Rule `json:"consumerRoutes,omitempty"`
	// Traffic is what the TrafficPolicies of the service set on the
	// port's cluster; nil: none.
	Traffic *ClusterTraffic `json:"traffic,omitempty"`
	// RouteTraffic is what they set on the routes to the port, unless a
	// gateway's or the route's own policy sets it; nil: none.
	RouteTraffic *RouteTraffic `json:"routeTraffic,omitempty"`
	// BackendTLS is the TLS its BackendTLSPolicy asks of the connections
	// to the port's endpoints that are not sidecars (sidecars keep mesh
	// mTLS); nil: plaintext.
	BackendTLS *BackendTLS `json:"backendTLS,omitempty"`
}

// BackendTLS is TLS to a service port's endpoints, from a BackendTLSPolicy:
// SNI Hostname, the certificate verified against CAPEM (or the system's
// CAs) and SubjectAltNames (else Hostname).
type BackendTLS struct {
	Policy          string           `json:"policy"`
	Hostname        string           `json:"hostname"`
	SubjectAltNames []SubjectAltName `json:"subjectAltNames,omitempty"`
	CAPEM           []byte           `json:"caPEM,omitempty"`
	SystemCA        bool             `json:"systemCA,omitempty"`
}

// SubjectAltName is a DNS name (Type Hostname) or a URI a backend
// certificate may have.
type SubjectAltName struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// FailClosed reports whether no CA is valid: the connections must fail.
func (t *BackendTLS) FailClosed() bool { return len(t.CAPEM) == 0 && !t.SystemCA }

// RoutesFor returns the rules that shape the calls to p of a caller in
// namespace callerNamespace: the consumer routes of that namespace when it
// has some for p, else the producer routes (GEP-1294). Empty: calls go to
// the port's own endpoints.
func (p *ServicePort) RoutesFor(callerNamespace string) []*Rule {
	if rules, ok := p.ConsumerRoutes[callerNamespace]; ok {
		return rules
	}
	return p.Routes
}

// Endpoint is one instance serving a service port.
type Endpoint struct {
	Host   string            `json:"host"`
	Port   uint32            `json:"port"`
	Labels map[string]string `json:"labels,omitempty"`
	// Sidecar: the endpoint is a meshgate sidecar's inbound listener.
	Sidecar bool `json:"sidecar,omitempty"`
}

// ClusterName is the name of the cluster of a service port:
// "<namespace>/<service>:<port>".
func ClusterName(namespace, service string, port int32) string {
	return namespace + "/" + service + ":" + strconv.Itoa(int(port))
}

// Gateway is a Gateway resource, its listeners grouped by port.
type Gateway struct {
	NamespacedName
	// Address is the IP address the gateway's listeners bind.
	Address string `json:"address"`
	// AdditionalAddresses are the other IP addresses its listeners bind
	// (a Gateway with several spec.addresses): each listener is served on
	// Address and on each of them.
	AdditionalAddresses []string `json:"additionalAddresses,omitempty"`
	// Ports sorted ascending.
	Ports []*GatewayPort `json:"ports"`
	// Authorization enforced at every listener of the gateway; nil: none.
	Authorization *Authorization `json:"authorization,omitempty"`
	// ExtAuth of its SecurityPolicies, checking every request of a rule
	// without an external authorization of its own; nil: none.
	ExtAuth *ExtAuth `json:"extAuth,omitempty"`
	// Authentication required at every route of the gateway that has
	// none of its own; nil: none.
	Authentication *Authentication `json:"authentication,omitempty"`
}

// RuleCount is the number of route rules (one per match) on every port and
// hostname of the gateway.
func (g *Gateway) RuleCount() int {
	n := 0
	for _, p := range g.Ports {
		for _, vh := range p.VirtualHosts {
			n += len(vh.Rules)
		}
	}
	return n
}

// GatewayPort is every listener of a gateway on one port.
type GatewayPort struct {
	Number int32 `json:"number"`
	// VirtualHosts sorted by hostname; "*" stands for any host.
	VirtualHosts []*VirtualHost `json:"virtualHosts,omitempty"`
	// Traffic is what the TrafficPolicies of the gateway (or of a listener
	// on this port) set on its routes; nil: none.
	Traffic *RouteTraffic `json:"traffic,omitempty"`
	// TLS, when the port's listeners are HTTPS, is their certificates and
	// TLS settings; nil: plaintext HTTP.
	TLS *PortTLS `json:"tls,omitempty"`
	// L4, when the port's listeners are TCP or TLS (Passthrough), is where
	// its connections go (l4.go); nil for HTTP and HTTPS.
	L4 *PortL4 `json:"l4,omitempty"`
}

// PortTLS is the TLS termination of a port of HTTPS listeners: one chain
// per listener, chosen by the client's SNI (the listener's hostname,
// exactly or as a "*." wildcard; a listener without a hostname is the
// default, for no or an unknown SNI).
type PortTLS struct {
	// Chains in listener order.
	Chains []*TLSChain `json:"chains"`
}

// TLSChain is one HTTPS listener: the certificates it presents.
type TLSChain struct {
	// Listener is "<owner namespace>/<owner name>/<listener name>".
	Listener string `json:"listener"`
	// Hostname is the listener's hostname, "*" when it has none.
	Hostname string `json:"hostname"`
	// Certificates of its certificateRefs, in order (one per key type).
	Certificates []*Certificate `json:"certificates"`
	// MinVersion is "1.2" or "1.3".
	MinVersion string `json:"minVersion"`
	// CipherSuites are OpenSSL names; none: the proxy's defaults.
	CipherSuites []string `json:"cipherSuites,omitempty"`
	// ACME, when set, says that the certificate is obtained over ACME
	// (Certificates are then added by WithACME).
	ACME *ACMECertificate `json:"acme,omitempty"`
	// ApplicationProtocols, when set, make the chain one for the clients
	// that offer one of them by ALPN, for its exact Hostname, offering
	// them (an ACME TLS-ALPN-01 challenge's: WithACME); not a listener.
	ApplicationProtocols []string `json:"applicationProtocols,omitempty"`
}

// Certificate is a listener certificate from a TLS Secret. Its key is
// never shown (not in the model's JSON).
type Certificate struct {
	// Secret is "namespace/name".
	Secret string `json:"secret"`
	// Digest identifies the content (a SHA-256 of certificate and key), so
	// that a changed certificate changes the model's version.
	Digest  string `json:"digest"`
	CertPEM []byte `json:"-"`
	KeyPEM  []byte `json:"-"`
}

// VirtualHost is the route rules that apply to requests for one hostname.
type VirtualHost struct {
	// Hostname is an exact hostname, a "*.suffix" wildcard, or "*".
	Hostname string `json:"hostname"`
	// Rules in precedence order.
	Rules []*Rule `json:"rules"`
	// HSTS is the Strict-Transport-Security header of every response, from
	// the tls.options of the HTTPS listener the hostname belongs to; "":
	// none.
	HSTS string `json:"hsts,omitempty"`
}

// Rule is one match of one HTTPRoute rule, with the rule's action. A rule with
// N matches becomes N Rules sharing one Action.
type Rule struct {
	// Route is the HTTPRoute this rule comes from.
	Route NamespacedName `json:"route"`
	// routeCreated is the route's metadata.creationTimestamp: of equal
	// matches, the oldest route's wins.
	routeCreated time.Time
	// RuleIndex and MatchIndex locate the match in the route.
	RuleIndex  int     `json:"ruleIndex"`
	MatchIndex int     `json:"matchIndex"`
	Match      Match   `json:"match"`
	Action     *Action `json:"action"`
	// TracingSampling, when set, is the percentage of the rule's requests
	// that start a trace sampled, in place of the mesh's (the route's
	// policy.AnnotationTracingSampling).
	TracingSampling *float64 `json:"tracingSampling,omitempty"`
	// Authorization of the SecurityPolicies targeting the route, enforced
	// wherever its rules are (merged with the gateway's at a gateway); nil:
	// none.
	Authorization *Authorization `json:"authorization,omitempty"`
	// Authentication of the SecurityPolicies targeting the route: at a
	// gateway it replaces the gateway's; nil: none.
	Authentication *Authentication `json:"authentication,omitempty"`
	// Traffic of the TrafficPolicies targeting the route (or this rule);
	// nil: none.
	Traffic *RouteTraffic `json:"traffic,omitempty"`
}

// PathMatchKind is how a path is matched.
type PathMatchKind string

// Path match kinds.
const (
	PathExact  PathMatchKind = "Exact"
	PathPrefix PathMatchKind = "PathPrefix"
	PathRegex  PathMatchKind = "RegularExpression"
)

// PathMatch matches the request path.
type PathMatch struct {
	Kind  PathMatchKind `json:"kind"`
	Value string        `json:"value"`
}

// ValueMatch matches a named header or query parameter.
type ValueMatch struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	// Regex: Value is an RE2 expression that must match the whole value.
	Regex bool `json:"regex,omitempty"`
}

// Match is every condition of one HTTPRouteMatch (all must hold).
type Match struct {
	Path        PathMatch    `json:"path"`
	Method      string       `json:"method,omitempty"`
	Headers     []ValueMatch `json:"headers,omitempty"`
	QueryParams []ValueMatch `json:"queryParams,omitempty"`
	// GRPC: gRPC requests only (content-type application/grpc), the rules
	// of a GRPCRoute.
	GRPC bool `json:"grpc,omitempty"`
}

// Action is what a matched request gets.
type Action struct {
	// Backends to forward to, when there is no Redirect.
	Backends []*Backend `json:"backends,omitempty"`
	// Redirect answers with a redirect instead of forwarding.
	Redirect *Redirect `json:"redirect,omitempty"`
	// DirectResponse answers with a fixed response instead of forwarding
	// (the HTTP-01 challenges of ACME listeners: WithACME).
	DirectResponse *DirectResponse `json:"directResponse,omitempty"`
	// Rewrite changes the forwarded request's host or path.
	Rewrite         *Rewrite        `json:"rewrite,omitempty"`
	RequestHeaders  *HeaderModifier `json:"requestHeaders,omitempty"`
	ResponseHeaders *HeaderModifier `json:"responseHeaders,omitempty"`
	// Timeout of the whole request; nil: none configured. Zero disables it.
	Timeout *time.Duration `json:"timeout,omitempty"`
	// BackendRequestTimeout bounds each request to a backend (each try when
	// the rule retries); nil: none configured. Zero disables it.
	BackendRequestTimeout *time.Duration `json:"backendRequestTimeout,omitempty"`
	// Retry is the rule's retry policy; nil: no retries.
	Retry *Retry `json:"retry,omitempty"`
	// Mirrors are the rule's RequestMirror filters, in order.
	Mirrors []*Mirror `json:"mirrors,omitempty"`
	// CORS is the rule's CORS filter; nil: none.
	CORS *CORS `json:"cors,omitempty"`
	// ExtAuth is the rule's ExternalAuth filter; nil: none.
	ExtAuth *ExtAuth `json:"extAuth,omitempty"`
}

// ExtAuth is an external authorization: each request is checked by an
// authorization service before it goes further (Gateway API
// HTTPExternalAuthFilter).
type ExtAuth struct {
	// Protocol is ExtAuthHTTP or ExtAuthGRPC.
	Protocol string `json:"protocol"`
	// Backend is the authorization service; its Cluster is empty when the
	// reference does not resolve (every request is then denied, as when
	// the service cannot be reached).
	Backend Backend `json:"backend"`
	// PathPrefix (HTTP) is put in front of the request's path in the check
	// request.
	PathPrefix string `json:"pathPrefix,omitempty"`
	// AllowedHeaders are the request headers sent to the service (HTTP: in
	// addition to Host, Method, Path, Content-Length and Authorization,
	// always sent; gRPC: none means all).
	AllowedHeaders []string `json:"allowedHeaders,omitempty"`
	// AllowedUpstreamHeaders (HTTP) are the headers of the service's
	// answer copied onto an allowed request; none means all but Host.
	AllowedUpstreamHeaders []string `json:"allowedUpstreamHeaders,omitempty"`
	// MaxBodyBytes is how much of the request body is sent along; 0: none.
	MaxBodyBytes uint32 `json:"maxBodyBytes,omitempty"`
	// Timeout bounds a check; FailOpen lets a request through when the
	// check fails (no answer in time, service unreachable) rather than
	// denying it with 403.
	Timeout  time.Duration `json:"timeout"`
	FailOpen bool          `json:"failOpen,omitempty"`
}

// External authorization protocols, and the default timeout of a check
// (Envoy Gateway's).
const (
	ExtAuthHTTP           = "HTTP"
	ExtAuthGRPC           = "GRPC"
	DefaultExtAuthTimeout = 10 * time.Second
)

// CORS is a rule's CORS filter (Gateway API HTTPCORSFilter), as written:
// origins may hold wildcards ("*", "https://*.example.com"), methods and
// headers may be "*".
type CORS struct {
	AllowOrigins     []string `json:"allowOrigins,omitempty"`
	AllowMethods     []string `json:"allowMethods,omitempty"`
	AllowHeaders     []string `json:"allowHeaders,omitempty"`
	ExposeHeaders    []string `json:"exposeHeaders,omitempty"`
	AllowCredentials bool     `json:"allowCredentials,omitempty"`
	// MaxAge is how long a client may cache a preflight's answer, in
	// seconds: 5 when the filter does not say (the Gateway API default).
	MaxAge int32 `json:"maxAge"`
}

// DefaultCORSMaxAge is the Gateway API default of a CORS filter's maxAge.
const DefaultCORSMaxAge = 5

// Retry is a rule's retry stanza (Gateway API HTTPRouteRetry).
type Retry struct {
	// Codes are the response statuses that are retried (connection
	// failures and resets always are).
	Codes []int `json:"codes,omitempty"`
	// Attempts is the most retries after the first try; nil: the default.
	Attempts *int `json:"attempts,omitempty"`
	// Backoff is the least wait before a retry; nil: the default.
	Backoff *time.Duration `json:"backoff,omitempty"`
}

// Mirror is one RequestMirror filter: a copy of a share of the requests
// goes to the backend, its answer ignored.
type Mirror struct {
	Backend Backend `json:"backend"`
	// Numerator/Denominator is the share of the requests mirrored
	// (percent: n/100; fraction: as written); 1/1 when neither is set.
	Numerator   int32 `json:"numerator"`
	Denominator int32 `json:"denominator"`
}

// Backend is one backendRef of a rule.
type Backend struct {
	Service NamespacedName `json:"service"`
	Port    int32          `json:"port"`
	Weight  int32          `json:"weight"`
	// Cluster is the cluster name; empty when the reference does not resolve
	// to a known service port (requests for it get a 500).
	Cluster string `json:"cluster,omitempty"`
	// RequestHeaders and ResponseHeaders are the backendRef's own header
	// modifier filters, for the requests sent to this backend only.
	RequestHeaders  *HeaderModifier `json:"requestHeaders,omitempty"`
	ResponseHeaders *HeaderModifier `json:"responseHeaders,omitempty"`
}

// Header is a header name and value.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// HeaderModifier edits request or response headers.
type HeaderModifier struct {
	Set    []Header `json:"set,omitempty"`
	Add    []Header `json:"add,omitempty"`
	Remove []string `json:"remove,omitempty"`
}

// PathModifierKind is how a path is rewritten.
type PathModifierKind string

// Path modifier kinds.
const (
	ReplaceFullPath    PathModifierKind = "ReplaceFullPath"
	ReplacePrefixMatch PathModifierKind = "ReplacePrefixMatch"
)

// PathModifier rewrites the request path.
type PathModifier struct {
	Kind  PathModifierKind `json:"kind"`
	Value string           `json:"value"`
}

// Rewrite is a URLRewrite filter.
type Rewrite struct {
	Hostname string        `json:"hostname,omitempty"`
	Path     *PathModifier `json:"path,omitempty"`
}

// Redirect is a RequestRedirect filter.
type Redirect struct {
	Scheme   string        `json:"scheme,omitempty"`
	Hostname string        `json:"hostname,omitempty"`
	Port     int32         `json:"port,omitempty"`
	Path     *PathModifier `json:"path,omitempty"`
	// StatusCode is 301 or 302 (default).
	StatusCode int `json:"statusCode"`
}
