// Package httpproxy is the http.Handler of one proxy listener: it matches a
// request against the listener's route table, answers redirects, direct
// responses and local errors itself, and otherwise forwards the request to an
// endpoint of the selected upstream cluster, streaming bodies both ways.
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
}

// Handler serves one listener. It is safe for concurrent use.
type Handler struct {
	config  atomic.Pointer[Config]
	logger  *slog.Logger
	buffers sync.Pool // *[]byte of copyBufferSize

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

// ServeHTTP routes and answers or forwards one request. It takes ownership
// of r: the request's headers and URL are rewritten in place into the
// upstream request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cfg := h.config.Load()
	if cfg == nil || cfg.Routes == nil {
		localReply(w, nil, http.StatusNotFound, bodyNoRoute)
		return
	}
	rt := cfg.Routes.Match(r)
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

// forward sends r to endpoint of cluster and streams the response back.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, cfg *Config, rt *router.Route, cluster *upstream.Cluster, endpoint string) {
	ctx := r.Context()
	if timeout := rt.Timeout(); timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}

	proto := forwardedProto(r, cfg.UseRemoteAddress)
	out := r.WithContext(ctx) // shallow copy: shares Header, URL, Body, Trailer
	out.RequestURI = ""
	out.Close = false
	if r.ContentLength == 0 {
		out.Body = nil // no body: let the transport send none
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

	resp, err := cluster.Transport().RoundTrip(out)
	if err != nil {
		h.upstreamError(ctx, w, r, rt, cluster, endpoint, err)
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

	if !h.copyBody(ctx, w, resp) {
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

// upstreamError answers a failed round trip: route timeout 504, connection
// failure 503, anything else 502; nothing when the client went away.
func (h *Handler) upstreamError(ctx context.Context, w http.ResponseWriter, r *http.Request, rt *router.Route, cluster *upstream.Cluster, endpoint string, err error) {
	if r.Context().Err() != nil {
		return // the client went away: nobody to answer, nothing to log
	}
	var opErr *net.OpError
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		localReply(w, rt, http.StatusGatewayTimeout, bodyTimeout)
	case errors.As(err, &opErr) && opErr.Op == "dial":
		localReply(w, rt, http.StatusServiceUnavailable, bodyConnectError)
	default:
		localReply(w, rt, http.StatusBadGateway, bodyBadGateway)
	}
	h.logger.Debug("upstream request failed", "cluster", cluster.Name(), "endpoint", endpoint, "error", err)
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
