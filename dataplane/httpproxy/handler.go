// Package httpproxy is the http.Handler of one proxy listener, the request
// pipeline of an HttpConnectionManager (ServeHTTP): normalize the path,
// select the route, run the listener's HTTP filters in http_filters order
// (dataplane/httpfilter), then the router, the terminal filter, which
// answers redirects, direct responses and local errors itself, and
// otherwise forwards the request to an endpoint of the selected upstream
// cluster, streaming bodies both ways.
//
// The configuration is swapped atomically with Store; a request uses the
// Config it loaded when it started, so a swap never disturbs requests in
// flight. The request path takes no locks; a listener without filters pays
// nothing for them.
package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshgate/meshgate/dataplane/accesslog"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/metrics"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/tracing"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// copyBufferSize is the size of the pooled body copy buffers.
const copyBufferSize = 32 << 10

// Local reply bodies (docs/xds.md: short text/plain bodies).
const (
	bodyNoRoute         = "no route\n"
	bodyClusterNotFound = "cluster not found\n"
	bodyNoHealthy       = "no healthy upstream\n"
	bodyConnectError    = "upstream connect error\n"
	bodyTimeout         = "upstream request timeout\n"
	bodyBadGateway      = "bad gateway\n"
	bodyBadPath         = "bad request path\n"
	bodyBadBody         = "bad request body\n"
	bodyOverflow        = "upstream overflow\n"
)

// OverloadedHeader names the circuit breaker limit that refused a request
// (upstream.LimitRequests...), on the proxy's 503.
const OverloadedHeader = "X-Meshgate-Overloaded"

// Config is the immutable configuration of one listener's handler.
type Config struct {
	// Routes is the listener's compiled route configuration; nil answers 404.
	Routes *router.Table
	// Clusters holds every cluster the routes may reference, by name.
	Clusters map[string]*upstream.Cluster
	// UseRemoteAddress is HttpConnectionManager.use_remote_address: the proxy
	// is the edge, so X-Forwarded-Proto is overwritten with the scheme of the
	// downstream connection rather than trusted.
	UseRemoteAddress bool
	// Filters are the listener's HTTP filters before the router, in
	// http_filters order (compiled by the registry, dataplane/filters);
	// none when the router is the only one.
	Filters []httpfilter.Filter
	// NormalizePath and MergeSlashes are the HttpConnectionManager fields of
	// those names: the request path is normalized (normalizePath) before
	// routing and authorization, and forwarded normalized. A path that cannot
	// be normalized safely is refused with 400.
	NormalizePath, MergeSlashes bool
	// Tracer is HttpConnectionManager.tracing: a server span per request
	// and a client span per upstream attempt. Nil: no tracing, at no cost.
	Tracer *tracing.Tracer
	// AccessLogs are HttpConnectionManager.access_log: one line per
	// request to each. None: no access log, at no cost.
	AccessLogs []accesslog.Log
	// Metrics are the listener's request metrics, resolved for Routes
	// (metrics.Proxy.Listener). Nil: none, at no cost.
	Metrics *metrics.Listener
	// WebSocket is HttpConnectionManager.upgrade_configs with websocket
	// enabled: WebSocket upgrades are forwarded and spliced (upgrade.go)
	// on routes that do not disable them. False: only on routes that
	// enable them; elsewhere the Upgrade header is removed.
	WebSocket bool
}

// Handler serves one listener. It is safe for concurrent use.
type Handler struct {
	config  atomic.Pointer[bound]
	logger  *slog.Logger
	buffers sync.Pool // *[]byte of copyBufferSize
	// recorders are the writers of requests with metrics (*recorder).
	recorders sync.Pool

	// mirrorSlots bounds the mirrored requests in flight: a mirror that
	// finds no free slot is not sent.
	mirrorSlots chan struct{}

	// Shared, never-modified X-Forwarded-Proto values (len == cap, so an
	// append elsewhere copies instead of writing into them).
	protoHTTP, protoHTTPS []string

	// tunnels are the WebSockets in progress (DrainTunnels).
	tunnels tunnelSet
}

// NewHandler returns a handler with no configuration: it answers 404 until
// Store is called. logger may be nil.
func NewHandler(logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{
		logger:      logger,
		mirrorSlots: make(chan struct{}, MaxMirrorsInFlight),
		protoHTTP:   []string{"http"}[:1:1],
		protoHTTPS:  []string{"https"}[:1:1],
	}
	h.buffers.New = func() any {
		b := make([]byte, copyBufferSize)
		return &b
	}
	h.recorders.New = func() any { return new(recorder) }
	return h
}

// bound is a Config as a Handler serves it: with its filters wrapped, once,
// around the router.
type bound struct {
	cfg     *Config
	filters httpfilter.Handler // the first filter; nil without filters
}

// Store swaps in cfg atomically; requests already started keep the Config
// they loaded. cfg must not be modified afterwards. Its filters are wrapped
// here, around the router, not per request.
func (h *Handler) Store(cfg *Config) {
	b := &bound{cfg: cfg}
	if len(cfg.Filters) > 0 {
		var next httpfilter.Handler = &routerFilter{h: h, cfg: cfg}
		for i := len(cfg.Filters) - 1; i >= 0; i-- {
			if uf, ok := cfg.Filters[i].(httpfilter.UpstreamFilter); ok {
				next = uf.WrapUpstreams(next, clusterUpstreams(cfg.Clusters))
				continue
			}
			next = cfg.Filters[i].Wrap(next)
		}
		b.filters = next
	}
	h.config.Store(b)
}

// Config returns the configuration in use (nil before the first Store).
func (h *Handler) Config() *Config {
	if b := h.config.Load(); b != nil {
		return b.cfg
	}
	return nil
}

// ServeHTTP serves one request through the pipeline of the listener's
// HttpConnectionManager, as Envoy does:
//
//  1. normalize the path (normalize_path, merge_slashes): 400 when it
//     cannot be normalized safely;
//  2. select the route (nil when none matches), so that the filters can
//     read its per-filter configs;
//  3. the HTTP filters, in http_filters order: each may answer locally or
//     change the request or the response, and calls the next;
//  4. the router: 404 without a route, a redirect or direct response, or
//     the upstream (forward).
//
// It takes ownership of r: the request's headers and URL are rewritten in
// place into the upstream request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b := h.config.Load()
	if b == nil {
		httpfilter.LocalReply(w, nil, http.StatusNotFound, bodyNoRoute)
		return
	}
	var held bool // the request holds cfg.Tracer: its server span starts below, on every path
	if b.cfg.Tracer != nil {
		b, held = h.holdTracer(b)
	}
	cfg := b.cfg
	var rec *recorder
	if cfg.Metrics != nil {
		// Outermost, so that the duration covers the whole pipeline.
		rec = h.startMetrics(w)
		w = rec
		defer h.endMetrics(cfg.Metrics, rec, r.ContentLength)
	}
	// With tracing, the server span starts once the route is known (its
	// Route.tracing may set the sampling), with the path received; the
	// access log entry after it, so that it has the span's trace context.
	var received string
	if cfg.Tracer != nil {
		received = r.URL.Path
	}
	normalized := !(cfg.NormalizePath || cfg.MergeSlashes) || normalizeRequestPath(r, cfg.MergeSlashes)
	var rt *router.Route
	if normalized {
		rt = cfg.Routes.Match(r)
		if rec != nil {
			rec.selectRoute(cfg.Metrics.Route(rt))
		}
	}
	if cfg.Tracer != nil {
		start := tracing.ServerStart{Path: received, Held: held}
		if rt != nil {
			if ts := rt.Tracing(); ts != nil {
				start.Ratio, start.Override = cfg.Tracer.Settings().RouteRatio(ts.Random, ts.Overall, ts.HasRandom, ts.HasOverall), true
			}
		}
		var span *tracing.Server
		span, r = cfg.Tracer.StartServerWith(w, r, start)
		w = span
		defer span.End()
		if rt != nil {
			span.SetRoute(rt.Name(), rt.VirtualHost())
		}
	}
	var entry *accesslog.Entry
	if len(cfg.AccessLogs) > 0 {
		entry, r = accesslog.Start(w, r)
		w = entry
		defer accesslog.Finish(cfg.AccessLogs, entry)
	}
	if !normalized {
		entry.SetDetails(accesslog.DetailsPathNormalization)
		httpfilter.LocalReply(w, nil, http.StatusBadRequest, bodyBadPath)
		return
	}
	if entry != nil && rt != nil {
		entry.SetRoute(rt.Name(), rt.VirtualHost())
	}
	if b.filters != nil {
		b.filters.ServeHTTP(w, r, rt)
		return
	}
	h.route(w, r, cfg, rt)
}

// holdTracer holds the Tracer of b's configuration for a request (so that,
// retired meanwhile, it waits for the request's spans), or, when it is
// closed already (b was replaced, and its Tracer retired, since it was
// read), takes the configuration that replaced b. It returns the
// configuration the request is served with and whether its Tracer is held
// (not when it has none, nor when a stopping proxy closed it).
func (h *Handler) holdTracer(b *bound) (*bound, bool) {
	for b.cfg.Tracer != nil && !b.cfg.Tracer.Hold() {
		next := h.config.Load()
		if next == nil || next == b {
			return b, false
		}
		b = next
	}
	return b, b.cfg.Tracer != nil
}

// routerFilter is the router as the last of a listener's filters.
type routerFilter struct {
	h   *Handler
	cfg *Config
}

func (f *routerFilter) ServeHTTP(w http.ResponseWriter, r *http.Request, rt *router.Route) {
	f.h.route(w, r, f.cfg, rt)
}

// route is the router, the terminal filter: it answers what the route rt
// (nil: no route matched) says, or forwards r upstream.
func (h *Handler) route(w http.ResponseWriter, r *http.Request, cfg *Config, rt *router.Route) {
	entry := entryOf(cfg, r)
	if rt == nil {
		entry.Fail(accesslog.NoRouteFound, accesslog.DetailsRouteNotFound)
		localReply(w, r, nil, http.StatusNotFound, bodyNoRoute)
		return
	}
	switch rt.Action() {
	case router.ActionRedirect:
		entry.SetDetails(accesslog.DetailsDirectResponse)
		location, code := rt.Redirect(r, forwardedProto(r, cfg.UseRemoteAddress))
		header := w.Header()
		header["Location"] = []string{location}
		rt.ApplyResponseHeaders(header)
		w.WriteHeader(code)
		return
	case router.ActionDirectResponse:
		entry.SetDetails(accesslog.DetailsDirectResponse)
		status, body := rt.DirectResponse()
		httpfilter.LocalReply(w, rt, status, body) // as configured, gRPC or not
		return
	}

	var clusterName string
	if rt.TotalWeight() > 0 {
		clusterName = rt.PickCluster(rand.Uint64())
	} else {
		clusterName = rt.PickCluster(0)
	}
	if cfg.Metrics != nil {
		if rec := recorderOf(w); rec != nil && rec.route != nil {
			rec.dest = rec.route.Destination(clusterName)
		}
	}
	cluster := cfg.Clusters[clusterName]
	if cluster == nil {
		entry.Fail(accesslog.NoClusterFound, accesslog.DetailsClusterNotFound)
		localReply(w, r, rt, rt.ClusterNotFoundStatus(), bodyClusterNotFound)
		return
	}
	if b := cluster.Breaker(); b != nil {
		if err := b.StartRequest(); err != nil {
			overloaded(w, r, rt, entry, err)
			return
		}
		defer b.EndRequest()
	}
	w, endpoint, ok := pickFirst(w, r, rt, cluster)
	if !ok {
		entry.Fail(accesslog.NoHealthyUpstream, accesslog.DetailsNoHealthyUpstream)
		localReply(w, r, rt, http.StatusServiceUnavailable, bodyNoHealthy)
		return
	}
	h.forward(w, r, cfg, rt, cluster, endpoint, entry)
}

// overloaded answers a request a circuit breaker refused (err wraps an
// *upstream.OverflowError): 503 at once, naming the limit.
func overloaded(w http.ResponseWriter, r *http.Request, rt *router.Route, entry *accesslog.Entry, err error) {
	limit := "circuit_breaker"
	if o, ok := upstream.IsOverflow(err); ok {
		limit = o.Limit
	}
	entry.Fail(accesslog.UpstreamOverflow, accesslog.DetailsOverflow)
	w.Header()[OverloadedHeader] = []string{limit}
	localReply(w, r, rt, http.StatusServiceUnavailable, bodyOverflow)
}

// entryOf is the access-log Entry of r, nil when cfg logs nothing (at no
// cost: no context lookup).
func entryOf(cfg *Config, r *http.Request) *accesslog.Entry {
	if len(cfg.AccessLogs) == 0 {
		return nil
	}
	return accesslog.FromContext(r.Context())
}

// forward sends r to endpoint of cluster and streams the response back.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, cfg *Config, rt *router.Route, cluster *upstream.Cluster, endpoint string, entry *accesslog.Entry) {
	proto := forwardedProto(r, cfg.UseRemoteAddress)
	timeout := rt.TimeoutOf(r) // from the request as received (grpc-timeout), as Envoy reads it
	out := new(http.Request)
	*out = *r // shallow copy: shares Header, URL, Body, Trailer and the context
	out.RequestURI = ""
	out.Close = false
	var body *requestBody // the request body, when there is one
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		out.Body = nil // no body: let the transport send none
	} else {
		body = &requestBody{ReadCloser: r.Body}
		out.Body = body
		if cfg.Metrics != nil {
			if rec := recorderOf(w); rec != nil {
				rec.body = body
			}
		}
	}
	if host := rt.HostRewrite(); host != "" {
		out.Host = host
	}
	u := out.URL
	if rt.RewritesPath() {
		setEscapedPath(u, rt.RewritePath(u.EscapedPath()))
	}
	u.Scheme, u.Host, u.User = "http", endpoint, nil

	header := out.Header
	var upgradeTo []string // the Upgrade header of a WebSocket upgrade forwarded
	if rt.WebSocketAllowed(cfg.WebSocket) && webSocketUpgrade(r) && cluster.CanUpgrade(endpoint) {
		upgradeTo = header["Upgrade"]
	}
	wantsTrailers := removeHopByHop(header, true)
	if upgradeTo != nil {
		header["Connection"], header["Upgrade"] = []string{"Upgrade"}, upgradeTo
	}
	if wantsTrailers {
		header["Te"] = []string{"trailers"}
	}
	appendForwardedFor(header, r.RemoteAddr)
	if cfg.UseRemoteAddress || len(header["X-Forwarded-Proto"]) == 0 {
		if proto == "https" {
			header["X-Forwarded-Proto"] = h.protoHTTPS
		} else {
			header["X-Forwarded-Proto"] = h.protoHTTP
		}
	}
	if rt.HasClusterHeaders() {
		rt.ApplyClusterRequestHeaders(cluster.Name(), header)
	}
	rt.ApplyRequestHeaders(header)

	// The route timeout covers the whole exchange (upstream.ErrTimeout: 504
	// before the response, an aborted response after it).
	var attempt *tracing.Client
	if cfg.Tracer != nil {
		attempt = cfg.Tracer.StartClient(r.Context(), out, cluster.Name(), endpoint)
		defer attempt.End()
	}
	if upgradeTo != nil {
		h.upgrade(w, r, cfg, rt, cluster, endpoint, out, attempt, entry)
		return
	}
	var idle *idleTimer
	if d := rt.IdleTimeout(); d > 0 {
		out, idle = withIdleTimeout(out, d)
		defer idle.stop()
		if out.Body != nil {
			out.Body = &idleBody{ReadCloser: out.Body, t: idle}
		}
	}
	if rt.AttemptCountOnRequest() {
		header[router.AttemptCountHeader] = attemptCount(1)
	}
	var resp *http.Response
	var err error
	attempts := 1
	if rt.Retry() == nil && len(rt.Mirrors()) == 0 {
		resp, err = cluster.RoundTrip(out, timeout)
	} else {
		resp, endpoint, attempts, err = h.sendTraffic(out, cfg, rt, cluster, endpoint, body, timeout)
	}
	// The endpoint of the last attempt (with retries, the one that answered
	// or failed last).
	entry.SetUpstream(cluster.Name(), endpoint)
	if err != nil && idle != nil && idle.fired(out.Context()) && r.Context().Err() == nil {
		attempt.Fail(err)
		entry.Fail(accesslog.UpstreamRequestTimeout, detailsStreamIdle)
		localReply(w, r, rt, http.StatusGatewayTimeout, bodyStreamIdle)
		return
	}
	if err != nil {
		attempt.Fail(err)
		h.upstreamError(w, r, rt, cluster, endpoint, err, body, entry)
		return
	}
	if idle != nil {
		resp.Body = &idleBody{ReadCloser: resp.Body, t: idle}
	}
	defer resp.Body.Close()
	attempt.SetStatus(resp.StatusCode)
	entry.UpstreamResponded()

	removeHopByHop(resp.Header, false)
	dst := w.Header()
	for k, vv := range resp.Header {
		dst[k] = vv
	}
	if rt.HasClusterHeaders() {
		rt.ApplyClusterResponseHeaders(cluster.Name(), dst)
	}
	rt.ApplyResponseHeaders(dst)
	if rt.AttemptCountOnResponse() {
		dst[router.AttemptCountHeader] = attemptCount(attempts)
	}
	w.WriteHeader(resp.StatusCode)
	if resp.ContentLength == -1 && body != nil && !body.eof.Load() {
		// A full-duplex exchange (the request still streaming: gRPC
		// bidirectional, an echo): the head goes to the client now, as
		// Envoy sends it, not with the first bytes of body, which may
		// wait for more of the request.
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}

	if !h.copyBody(r.Context(), w, resp, entry) {
		return
	}
	for k, vv := range resp.Trailer {
		dst[http.TrailerPrefix+k] = vv
	}
}

// copyBody streams the response body to the client, flushing after each
// write when the length is unknown (streaming, gRPC). It reports whether the
// whole body was copied. A failure after the response has started aborts
// it, so the client sees a broken response rather than a short one.
func (h *Handler) copyBody(ctx context.Context, w http.ResponseWriter, resp *http.Response, entry *accesslog.Entry) bool {
	var flusher http.Flusher
	if resp.ContentLength == -1 {
		flusher, _ = w.(http.Flusher)
	}
	bufp := h.buffers.Get().(*[]byte)
	defer h.buffers.Put(bufp)
	buf := *bufp
	for {
		n, readErr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				if errors.Is(err, httpfilter.ErrResponseBodyTooLarge) {
					return false // a filter answered in its stead, and logged why
				}
				entry.Fail(accesslog.DownstreamConnectionTermination, accesslog.DetailsDownstreamGone)
				return false // the client went away
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if readErr == io.EOF {
			return true
		}
		if readErr != nil {
			if ctx.Err() == nil {
				h.logger.Debug("upstream response body failed", "error", readErr)
				entry.Fail(accesslog.UpstreamRemoteReset, accesslog.DetailsUpstreamReset)
			} else {
				entry.Fail(accesslog.DownstreamConnectionTermination, accesslog.DetailsDownstreamGone)
			}
			panic(http.ErrAbortHandler) // recovered by net/http, which resets the stream
		}
	}
}

// upstreamError answers a failed round trip: the request body could not be
// read (the client's fault: a malformed chunked encoding, a body shorter
// than its Content-Length) 400 and the connection is closed, as what
// follows on it cannot be framed; route timeout 504, connection failure
// 503, anything else 502; nothing when the client went away.
func (h *Handler) upstreamError(w http.ResponseWriter, r *http.Request, rt *router.Route, cluster *upstream.Cluster, endpoint string, err error, body *requestBody, entry *accesslog.Entry) {
	if r.Context().Err() != nil {
		entry.Fail(accesslog.DownstreamConnectionTermination, accesslog.DetailsDownstreamGone)
		return // the client went away: nobody to answer, nothing to log
	}
	var opErr *net.OpError
	var overflow *upstream.OverflowError
	switch {
	case errors.As(err, &overflow):
		overloaded(w, r, rt, entry, overflow)
	case body != nil && body.tooLarge.Load():
		entry.Fail(accesslog.DownstreamProtocolError, detailsBodyTooLarge)
		w.Header()["Connection"] = []string{"close"}
		localReply(w, r, rt, http.StatusRequestEntityTooLarge, bodyTooLarge)
		return
	case body != nil && body.failed.Load():
		entry.Fail(accesslog.DownstreamProtocolError, accesslog.DetailsBadRequestBody)
		w.Header()["Connection"] = []string{"close"}
		localReply(w, r, rt, http.StatusBadRequest, bodyBadBody)
		h.logger.Debug("request body failed", "cluster", cluster.Name(), "endpoint", endpoint, "error", err)
		return
	case errors.Is(err, upstream.ErrTimeout):
		entry.Fail(accesslog.UpstreamRequestTimeout, accesslog.DetailsResponseTimeout)
		cluster.Stats().Timeouts.Inc()
		localReply(w, r, rt, http.StatusGatewayTimeout, bodyTimeout)
	case errors.As(err, &opErr) && opErr.Op == "dial":
		entry.Fail(accesslog.UpstreamConnectionFailure, accesslog.DetailsConnectFailure)
		localReply(w, r, rt, http.StatusServiceUnavailable, bodyConnectError)
	default:
		entry.Fail(accesslog.UpstreamConnectionTermination, accesslog.DetailsConnectTerminated)
		localReply(w, r, rt, http.StatusBadGateway, bodyBadGateway)
	}
	h.logger.Debug("upstream request failed", "cluster", cluster.Name(), "endpoint", endpoint, "error", err)
}

// requestBody is a request body as the upstream transport reads it: it
// records a read failure, which is the client's (the transport reads the
// body on a goroutine of its own, hence the atomic).
type requestBody struct {
	io.ReadCloser
	failed atomic.Bool
	// tooLarge: the body ran over a filter's limit
	// (httpfilter.ErrRequestBodyTooLarge).
	tooLarge atomic.Bool
	n        atomic.Int64 // bytes read
	eof      atomic.Bool  // read to its end
}

func (b *requestBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	if err == io.EOF { //nolint:errorlint // io.Reader returns io.EOF itself
		b.eof.Store(true)
	}
	if err != nil && err != io.EOF { //nolint:errorlint // io.Reader returns io.EOF itself
		b.failed.Store(true)
		if errors.Is(err, httpfilter.ErrRequestBodyTooLarge) {
			b.tooLarge.Store(true)
		}
	}
	return n, err
}

// detailsBodyTooLarge and bodyTooLarge: a request body over its route's
// limit (Envoy's buffer filter's).
const (
	detailsBodyTooLarge = "request_payload_too_large"
	bodyTooLarge        = "Payload Too Large"
)

// localReply answers r with a short text/plain body, or a gRPC call with
// its gRPC status: httpfilter.Reply.
func localReply(w http.ResponseWriter, r *http.Request, rt *router.Route, status int, body string) {
	httpfilter.Reply(w, r, rt, status, body)
}

// forwardedProto is the scheme the request arrived with, as the upstream and
// redirects should see it: the downstream connection's at the edge,
// otherwise an incoming X-Forwarded-Proto when present.
func forwardedProto(r *http.Request, useRemoteAddress bool) string {
	if !useRemoteAddress {
		if v := r.Header["X-Forwarded-Proto"]; len(v) > 0 && (v[0] == "http" || v[0] == "https") {
			return v[0]
		}
	}
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// setEscapedPath sets u's path to the escaped path p, sent as is.
func setEscapedPath(u *url.URL, p string) {
	if unescaped, err := url.PathUnescape(p); err == nil {
		u.Path, u.RawPath = unescaped, p
		return
	}
	if !strings.HasPrefix(p, "//") {
		u.Opaque = p // invalid escapes: send the path verbatim
		return
	}
	u.Path, u.RawPath = p, ""
}

// appendForwardedFor appends the peer IP of remoteAddr to X-Forwarded-For.
func appendForwardedFor(h http.Header, remoteAddr string) {
	ip := remoteAddr
	if host, _, err := net.SplitHostPort(remoteAddr); err == nil {
		ip = host
	}
	if ip == "" {
		return
	}
	prior := h["X-Forwarded-For"]
	switch len(prior) {
	case 0:
		h["X-Forwarded-For"] = []string{ip}
	case 1:
		h["X-Forwarded-For"] = []string{prior[0] + ", " + ip}
	default:
		h["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + ip}
	}
}

// removeHopByHop deletes the hop-by-hop headers of RFC 9110 section 7.6.1
// and those named by Connection. When request is true it reports whether TE
// asked for trailers (the one TE value that may be forwarded).
func removeHopByHop(h http.Header, request bool) (wantsTrailers bool) {
	for _, v := range h["Connection"] {
		for v != "" {
			var name string
			name, v, _ = strings.Cut(v, ",")
			if name = textprotoTrim(name); name != "" {
				delete(h, http.CanonicalHeaderKey(name))
			}
		}
	}
	if request {
		for _, v := range h["Te"] {
			for v != "" {
				var token string
				token, v, _ = strings.Cut(v, ",")
				token, _, _ = strings.Cut(token, ";")
				if strings.EqualFold(textprotoTrim(token), "trailers") {
					wantsTrailers = true
				}
			}
		}
	}
	for _, k := range [...]string{
		"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Transfer-Encoding",
		"Upgrade", "Proxy-Authorization", "Proxy-Authenticate", "Trailer",
	} {
		delete(h, k)
	}
	return wantsTrailers
}

func textprotoTrim(s string) string { return strings.Trim(s, " \t") }

// clusterUpstreams are a configuration's clusters as a filter calls them
// (httpfilter.Upstreams).
type clusterUpstreams map[string]*upstream.Cluster

// RoundTrip sends r to the next endpoint of the cluster named name.
func (c clusterUpstreams) RoundTrip(name string, r *http.Request, timeout time.Duration) (*http.Response, error) {
	cluster := c[name]
	if cluster == nil {
		return nil, fmt.Errorf("cluster %q: not found", name)
	}
	endpoint, ok := cluster.Next()
	if !ok {
		return nil, fmt.Errorf("cluster %q: no endpoint available", name)
	}
	r.URL.Scheme, r.URL.Host = "http", endpoint
	return cluster.RoundTrip(r, timeout)
}
