// Package httpfilter is the contract between the proxy and its HTTP filters,
// modelled on Envoy's extensions: a filter is known by the type of its
// standard Envoy config message (envoy.extensions.filters.http.rbac.v3.RBAC,
// ...) and described by a Factory, which the registry (dataplane/filters)
// maps from that type. The factory compiles the listener-level typed_config
// of an HttpConnectionManager's http_filters entry into a Filter, and its
// per-route config (typed_per_filter_config, keyed by the entry's name) into
// an opaque value the router keeps on each route.
//
// At request time a Filter is middleware in the net/http style: Wrap returns
// a Handler that may answer locally (LocalReply), change the request, wrap
// the ResponseWriter (ResponseWriter), or call next. The proxy runs them in
// http_filters order after the route is selected, with the route (nil when
// none matched) so that a filter reads its per-route config with
// rt.PerFilterConfig(name); the router, the terminal filter, comes last.
//
// Everything a Factory builds is immutable and safe for concurrent use:
// filters are compiled once per accepted listener, wrapped once per
// configuration swap, and then only called.
package httpfilter

import (
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// Handler serves one request once its route is selected: rt is the matched
// route, nil when none matched (the router then answers 404).
type Handler interface {
	ServeHTTP(w http.ResponseWriter, r *http.Request, rt *router.Route)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(w http.ResponseWriter, r *http.Request, rt *router.Route)

// ServeHTTP calls f(w, r, rt).
func (f HandlerFunc) ServeHTTP(w http.ResponseWriter, r *http.Request, rt *router.Route) {
	f(w, r, rt)
}

// Filter is one compiled http_filters entry (its listener-level config).
type Filter interface {
	// Wrap returns the handler that runs the filter in front of next. It is
	// called once each time a listener's configuration is swapped in, never
	// per request; the handler must be safe for concurrent use.
	Wrap(next Handler) Handler
}

// Factory describes one HTTP filter type to the registry.
type Factory struct {
	// ConfigType is the full name of the filter's listener-level config
	// message, whose type URL ("type.googleapis.com/" + ConfigType) keys
	// the registry: envoy.extensions.filters.http.rbac.v3.RBAC.
	ConfigType protoreflect.FullName
	// PerRouteType is the full name of its per-route config message
	// (envoy.extensions.filters.http.rbac.v3.RBACPerRoute; some filters
	// use ConfigType again), "" when it has none.
	PerRouteType protoreflect.FullName
	// Rules is the filter's part of the xDS subset: the rules of
	// ConfigType, PerRouteType and the messages inside them that the core
	// subset does not have (xdscheck). Anything else is NACKed.
	Rules xdscheck.Rules
	// Stats names the counter families the filter reports in the proxy's
	// /stats (Env.Stats), present (empty) before the first count.
	Stats []string
	// New compiles the listener-level config of the http_filters entry
	// called name. config has passed the registry's check (Rules); errors
	// name the field relative to config.
	New func(name string, config proto.Message, env Env) (Filter, error)
	// NewPerRoute compiles a per-route config (of type PerRouteType, checked
	// like config); nil when PerRouteType is "". The value is what the
	// filter's handler gets back from router.Route.PerFilterConfig.
	NewPerRoute func(config proto.Message) (any, error)
	// TypeURL, for a meshgate filter that Envoy has no config message for,
	// is the type_url of the xds.type.v3.TypedStruct carrying its config
	// (meshgate.dev/filters.http.<name>.v1.<Name>): listener-level in the
	// http_filters entry, per route inside an envoy.config.route.v3.
	// FilterConfig. ConfigType, PerRouteType and Rules are then empty;
	// CheckValue checks the TypedStruct's value, and New and NewPerRoute
	// (both required) receive that value, a *structpb.Struct (never nil).
	TypeURL    string
	CheckValue func(value *structpb.Struct) []xdscheck.Violation
}

// Subset is the filter's part of the xDS subset, for xdscheck.New.
func (f *Factory) Subset() xdscheck.HTTPFilter {
	return xdscheck.HTTPFilter{ConfigType: f.ConfigType, PerRouteType: f.PerRouteType, Rules: f.Rules,
		TypeURL: f.TypeURL, CheckValue: f.CheckValue}
}

// Upstreams sends requests to the proxy's clusters, for a filter that
// calls a service (an authorization service) through them.
type Upstreams interface {
	// RoundTrip sends r to an endpoint of the cluster named cluster (it
	// sets r.URL's scheme and host), bounded by timeout up to the end of
	// the response body (upstream.Cluster.RoundTrip). It fails when the
	// cluster is unknown or has no endpoint.
	RoundTrip(cluster string, r *http.Request, timeout time.Duration) (*http.Response, error)
}

// UpstreamFilter is a Filter that calls clusters: the proxy wraps it with
// WrapUpstreams, with the clusters of the configuration being swapped in,
// instead of Wrap.
type UpstreamFilter interface {
	Filter
	WrapUpstreams(next Handler, upstreams Upstreams) Handler
}

// Env is what a filter may use of the proxy that runs it.
type Env struct {
	// Logger is the listener's logger (it carries the listener's name).
	Logger *slog.Logger
	// Stats holds the proxy's filter counters, reported in /stats.
	Stats *Stats
}

// LocalReply answers with a short text/plain body, as the proxy's own local
// replies do (docs/xds.md); the route's response header mutations apply, as
// in Envoy. rt may be nil.
func LocalReply(w http.ResponseWriter, rt *router.Route, status int, body string) {
	header := w.Header()
	if body != "" {
		header["Content-Type"] = []string{"text/plain; charset=utf-8"}
		header["Content-Length"] = []string{strconv.Itoa(len(body))}
	}
	if rt != nil {
		rt.ApplyResponseHeaders(header)
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}
