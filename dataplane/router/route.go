package router

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meshgate/meshgate/dataplane/rbac"
)

// Name is the route's name (may be empty).
func (rt *Route) Name() string { return rt.name }

// VirtualHost is the name of the virtual host holding the route.
func (rt *Route) VirtualHost() string { return rt.vhostName }

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

// RBACOverride returns the route's override of the RBAC filter called name
// (rbac.DenyFilterName or rbac.AllowFilterName): set is false when the route
// has none and the listener's filter applies; otherwise f replaces it on
// this route, and a nil f means the filter is disabled here.
func (rt *Route) RBACOverride(name string) (f *rbac.Filter, set bool) {
	switch name {
	case rbac.DenyFilterName:
		return rt.rbacDeny.filter, rt.rbacDeny.set
	case rbac.AllowFilterName:
		return rt.rbacAllow.filter, rt.rbacAllow.set
	}
	return nil, false
}

// DirectResponse returns the status and body of a direct response.
func (rt *Route) DirectResponse() (status int, body string) {
	return rt.directStatus, rt.directBody
}

// ApplyRequestHeaders applies request_headers_to_remove then
// request_headers_to_add to h, as Envoy does.
func (rt *Route) ApplyRequestHeaders(h http.Header) { rt.requestHeads.apply(h) }

// ApplyResponseHeaders applies response_headers_to_remove then
// response_headers_to_add to h.
func (rt *Route) ApplyResponseHeaders(h http.Header) { rt.responseHeads.apply(h) }

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

// headerMutation is a compiled list of header removals and additions.
type headerMutation struct {
	remove []string // canonical keys
	add    []headerAdd
}

// appendAction mirrors envoy.config.core.v3.HeaderValueOption.HeaderAppendAction.
type appendAction uint8

const (
	appendIfExistsOrAdd appendAction = iota
	addIfAbsent
	overwriteIfExistsOrAdd
	overwriteIfExists
)

type headerAdd struct {
	key    string // canonical
	value  string
	action appendAction
}

func (m *headerMutation) apply(h http.Header) {
	for _, k := range m.remove {
		delete(h, k)
	}
	for i := range m.add {
		a := &m.add[i]
		_, exists := h[a.key]
		switch a.action {
		case appendIfExistsOrAdd:
			h[a.key] = append(h[a.key], a.value)
		case addIfAbsent:
			if !exists {
				h[a.key] = []string{a.value}
			}
		case overwriteIfExistsOrAdd:
			h[a.key] = []string{a.value}
		case overwriteIfExists:
			if exists {
				h[a.key] = []string{a.value}
			}
		}
	}
}
