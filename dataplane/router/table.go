package router

import (
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/meshgate/meshgate/dataplane/internal/headers"
	"github.com/meshgate/meshgate/dataplane/internal/match"
)

// DefaultTimeout is the route timeout when RouteAction.timeout is unset
// (Envoy's default).
const DefaultTimeout = 15 * time.Second

// ActionKind says what a matched route does with the request.
type ActionKind uint8

const (
	// ActionForward proxies the request to a cluster.
	ActionForward ActionKind = iota + 1
	// ActionRedirect answers with a redirect (see Route.Redirect).
	ActionRedirect
	// ActionDirectResponse answers with a fixed status and body.
	ActionDirectResponse
)

// Table is the compiled, immutable route table of one RouteConfiguration.
type Table struct {
	name     string
	exact    map[string]*virtualHost
	suffixes []wildcardDomain // "*.example.com": longest suffix first
	prefixes []wildcardDomain // "api.*": longest prefix first
	any      *virtualHost     // "*"
	// ignorePort: ignore_port_in_host_matching; the virtual host is chosen
	// by the Host without its port (the request keeps it).
	ignorePort bool
	clusters   []string
	// routes are every route of every virtual host, in configuration
	// order; each route's index is its position here.
	routes []*Route
	// perFilterTypes: the message types of typed_per_filter_config, by
	// filter name (every level).
	perFilterTypes map[string][]string
}

// wildcardDomain is a domain with a leading or trailing "*"; affix is the
// rest of it ("*.example.com" → ".example.com", "api.*" → "api.").
type wildcardDomain struct {
	affix string
	vhost *virtualHost
}

type virtualHost struct {
	name   string
	routes []*Route
}

// Route is one compiled route: its match conditions and its action. Its
// methods are safe for concurrent use and never modify the Route.
type Route struct {
	vhostName string
	name      string
	index     int // position in its Table's Routes

	match routeMatch

	kind ActionKind

	// tracing is Route.tracing's sampling, nil without.
	tracing *TracingSampling

	// ActionForward.
	cluster       string          // single cluster, or "" with weighted set
	weighted      []weightedEntry // cumulative weights, ascending
	totalWeight   uint64
	timeout       time.Duration
	pathRewrite   pathRewrite
	hostRewrite   string
	requestHeads  headers.List
	responseHeads headers.List
	// clusterHeads: a weighted cluster has header lists of its own.
	clusterHeads bool
	// retry is retry_policy (nil: none); mirrors request_mirror_policies.
	retry   *RetryPolicy
	mirrors []Mirror
	// hash is hash_policy (nil: none); idleTimeout is idle_timeout.
	hash        *HashPolicy
	idleTimeout time.Duration
	// webSocket is upgrade_configs (upgrade.go).
	webSocket WebSocket
	// grpcTimeout: max_stream_duration.grpc_timeout_header_max is set, the
	// request's grpc-timeout is its timeout, at most grpcTimeoutMax (0: no
	// bound) (grpc.go).
	grpcTimeout    bool
	grpcTimeoutMax time.Duration
	// attemptCountRequest and attemptCountResponse are the virtual host's
	// include_request_attempt_count and include_attempt_count_in_response.
	attemptCountRequest, attemptCountResponse bool

	// clusterNotFound is the status answered when the picked cluster is not
	// known to the proxy (cluster_not_found_response_code).
	clusterNotFound int

	// ActionRedirect.
	redirect redirect

	// ActionDirectResponse.
	directStatus int
	directBody   string

	// typed_per_filter_config of the route, its virtual host and route
	// configuration, by filter name (sorted); shared between the routes of
	// a virtual host that have none of their own.
	perFilter []perFilterConfig
}

// perFilterConfig is what the levels of typed_per_filter_config hold for one
// HTTP filter, compiled (PerFilterCompiler), most specific first.
type perFilterConfig struct {
	name    string
	configs []any
}

type weightedEntry struct {
	cumulative uint64 // sum of the weights up to and including this entry
	name       string
	// The cluster's request_headers_to_add/remove and response_....
	requestHeads, responseHeads headers.List
}

// pathKind is the kind of path condition of a route.
type pathKind uint8

const (
	pathPrefix pathKind = iota + 1
	pathExact
	pathSeparatedPrefix
	pathRegex
)

type routeMatch struct {
	kind          pathKind
	value         string         // prefix or exact path
	regex         *regexp.Regexp // pathRegex, anchored
	caseSensitive bool
	headers       []match.Header
	queries       []queryMatcher
	// grpc: the request must be gRPC (Envoy's RouteMatch grpc option: a
	// content-type of application/grpc or application/grpc+...), or
	// gRPC-Web, which the grpc_web filter makes gRPC after the route is
	// chosen.
	grpc bool
}

type queryMatcher struct {
	name    string
	present bool // present_match: true; otherwise str applies
	str     match.String
}

// rewriteKind is the kind of path rewrite of a forward or redirect.
type rewriteKind uint8

const (
	rewriteNone rewriteKind = iota
	rewritePrefix
	rewriteRegex
)

type pathRewrite struct {
	kind         rewriteKind
	prefix       string // rewritePrefix: replaces the matched prefix
	matchedLen   int    // rewritePrefix: length of the matched prefix
	regex        *regexp.Regexp
	substitution string // in Go's Expand syntax
}

type redirect struct {
	code       int
	scheme     string // "" keeps the request's scheme
	host       string // "" keeps the request's host
	port       uint32 // 0 keeps the request's port
	path       string // path_redirect without its query; "" when unset
	pathQuery  string // query of path_redirect, if it had one
	hasQuery   bool   // path_redirect carried a query (it replaces the request's)
	rewrite    pathRewrite
	stripQuery bool
}

// Name is the RouteConfiguration name the table was compiled from.
func (t *Table) Name() string { return t.name }

// PerFilterTypes returns the message types of the table's
// typed_per_filter_config values (route, virtual host and route
// configuration levels), sorted, by filter name; nil when it has none. The
// caller must not modify it.
func (t *Table) PerFilterTypes() map[string][]string { return t.perFilterTypes }

// Clusters returns every cluster name the table's routes reference, sorted
// and unique. The caller must not modify the slice.
func (t *Table) Clusters() []string { return t.clusters }

// Routes returns every route of the table, in configuration order: route
// rt is Routes()[rt.Index()]. The caller must not modify the slice.
func (t *Table) Routes() []*Route {
	if t == nil {
		return nil
	}
	return t.routes
}

// RoutesTo reports whether a route of the table forwards to the cluster
// named name.
func (t *Table) RoutesTo(name string) bool {
	_, ok := slices.BinarySearch(t.clusters, name)
	return ok
}

// Match returns the first route of the selected virtual host that matches r,
// or nil when no virtual host or route matches (or t is nil). It reads r.Host
// (without its port when the table has ignore_port_in_host_matching; the
// listener has already removed it when strip_any_host_port is set),
// r.Method, r.URL, r.Header and r.TLS, and modifies nothing.
func (t *Table) Match(r *http.Request) *Route {
	if t == nil || r.URL == nil {
		return nil
	}
	host := r.Host
	if t.ignorePort {
		host = HostWithoutPort(host)
	}
	vh := t.selectVirtualHost(host)
	if vh == nil {
		return nil
	}
	path := r.URL.EscapedPath()
	for _, rt := range vh.routes {
		if rt.match.matches(r, path) {
			return rt
		}
	}
	return nil
}

// selectVirtualHost applies Envoy's domain precedence.
func (t *Table) selectVirtualHost(host string) *virtualHost {
	host = lowerASCII(host)
	if vh, ok := t.exact[host]; ok {
		return vh
	}
	for _, w := range t.suffixes {
		if len(host) > len(w.affix) && strings.HasSuffix(host, w.affix) {
			return w.vhost
		}
	}
	for _, w := range t.prefixes {
		if len(host) > len(w.affix) && strings.HasPrefix(host, w.affix) {
			return w.vhost
		}
	}
	return t.any
}

// HostWithoutPort removes a ":port" suffix from a Host header value, as
// Envoy does for strip_any_host_port and ignore_port_in_host_matching
// ("[::1]:80" becomes "[::1]"; an unbracketed IPv6 literal is kept whole).
// It does not allocate.
func HostWithoutPort(host string) string {
	i := strings.LastIndexByte(host, ':')
	if i < 0 {
		return host
	}
	if host[0] == '[' {
		if host[i-1] != ']' {
			return host // a bracketed IPv6 literal without a port
		}
	} else if strings.IndexByte(host[:i], ':') >= 0 {
		return host // unbracketed IPv6 literal: no port to strip
	}
	return host[:i]
}

// lowerASCII lowercases s, allocating only when s has an upper-case letter.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

func sortWildcards(ws []wildcardDomain) {
	sort.SliceStable(ws, func(i, j int) bool { return len(ws[i].affix) > len(ws[j].affix) })
}
