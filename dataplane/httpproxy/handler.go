// Package httpproxy is the http.Handler of one proxy listener: it matches a
// request against the listener's route table, enforces the RBAC filters
// (403 access denied), answers redirects, direct responses and local errors
// itself, and otherwise forwards the request to an endpoint of the selected
// upstream cluster, streaming bodies both ways.
//
// The configuration is swapped atomically with Store; a request uses the
// Config it loaded when it started, so a swap never disturbs requests in
// flight. The request path takes no locks.
package httpproxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/meshgate/meshgate/dataplane/peer"
	"github.com/meshgate/meshgate/dataplane/rbac"
	"github.com/meshgate/meshgate/dataplane/router"
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
	bodyAccessDenied    = "access denied\n"
	bodyBadPath         = "bad request path\n"
	bodyBadBody         = "bad request body\n"
)

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
	// RBACDeny and RBACAllow are the listener's RBAC filters
	// (rbac.DenyFilterName, rbac.AllowFilterName in http_filters; see
	// rbac.FromHTTPFilters); nil when absent. A matched route's
	// typed_per_filter_config overrides them (router.Route.RBACOverride).
	RBACDeny, RBACAllow *rbac.Filter
	// NormalizePath and MergeSlashes are the HttpConnectionManager fields of
	// those names: the request path is normalized (normalizePath) before
	// routing and authorization, and forwarded normalized. A path that cannot
	// be normalized safely is refused with 400.
	NormalizePath, MergeSlashes bool
}

// Handler serves one listener. It is safe for concurrent use.
type Handler struct {
	config  atomic.Pointer[Config]
	logger  *slog.Logger
	buffers sync.Pool  // *[]byte of copyBufferSize
	denied  rbac.Stats // rbac_denied by policy, across configurations

	// Shared, never-modified X-Forwarded-Proto values (len == cap, so an
	// append elsewhere copies instead of writing into them).
	protoHTTP, protoHTTPS []string
}

// NewHandler returns a handler with no configuration: it answers 404 until
// Store is called. logger may be nil.
func NewHandler(logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{
		logger:     logger,
		protoHTTP:  []string{"http"}[:1:1],
		protoHTTPS: []string{"https"}[:1:1],
	}
	h.buffers.New = func() any {
		b := make([]byte, copyBufferSize)
		return &b
	}
	return h
}

// Store swaps in cfg atomically; requests already started keep the Config
// they loaded. cfg must not be modified afterwards.
func (h *Handler) Store(cfg *Config) { h.config.Store(cfg) }

// Config returns the configuration in use (nil before the first Store).
func (h *Handler) Config() *Config { return h.config.Load() }

// RBACStats counts the requests the RBAC filters denied, by
// rbac.Filter.StatKey (the policy, or "<rules_stat_prefix>/no-allow-match"),
// since the handler was created: the rbac_denied counters of /stats.
func (h *Handler) RBACStats() *rbac.Stats { return &h.denied }

// ServeHTTP routes and answers or forwards one request. It takes ownership
// of r: the request's headers and URL are rewritten in place into the
// upstream request.
//
// As in Envoy, the RBAC filters run before the router: on the matched
// route's config (its typed_per_filter_config overrides the listener's),
// and with the listener's config when no route matches, before the 404.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cfg := h.config.Load()
	if cfg == nil {
		localReply(w, nil, http.StatusNotFound, bodyNoRoute)
		return
	}
	if cfg.NormalizePath || cfg.MergeSlashes {
		if !normalizeRequestPath(r, cfg.MergeSlashes) {
			localReply(w, nil, http.StatusBadRequest, bodyBadPath)
			return
		}
	}
	var rt *router.Route
	if cfg.Routes != nil {
		rt = cfg.Routes.Match(r)
	}
	if !h.authorize(w, r, cfg, rt) {
		return
	}
	if rt == nil {
		localReply(w, nil, http.StatusNotFound, bodyNoRoute)
		return
	}
	switch rt.Action() {
	case router.ActionRedirect:
		location, code := rt.Redirect(r, forwardedProto(r, cfg.UseRemoteAddress))
		header := w.Header()
		header["Location"] = []string{location}
		rt.ApplyResponseHeaders(header)
		w.WriteHeader(code)
		return
	case router.ActionDirectResponse:
		status, body := rt.DirectResponse()
		localReply(w, rt, status, body)
		return
	}

	var clusterName string
	if rt.TotalWeight() > 0 {
		clusterName = rt.PickCluster(rand.Uint64())
	} else {
		clusterName = rt.PickCluster(0)
	}
	cluster := cfg.Clusters[clusterName]
	if cluster == nil {
		localReply(w, rt, http.StatusServiceUnavailable, bodyClusterNotFound)
		return
	}
	endpoint, ok := cluster.Next()
	if !ok {
		localReply(w, rt, http.StatusServiceUnavailable, bodyNoHealthy)
		return
	}
	h.forward(w, r, cfg, rt, cluster, endpoint)
}

// authorize runs the DENY then the ALLOW RBAC filter that apply to r on rt
// (nil: no route matched). It answers 403 and returns false when one denies.
func (h *Handler) authorize(w http.ResponseWriter, r *http.Request, cfg *Config, rt *router.Route) bool {
	deny, allow := cfg.RBACDeny, cfg.RBACAllow
	if rt != nil {
		if f, set := rt.RBACOverride(rbac.DenyFilterName); set {
			deny = f
		}
		if f, set := rt.RBACOverride(rbac.AllowFilterName); set {
			allow = f
		}
	}
	if allowed, policy := deny.Evaluate(r); !allowed {
		h.deny(w, r, rt, deny, policy)
		return false
	}
	if allowed, policy := allow.Evaluate(r); !allowed {
		h.deny(w, r, rt, allow, policy)
		return false
	}
	return true
}

// deny answers 403, logs who was denied by which policy, and counts it.
func (h *Handler) deny(w http.ResponseWriter, r *http.Request, rt *router.Route, f *rbac.Filter, policy string) {
	h.denied.Inc(f.StatKey(policy))
	if h.logger.Enabled(r.Context(), slog.LevelInfo) {
		remoteIP := r.RemoteAddr
		if host, _, err := net.SplitHostPort(remoteIP); err == nil {
			remoteIP = host
		}
		path := ""
		if r.URL != nil {
			path = r.URL.EscapedPath()
		}
		h.logger.LogAttrs(r.Context(), slog.LevelInfo, "access denied",
			slog.String("method", r.Method),
			slog.String("path", path),
			slog.String("peer", peer.Identity(r.Context())),
			slog.String("remote_ip", remoteIP),
			slog.String("action", f.Action().String()),
			slog.String("policy", policy),
			slog.String("rules", f.StatPrefix()),
		)
	}
	localReply(w, rt, http.StatusForbidden, bodyAccessDenied)
}

// forward sends r to endpoint of cluster and streams the response back.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, cfg *Config, rt *router.Route, cluster *upstream.Cluster, endpoint string) {
	proto := forwardedProto(r, cfg.UseRemoteAddress)
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
	wantsTrailers := removeHopByHop(header, true)
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
	rt.ApplyRequestHeaders(header)

	// The route timeout covers the whole exchange (upstream.ErrTimeout: 504
	// before the response, an aborted response after it).
	resp, err := cluster.RoundTrip(out, rt.Timeout())
	if err != nil {
		h.upstreamError(w, r, rt, cluster, endpoint, err, body)
		return
	}
	defer resp.Body.Close()

	removeHopByHop(resp.Header, false)
	dst := w.Header()
	for k, vv := range resp.Header {
		dst[k] = vv
	}
	rt.ApplyResponseHeaders(dst)
	w.WriteHeader(resp.StatusCode)

	if !h.copyBody(r.Context(), w, resp) {
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
func (h *Handler) copyBody(ctx context.Context, w http.ResponseWriter, resp *http.Response) bool {
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
func (h *Handler) upstreamError(w http.ResponseWriter, r *http.Request, rt *router.Route, cluster *upstream.Cluster, endpoint string, err error, body *requestBody) {
	if r.Context().Err() != nil {
		return // the client went away: nobody to answer, nothing to log
	}
	var opErr *net.OpError
	switch {
	case body != nil && body.failed.Load():
		w.Header()["Connection"] = []string{"close"}
		localReply(w, rt, http.StatusBadRequest, bodyBadBody)
		h.logger.Debug("request body failed", "cluster", cluster.Name(), "endpoint", endpoint, "error", err)
		return
	case errors.Is(err, upstream.ErrTimeout):
		localReply(w, rt, http.StatusGatewayTimeout, bodyTimeout)
	case errors.As(err, &opErr) && opErr.Op == "dial":
		localReply(w, rt, http.StatusServiceUnavailable, bodyConnectError)
	default:
		localReply(w, rt, http.StatusBadGateway, bodyBadGateway)
	}
	h.logger.Debug("upstream request failed", "cluster", cluster.Name(), "endpoint", endpoint, "error", err)
}

// requestBody is a request body as the upstream transport reads it: it
// records a read failure, which is the client's (the transport reads the
// body on a goroutine of its own, hence the atomic).
type requestBody struct {
	io.ReadCloser
	failed atomic.Bool
}

func (b *requestBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF { //nolint:errorlint // io.Reader returns io.EOF itself
		b.failed.Store(true)
	}
	return n, err
}

// localReply answers with a short text/plain body; the route's response
// header mutations apply, as in Envoy.
func localReply(w http.ResponseWriter, rt *router.Route, status int, body string) {
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
