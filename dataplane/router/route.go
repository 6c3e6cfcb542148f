package router

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Name is the route's name (may be empty).
func (rt *Route) Name() string { return rt.name }

// VirtualHost is the name of the virtual host holding the route.
func (rt *Route) VirtualHost() string { return rt.vhostName }

// Index is the route's position in its table's Routes: per-route state
// kept beside a table (metrics) is found by it without a lookup.
func (rt *Route) Index() int { return rt.index }

// ClusterNames returns the clusters a forward may go to: its cluster, or
// its weighted clusters in configuration order; none for a redirect or a
// direct response. It allocates: call it when compiling, not per request.
func (rt *Route) ClusterNames() []string {
	if rt.cluster != "" {
		return []string{rt.cluster}
	}
	names := make([]string, 0, len(rt.weighted))
	for _, w := range rt.weighted {
		names = append(names, w.name)
	}
	return names
}

// Action says what the route does: forward, redirect or direct response.
func (rt *Route) Action() ActionKind { return rt.kind }

// Timeout is the route timeout of a forward; 0 means none.
func (rt *Route) Timeout() time.Duration { return rt.timeout }

// HostRewrite is host_rewrite_literal, or "" to keep the client's Host.
func (rt *Route) HostRewrite() string { return rt.hostRewrite }

// TotalWeight is the sum of the weights of a weighted forward, or 0 for a
// single cluster.
func (rt *Route) TotalWeight() uint64 { return rt.totalWeight }

// PickCluster returns the cluster a forward goes to. For weighted clusters
// rnd selects the cluster: pass a uniformly random number (it is reduced
// modulo TotalWeight); it is ignored for a single cluster.
func (rt *Route) PickCluster(rnd uint64) string {
	if rt.weighted == nil {
		return rt.cluster
	}
	point := rnd % rt.totalWeight
	for i := range rt.weighted {
		if point < rt.weighted[i].cumulative {
			return rt.weighted[i].name
		}
	}
	return rt.weighted[len(rt.weighted)-1].name
}

// ClusterNotFoundStatus is the status a forward answers when the cluster it
// picked is not known to the proxy (cluster_not_found_response_code): 503
// (SERVICE_UNAVAILABLE, the default), 404 (NOT_FOUND) or 500
// (INTERNAL_SERVER_ERROR).
func (rt *Route) ClusterNotFoundStatus() int { return rt.clusterNotFound }

// RewritePath returns the upstream path for the escaped request path (no
// query) after prefix_rewrite or regex_rewrite; path itself when the route
// rewrites nothing.
func (rt *Route) RewritePath(path string) string {
	return rt.pathRewrite.apply(path)
}

// RewritesPath reports whether RewritePath may change the path.
func (rt *Route) RewritesPath() bool { return rt.pathRewrite.kind != rewriteNone }

func (p *pathRewrite) apply(path string) string {
	switch p.kind {
	case rewritePrefix:
		if len(path) < p.matchedLen {
			return p.prefix
		}
		return p.prefix + path[p.matchedLen:]
	case rewriteRegex:
		return p.regex.ReplaceAllString(path, p.substitution)
	}
	return path
}

// PerFilterConfig returns the most specific typed_per_filter_config compiled
// for the HTTP filter named name (see PerFilterCompiler): the route's, else
// its virtual host's, else its route configuration's; nil when none of them
// has one. It takes no lock and does not allocate.
func (rt *Route) PerFilterConfig(name string) any {
	for i := range rt.perFilter {
		if rt.perFilter[i].name == name {
			return rt.perFilter[i].configs[0]
		}
	}
	return nil
}

// PerFilterConfigs returns every typed_per_filter_config compiled for the
// HTTP filter named name, most specific first (route, virtual host, route
// configuration), for filters that combine them; nil when none. The caller
// must not modify the slice.
func (rt *Route) PerFilterConfigs(name string) []any {
	for i := range rt.perFilter {
		if rt.perFilter[i].name == name {
			return rt.perFilter[i].configs
		}
	}
	return nil
}

// DirectResponse returns the status and body of a direct response.
func (rt *Route) DirectResponse() (status int, body string) {
	return rt.directStatus, rt.directBody
}

// ApplyRequestHeaders applies request_headers_to_remove then
// request_headers_to_add to h, as Envoy does.
func (rt *Route) ApplyRequestHeaders(h http.Header) { rt.requestHeads.Apply(h) }

// ApplyResponseHeaders applies response_headers_to_remove then
// response_headers_to_add to h.
func (rt *Route) ApplyResponseHeaders(h http.Header) { rt.responseHeads.Apply(h) }

// Redirect returns the Location and status code of a redirect route for r.
// scheme is the request's scheme as the proxy sees it ("http" or "https",
// after X-Forwarded-Proto handling). The Location is
// scheme://host[:port]path[?query]; the port is omitted when it is the
// scheme's default or when neither the route nor the request gives one.
func (rt *Route) Redirect(r *http.Request, scheme string) (location string, code int) {
	d := &rt.redirect
	if d.scheme != "" {
		scheme = d.scheme
	}
	host, port := splitHostPort(r.Host)
	if d.host != "" {
		host, port = d.host, ""
		if h, p := splitHostPort(d.host); p != "" {
			host, port = h, p
		}
	}
	if d.port != 0 {
		port = strconv.FormatUint(uint64(d.port), 10)
	}
	if port == defaultPort(scheme) {
		port = ""
	}

	path := r.URL.EscapedPath()
	query := r.URL.RawQuery
	switch {
	case d.path != "" || d.hasQuery:
		path = d.path
		if d.hasQuery {
			query = d.pathQuery
		}
	case d.rewrite.kind != rewriteNone:
		path = d.rewrite.apply(path)
	}
	if d.stripQuery && !d.hasQuery {
		query = ""
	}

	var b strings.Builder
	b.Grow(len(scheme) + len(host) + len(port) + len(path) + len(query) + 6)
	b.WriteString(scheme)
	b.WriteString("://")
	if strings.IndexByte(host, ':') >= 0 { // IPv6 literal
		b.WriteByte('[')
		b.WriteString(host)
		b.WriteByte(']')
	} else {
		b.WriteString(host)
	}
	if port != "" {
		b.WriteByte(':')
		b.WriteString(port)
	}
	b.WriteString(path)
	if query != "" {
		b.WriteByte('?')
		b.WriteString(query)
	}
	return b.String(), d.code
}

// splitHostPort splits "host:port", "[v6]:port", "[v6]" or "host"; port is
// "" when absent.
func splitHostPort(hostport string) (host, port string) {
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		return h, p
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]"), ""
}

func defaultPort(scheme string) string {
	switch scheme {
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return ""
}
