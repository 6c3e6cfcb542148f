// Package extauthz is Envoy's external authorization HTTP filter
// (envoy.extensions.filters.http.ext_authz.v3.ExtAuthz, per route
// ExtAuthzPerRoute) for the meshgate proxy, in the subset of docs/xds.md
// ("External authorization"), behaving as Envoy's does with an
// http_service:
//
//   - Each request of a route that does not disable the filter is first
//     sent to the authorization service (a cluster of the proxy): the
//     same method, path_prefix + the request's path and query, the Host,
//     Authorization and Content-Length headers and those allowed_headers
//     match, and, with with_request_body, the body's first
//     max_request_bytes (a longer body gets 413 unless
//     allow_partial_message).
//   - A 200 answer lets the request through, with the answer's headers
//     matched by allowed_upstream_headers set on it (never Host nor the
//     framing and hop-by-hop headers). Any other answer is the denial the
//     client gets: its status, the headers allowed_client_headers match
//     (all but Host when unset) and its body (at most MaxDeniedBodyBytes);
//     a gRPC call gets it as a gRPC status (httpfilter.Reply).
//   - A check that fails (no endpoint, connection error, no answer within
//     server_uri.timeout) denies the request with status_on_error (403 by
//     default, Envoy's), or lets it through when failure_mode_allow is
//     set, counted as failure_mode_allowed.
//
// Outcomes are counted in the ext_authz family of /stats (ok, denied,
// error, failure_mode_allowed), as Envoy's ext_authz.* stats. A route
// that disables the filter pays one lookup of its per-route configs.
package extauthz

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/dataplane/accesslog"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/internal/match"
	"github.com/meshgate/meshgate/dataplane/router"
)

// StatFamily is the /stats family of the filter's outcomes.
const StatFamily = "ext_authz"

// Outcomes counted in StatFamily.
const (
	StatOK                 = "ok"
	StatDenied             = "denied"
	StatError              = "error"
	StatFailureModeAllowed = "failure_mode_allowed"
)

// Response code details of the requests the filter answers (Envoy's).
const (
	DetailsDenied = "ext_authz_denied"
	DetailsError  = "ext_authz_error"
)

// MaxDeniedBodyBytes bounds the body of a denial passed to the client; a
// longer one is cut there.
const MaxDeniedBodyBytes = 64 << 10

// defaultStatusOnError is Envoy's status_on_error default: Forbidden.
const defaultStatusOnError = http.StatusForbidden

// Factory describes the ext_authz filter to the registry.
func Factory() httpfilter.Factory {
	return httpfilter.Factory{
		ConfigType:   configType,
		PerRouteType: perRouteType,
		Rules:        subsetRules(),
		Stats:        []string{StatFamily},
		New:          newFilter,
		NewPerRoute:  newPerRoute,
	}
}

// perRoute is a route's ExtAuthzPerRoute: disabled, or enabled (empty
// check settings).
type perRoute struct{ disabled bool }

func newPerRoute(config proto.Message) (any, error) {
	cfg, ok := config.(*extauthzv3.ExtAuthzPerRoute)
	if !ok {
		return nil, fmt.Errorf("want an ExtAuthzPerRoute, got %T", config)
	}
	if cfg.GetOverride() == nil {
		return nil, errors.New("override: one of disabled and check_settings is required")
	}
	return &perRoute{disabled: cfg.GetDisabled()}, nil
}

// filter is one compiled ext_authz entry.
type filter struct {
	name          string
	cluster       string
	timeout       time.Duration
	pathPrefix    string
	allowed       []match.String // request headers sent besides the fixed ones
	upstream      []match.String // answer headers set on an allowed request
	client        []match.String // denial headers to the client; nil: all
	failOpen      bool
	statusOnError int
	maxBody       int64 // 0: no body sent
	partialBody   bool
	counters      *httpfilter.Counters
	// grpc: the service speaks envoy.service.auth.v3 (grpc_service), at
	// :authority authority (empty: the endpoint's address).
	grpc      bool
	authority string
	logger    *slog.Logger
}

// defaultGRPCTimeout is Envoy's timeout of a gRPC check without one.
const defaultGRPCTimeout = 200 * time.Millisecond

func newFilter(name string, config proto.Message, env httpfilter.Env) (httpfilter.Filter, error) {
	cfg, ok := config.(*extauthzv3.ExtAuthz)
	if !ok {
		return nil, fmt.Errorf("want an ExtAuthz, got %T", config)
	}
	svc := cfg.GetHttpService()
	f := &filter{
		name:          name,
		cluster:       svc.GetServerUri().GetCluster(),
		timeout:       svc.GetServerUri().GetTimeout().AsDuration(),
		pathPrefix:    svc.GetPathPrefix(),
		grpc:          cfg.GetGrpcService() != nil,
		failOpen:      cfg.GetFailureModeAllow(),
		statusOnError: defaultStatusOnError,
		counters:      env.Stats.Counters(StatFamily),
		logger:        env.Logger,
	}
	if f.logger == nil {
		f.logger = slog.New(slog.DiscardHandler)
	}
	if g := cfg.GetGrpcService(); g != nil {
		f.cluster = g.GetEnvoyGrpc().GetClusterName()
		// Envoy's :authority is the cluster name, which is not a valid
		// host here (namespace/name:port): the endpoint's address is sent.
		f.authority = g.GetEnvoyGrpc().GetAuthority()
		f.timeout = defaultGRPCTimeout
		if t := g.GetTimeout(); t != nil {
			f.timeout = t.AsDuration()
		}
	}
	if c := cfg.GetStatusOnError().GetCode(); c != 0 {
		f.statusOnError = int(c)
	}
	if b := cfg.GetWithRequestBody(); b != nil {
		f.maxBody, f.partialBody = int64(b.GetMaxRequestBytes()), b.GetAllowPartialMessage()
	}
	var err error
	if f.allowed, err = compileList(cfg.GetAllowedHeaders()); err != nil {
		return nil, fmt.Errorf("allowed_headers.%w", err)
	}
	resp := svc.GetAuthorizationResponse()
	if f.upstream, err = compileList(resp.GetAllowedUpstreamHeaders()); err != nil {
		return nil, fmt.Errorf("http_service.authorization_response.allowed_upstream_headers.%w", err)
	}
	if f.client, err = compileList(resp.GetAllowedClientHeaders()); err != nil {
		return nil, fmt.Errorf("http_service.authorization_response.allowed_client_headers.%w", err)
	}
	return f, nil
}

func compileList(l *matcherv3.ListStringMatcher) ([]match.String, error) {
	var out []match.String
	for i, sm := range l.GetPatterns() {
		s, err := match.CompileString(sm)
		if err != nil {
			return nil, fmt.Errorf("patterns[%d]: %w", i, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func matchesAny(list []match.String, name string) bool {
	for i := range list {
		if list[i].Match(name) {
			return true
		}
	}
	return false
}

// Wrap is never used by the proxy (the filter calls a cluster:
// WrapUpstreams); without clusters every check fails.
func (f *filter) Wrap(next httpfilter.Handler) httpfilter.Handler {
	return f.WrapUpstreams(next, nil)
}

// WrapUpstreams returns the handler checking requests with the
// authorization service among upstreams before next.
func (f *filter) WrapUpstreams(next httpfilter.Handler, upstreams httpfilter.Upstreams) httpfilter.Handler {
	return &handler{filter: f, next: next, upstreams: upstreams}
}

type handler struct {
	*filter
	next      httpfilter.Handler
	upstreams httpfilter.Upstreams
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request, rt *router.Route) {
	if rt != nil {
		if per, ok := rt.PerFilterConfig(h.name).(*perRoute); ok && per.disabled {
			h.next.ServeHTTP(w, r, rt)
			return
		}
	}
	if h.grpc {
		h.serveGRPC(w, r, rt)
		return
	}
	resp, err := h.check(r)
	if errors.Is(err, errBodyTooLarge) {
		h.counters.Inc(StatDenied)
		accesslog.FromContext(r.Context()).SetDetails(DetailsDenied)
		httpfilter.Reply(w, r, rt, http.StatusRequestEntityTooLarge, "")
		return
	}
	if err != nil {
		h.logger.Debug("ext_authz check failed", "filter", h.name, "cluster", h.cluster, "error", err)
		if h.failOpen {
			h.counters.Inc(StatFailureModeAllowed)
			h.next.ServeHTTP(w, r, rt)
			return
		}
		h.counters.Inc(StatError)
		accesslog.FromContext(r.Context()).SetDetails(DetailsError)
		httpfilter.Reply(w, r, rt, h.statusOnError, "")
		return
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode == http.StatusOK {
		h.counters.Inc(StatOK)
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxDeniedBodyBytes))
		for name, values := range resp.Header {
			if passes(name) && matchesAny(h.upstream, name) {
				r.Header[name] = values
			}
		}
		h.next.ServeHTTP(w, r, rt)
		return
	}
	h.counters.Inc(StatDenied)
	accesslog.FromContext(r.Context()).SetDetails(DetailsDenied)
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxDeniedBodyBytes))
	if err != nil && len(body) == 0 {
		// The denial's body did not arrive: the check failed.
		h.counters.Inc(StatError)
		httpfilter.Reply(w, r, rt, h.statusOnError, "")
		return
	}
	status := resp.StatusCode
	if status < 200 || status > 599 {
		status = http.StatusForbidden
	}
	if router.IsGRPC(r) {
		httpfilter.Reply(w, r, rt, status, string(body))
		return
	}
	header := w.Header()
	for name, values := range resp.Header {
		if !passes(name) {
			continue
		}
		if h.client == nil || matchesAny(h.client, name) || alwaysToClient[name] {
			header[name] = values
		}
	}
	header["Content-Length"] = []string{strconv.Itoa(len(body))}
	if rt != nil {
		rt.ApplyResponseHeaders(header)
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// alwaysToClient are the denial headers passed even when
// allowed_client_headers does not list them (Envoy's).
var alwaysToClient = map[string]bool{"Www-Authenticate": true, "Location": true}

// notPassed are the headers of the service's answer never copied onto the
// request nor the client's answer: Host, framing and hop-by-hop headers.
var notPassed = map[string]bool{
	"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Connection": true, "Keep-Alive": true,
	"Proxy-Connection": true, "Te": true, "Trailer": true, "Upgrade": true, "Date": true, "Server": true,
}

func passes(name string) bool { return !notPassed[name] }

// errBodyTooLarge: the request body is longer than with_request_body
// allows, and a partial one is not.
var errBodyTooLarge = errors.New("request body larger than max_request_bytes")

// check sends r's check request to the authorization service.
func (h *handler) check(r *http.Request) (*http.Response, error) {
	if h.upstreams == nil {
		return nil, errors.New("no clusters")
	}
	body, err := h.bodyPrefix(r)
	if err != nil {
		return nil, err
	}
	header := make(http.Header, 4+len(h.allowed))
	for name, values := range r.Header {
		if name == "Authorization" || matchesAny(h.allowed, name) && passes(name) {
			header[name] = values
		}
	}
	header["Content-Length"] = []string{strconv.Itoa(len(body))}
	u, err := url.ParseRequestURI(h.pathPrefix + r.URL.RequestURI())
	if err != nil {
		return nil, fmt.Errorf("check request path: %w", err)
	}
	out := &http.Request{Method: r.Method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: header, Host: r.Host, ContentLength: int64(len(body))}
	out = out.WithContext(r.Context())
	if len(body) > 0 {
		out.Body = io.NopCloser(bytes.NewReader(body))
	}
	return h.upstreams.RoundTrip(h.cluster, out, h.timeout)
}

// bodyPrefix reads the first maxBody bytes of r's body (none without
// with_request_body), leaving r's body whole for the upstream.
func (h *handler) bodyPrefix(r *http.Request) ([]byte, error) {
	if h.maxBody <= 0 || r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, h.maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	r.Body = &prefixedBody{Reader: io.MultiReader(bytes.NewReader(buf), r.Body), Closer: r.Body}
	if int64(len(buf)) > h.maxBody {
		if !h.partialBody {
			return nil, errBodyTooLarge
		}
		buf = buf[:h.maxBody]
	}
	return buf, nil
}

// prefixedBody is a request body whose first bytes were read already.
type prefixedBody struct {
	io.Reader
	io.Closer
}

// serveGRPC checks r with a gRPC authorization service.
func (h *handler) serveGRPC(w http.ResponseWriter, r *http.Request, rt *router.Route) {
	o, err := h.checkGRPC(r)
	if err != nil {
		h.logger.Debug("ext_authz check failed", "filter", h.name, "cluster", h.cluster, "error", err)
	}
	switch {
	case errors.Is(err, errBodyTooLarge):
		h.counters.Inc(StatDenied)
		accesslog.FromContext(r.Context()).SetDetails(DetailsDenied)
		httpfilter.Reply(w, r, rt, http.StatusRequestEntityTooLarge, "")
	case err != nil && h.failOpen:
		h.counters.Inc(StatFailureModeAllowed)
		h.next.ServeHTTP(w, r, rt)
	case err != nil:
		h.counters.Inc(StatError)
		accesslog.FromContext(r.Context()).SetDetails(DetailsError)
		httpfilter.Reply(w, r, rt, h.statusOnError, "")
	case o.allowed:
		h.counters.Inc(StatOK)
		applyHeaders(r.Header, o.headers)
		for _, name := range o.remove {
			if name := http.CanonicalHeaderKey(name); passes(name) {
				delete(r.Header, name)
			}
		}
		h.next.ServeHTTP(w, r, rt)
	default:
		h.counters.Inc(StatDenied)
		accesslog.FromContext(r.Context()).SetDetails(DetailsDenied)
		if router.IsGRPC(r) {
			httpfilter.Reply(w, r, rt, o.deniedStatus, o.deniedBody)
			return
		}
		header := w.Header()
		applyHeaders(header, o.deniedHeaders)
		header["Content-Length"] = []string{strconv.Itoa(len(o.deniedBody))}
		if rt != nil {
			rt.ApplyResponseHeaders(header)
		}
		w.WriteHeader(o.deniedStatus)
		_, _ = io.WriteString(w, o.deniedBody)
	}
}
