package dataplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meshgate/meshgate/dataplane/accesslog"
	"github.com/meshgate/meshgate/dataplane/filters"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/httpproxy"
	"github.com/meshgate/meshgate/dataplane/internal/h1server"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/tracing"
	"github.com/meshgate/meshgate/dataplane/upstream"
	"github.com/meshgate/meshgate/dataplane/xdsclient"
)

// Server defaults when the HttpConnectionManager leaves a setting unset.
const (
	defaultRequestHeadersTimeout = 10 * time.Second
	defaultIdleTimeout           = 5 * time.Minute
	defaultMaxRequestHeaderBytes = 60 << 10 // Envoy's default max_request_headers_kb
)

// listenerSpec is an accepted Listener, parsed.
type listenerSpec struct {
	config        *listenerv3.Listener
	name, address string
	// additional are the listener's additional_addresses (host:port),
	// served as address is, each by a server of its own.
	additional       []string
	params           serverParams
	useRemoteAddress bool
	stripAnyHostPort bool
	normalizePath    bool
	mergeSlashes     bool
	filters          []httpfilter.Filter // http_filters before the router, compiled
	// perRouteTypes: the per-route config type of each http_filters entry,
	// by name ("" for none).
	perRouteTypes map[string]protoreflect.FullName
	rds           string     // route configuration name, "" when inline
	inline        *routeSpec // inline route_config, compiled
	secrets       []string   // SDS secrets its TLS context references
	// terminate are the chains of a listener terminating TLS with
	// certificates received over SDS (tls mode modeTerminate).
	terminate []terminateChain
	// tracing is its HttpConnectionManager's tracing; nil: none.
	tracing *tracing.Settings
	// accessLogs are its HttpConnectionManager's access_log; none: no
	// access log.
	accessLogs []*accesslog.Settings
	// webSocket: upgrade_configs enable websocket upgrades.
	webSocket bool
	// l4, for a listener whose filter chains carry tcp_proxy, is its
	// chains (tcpproxy.go); nil for an HttpConnectionManager's.
	l4 *l4Spec
	// capture, for a listener with original_dst, is its chains by
	// destination (capture.go); captureHTTP the listener of each distinct
	// HttpConnectionManager of its HTTP chains as parsed alone (none
	// without any), the first being the one this spec copies.
	capture     *captureSpec
	captureHTTP []*listenerSpec
}

// parseEnv is what parsing a listener takes from the proxy.
type parseEnv struct {
	filters      *filters.Registry // compiles http_filters and per-route configs
	filterStats  *httpfilter.Stats // the filters' /stats counters
	logger       *slog.Logger      // nil: discard
	haveIdentity bool              // a TLS filter chain needs an identity
}

// parseEnv returns the proxy's parseEnv.
func (p *Proxy) parseEnv() parseEnv {
	return parseEnv{filters: p.filters, filterStats: p.filterStats, logger: p.logger, haveIdentity: p.opts.Identity != nil}
}

// warnPerRouteMismatches logs the per-route configs of table that the
// listener's filters ignore because their type is not the one the filter of
// that name takes (as Envoy, which ignores them too). A name no filter of
// the listener has is not reported: a route table may serve listeners with
// other filters.
func (spec *listenerSpec) warnPerRouteMismatches(table *router.Table, logger *slog.Logger) {
	for _, name := range slices.Sorted(maps.Keys(table.PerFilterTypes())) {
		want, ok := spec.perRouteTypes[name]
		if !ok {
			continue
		}
		for _, got := range table.PerFilterTypes()[name] {
			if protoreflect.FullName(got) != want {
				logger.Warn("typed_per_filter_config ignored: not the per-route config of the filter of that name",
					"listener", spec.name, "route_config", table.Name(), "filter", name, "type", got, "filter_takes", string(want))
			}
		}
	}
}

// serverParams are the http.Server settings a listener fixes; a change of any
// of them needs a new server.
type serverParams struct {
	http1, h2c        bool
	readHeaderTimeout time.Duration
	idleTimeout       time.Duration
	maxHeaderBytes    int
	http2             http2Params
	tls               tlsParams
	l4                bool // a tcp_proxy listener (l4Server)
	capture           bool // a capture listener (captureServer)
	// captureSubs: the params of a capture listener's other HTTP servers
	// (server.subs), printed; "" without.
	captureSubs string
}

// http2Params are the HTTP/2 settings a listener advertises to its clients
// (HttpConnectionManager.http2_protocol_options); zero: net/http's default
// (100 streams at least, 1 MiB windows).
type http2Params struct {
	maxConcurrentStreams int
	streamWindow         int // initial_stream_window_size: SETTINGS_INITIAL_WINDOW_SIZE
	connectionWindow     int // initial_connection_window_size: the connection's receive window
}

// config is p as net/http takes it; nil when p is all defaults.
func (p http2Params) config() *http.HTTP2Config {
	if p == (http2Params{}) {
		return nil
	}
	return &http.HTTP2Config{
		MaxConcurrentStreams:          p.maxConcurrentStreams,
		MaxReceiveBufferPerStream:     p.streamWindow,
		MaxReceiveBufferPerConnection: p.connectionWindow,
	}
}

// parseListener reads a Listener already checked (env.filters.Check) and
// compiles its http_filters and inline routes. old, the listener of the same
// name last accepted, is returned as is when l equals it, so that an
// unchanged listener is compiled once; an unchanged inline route table is
// reused too.
func parseListener(l *listenerv3.Listener, old *listenerSpec, env parseEnv) (*listenerSpec, error) {
	if old != nil && proto.Equal(old.config, l) {
		return old, nil
	}
	if isCaptureListener(l) {
		return parseCapture(l, old, env)
	}
	errorf := func(format string, args ...any) error {
		return fmt.Errorf("listener %q: "+format, append([]any{l.GetName()}, args...)...)
	}
	sa := l.GetAddress().GetSocketAddress()
	if _, err := netip.ParseAddr(sa.GetAddress()); err != nil {
		return nil, errorf("address.socket_address.address: %q is not an IP address", sa.GetAddress())
	}
	spec := &listenerSpec{
		config:  l,
		name:    l.GetName(),
		address: net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10)),
	}
	for i, aa := range l.GetAdditionalAddresses() {
		asa := aa.GetAddress().GetSocketAddress()
		if _, err := netip.ParseAddr(asa.GetAddress()); err != nil {
			return nil, errorf("additional_addresses[%d].address.socket_address.address: %q is not an IP address", i, asa.GetAddress())
		}
		addr := net.JoinHostPort(asa.GetAddress(), strconv.FormatUint(uint64(asa.GetPortValue()), 10))
		if addr == spec.address || slices.Contains(spec.additional, addr) {
			return nil, errorf("additional_addresses[%d]: address %s is listed twice", i, addr)
		}
		spec.additional = append(spec.additional, addr)
	}
	if isL4Listener(l) {
		var err error
		if spec.l4, spec.params.tls, err = parseL4(l, env.haveIdentity); err != nil {
			return nil, errorf("%w", err)
		}
		spec.params.l4 = true
		// The mesh's ALPN (h2, http/1.1) is offered; the bytes after the
		// handshake are the app's whatever is negotiated.
		spec.params.http1 = spec.l4.mtls
		spec.secrets = xdsclient.SecretNames([]proto.Message{l})
		for _, c := range spec.l4.chains {
			spec.accessLogs = append(spec.accessLogs, c.proxy.accessLogs...)
		}
		return spec, nil
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		return nil, errorf("filter_chains[0].filters[0].typed_config: %w", err)
	}
	for i, chain := range l.GetFilterChains()[1:] {
		other := &hcmv3.HttpConnectionManager{}
		if err := chain.GetFilters()[0].GetTypedConfig().UnmarshalTo(other); err != nil {
			return nil, errorf("filter_chains[%d].filters[0].typed_config: %w", i+1, err)
		}
		if !proto.Equal(hcm, other) {
			return nil, errorf("filter_chains[%d].filters[0]: every filter chain must carry the same http_connection_manager", i+1)
		}
	}
	tlsParams, terminate, err := parseListenerTLS(l, env.haveIdentity)
	if err != nil {
		return nil, errorf("%w", err)
	}
	spec.params.tls, spec.terminate = tlsParams, terminate
	spec.secrets = xdsclient.SecretNames([]proto.Message{l})
	switch hcm.GetCodecType() {
	case hcmv3.HttpConnectionManager_AUTO:
		spec.params.http1, spec.params.h2c = true, true
	case hcmv3.HttpConnectionManager_HTTP1:
		spec.params.http1 = true
	case hcmv3.HttpConnectionManager_HTTP2:
		spec.params.h2c = true
	default:
		return nil, errorf("codec_type %v not supported", hcm.GetCodecType())
	}
	spec.params.readHeaderTimeout = defaultRequestHeadersTimeout
	if d := hcm.GetRequestHeadersTimeout(); d != nil {
		spec.params.readHeaderTimeout = d.AsDuration() // zero: no timeout
	}
	spec.params.idleTimeout = defaultIdleTimeout
	if d := hcm.GetCommonHttpProtocolOptions().GetIdleTimeout(); d != nil {
		spec.params.idleTimeout = d.AsDuration()
		if spec.params.idleTimeout == 0 {
			spec.params.idleTimeout = -1 // Envoy: zero disables; http.Server: negative disables
		}
	}
	spec.params.maxHeaderBytes = defaultMaxRequestHeaderBytes
	if kb := hcm.GetMaxRequestHeadersKb(); kb != nil {
		spec.params.maxHeaderBytes = int(kb.GetValue()) << 10
	}
	if h2 := hcm.GetHttp2ProtocolOptions(); h2 != nil {
		// Ranges checked by the options' validation rules (xdscheck).
		spec.params.http2 = http2Params{
			maxConcurrentStreams: int(h2.GetMaxConcurrentStreams().GetValue()),
			streamWindow:         int(h2.GetInitialStreamWindowSize().GetValue()),
			connectionWindow:     int(h2.GetInitialConnectionWindowSize().GetValue()),
		}
	}
	if spec.params.tls.mode != modePlaintext && !spec.params.http1 && !slices.Contains(strings.Split(spec.params.tls.alpn, ","), "h2") {
		return nil, errorf("transport_socket: alpn_protocols must offer h2 for codec_type HTTP2")
	}
	spec.useRemoteAddress = hcm.GetUseRemoteAddress().GetValue()
	spec.stripAnyHostPort = hcm.GetStripAnyHostPort()
	spec.normalizePath = hcm.GetNormalizePath().GetValue()
	spec.mergeSlashes = hcm.GetMergeSlashes()
	for _, uc := range hcm.GetUpgradeConfigs() {
		// xdscheck admits websocket alone, without filters.
		spec.webSocket = uc.GetEnabled() == nil || uc.GetEnabled().GetValue()
	}
	logger := env.logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	filterEnv := httpfilter.Env{Logger: logger.With("listener", spec.name), Stats: env.filterStats}
	if spec.filters, err = env.filters.Chain(hcm.GetHttpFilters(), filterEnv); err != nil {
		return nil, errorf("%w", err)
	}
	spec.perRouteTypes = env.filters.PerRouteTypes(hcm.GetHttpFilters())
	if spec.tracing, err = tracing.Parse(hcm.GetTracing()); err != nil {
		return nil, errorf("filter_chains[0].filters[0].typed_config.%w", err)
	}
	if spec.accessLogs, err = accesslog.Parse(hcm.GetAccessLog()); err != nil {
		return nil, errorf("filter_chains[0].filters[0].typed_config.%w", err)
	}
	if rc := hcm.GetRouteConfig(); rc != nil {
		var oldInline *routeSpec
		if old != nil {
			oldInline = old.inline
		}
		inline, err := compileRoutes(rc, oldInline, env.filters)
		if err != nil {
			return nil, errorf("route_config: %w", err)
		}
		spec.inline = inline
	} else {
		spec.rds = hcm.GetRds().GetRouteConfigName()
		if spec.rds == "" {
			return nil, errorf("rds.route_config_name: required")
		}
	}
	return spec, nil
}

// server is one bound listener: its socket, http.Server and handler, and
// the route tables it serves.
type server struct {
	listener string // name of the listener it serves
	address  string // as configured
	params   serverParams
	secrets  []string // SDS secrets it needs before serving
	started  bool     // Serve is running
	bound    time.Time
	// replacement is a newer listener at the same address with other server
	// settings, held until its secrets arrive (make before break).
	replacement      *listenerSpec
	replacementSince time.Time
	ln               net.Listener
	limiter          *connLimiter // counts the connections of ln, under ln's TLS
	http             servingServer
	handler          *listenerHandler
	// subs are the HTTP servers of a capture listener's other
	// HttpConnectionManagers (listenerSpec.captureHTTP[1:]), each with
	// its own handler and route table; they are served and stopped by
	// http (a captureServer).
	subs []*server
	// l4 serves a tcp_proxy listener (it is http too), or the tcp_proxy
	// chains of a capture listener; nil for HTTP.
	l4 *l4Server
	// l4Stored is what l4's configuration was built from (syncL4).
	l4Stored struct {
		spec     *listenerSpec
		clusters map[string]*upstream.Cluster
	}

	active       *routeSpec // table the handler serves
	pending      *routeSpec // newer table held until its clusters arrive
	pendingSince time.Time
	// stored is what the handler's configuration was built from (sync
	// stores a new one only when one of them changed).
	stored struct {
		spec     *listenerSpec
		routes   *routeSpec
		clusters map[string]*upstream.Cluster
	}
}

// servingServer is what a listener's server is driven through: an
// *http.Server (h2c only), the HTTP/1.1 fast path in front of one
// (Options.FastHTTP1), or one behind the HTTP/1.1 framing guard.
type servingServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

// primary is spec's address ("" for nil).
func (spec *listenerSpec) primary() string {
	if spec == nil {
		return ""
	}
	return spec.address
}

// addresses are every address spec is served on: address, then the
// additional ones.
func (spec *listenerSpec) addresses() []string {
	return append([]string{spec.address}, spec.additional...)
}

// listen binds address, one of spec's, and prepares (but does not start)
// its server.
func (p *Proxy) listen(spec *listenerSpec, address string) (*server, error) {
	logger := p.logger.With("listener", spec.name)
	if spec.l4 != nil {
		return p.listenL4(spec, address, logger)
	}
	if spec.capture != nil {
		return p.listenCapture(spec, address, logger)
	}
	bound, err := p.bind(address)
	if err != nil {
		return nil, fmt.Errorf("listener %q: bind %s: %w", spec.name, address, err)
	}
	limiter := newConnLimiter(bound, spec.name, p.opts.MaxConnections, &p.conns, logger)
	s, err := p.httpServer(spec, address, limiter, limiter, logger)
	if err != nil {
		_ = bound.Close()
		return nil, err
	}
	return s, nil
}

// httpServer prepares the server of spec, an HTTP listener, serving the
// connections of ln (counted by limiter).
func (p *Proxy) httpServer(spec *listenerSpec, address string, limiter *connLimiter, ln net.Listener, logger *slog.Logger) (*server, error) {
	var tlsConfig *tls.Config
	switch spec.params.tls.mode {
	case modePlaintext:
	case modeTerminate:
		var err error
		if tlsConfig, err = p.terminateTLSConfig(spec); err != nil {
			return nil, fmt.Errorf("listener %q: %w", spec.name, err)
		}
	default:
		var err error
		if tlsConfig, err = p.serverTLSConfig(spec.params); err != nil {
			return nil, fmt.Errorf("listener %q: %w", spec.name, err)
		}
	}
	handler := &listenerHandler{proxy: httpproxy.NewHandler(logger)}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(spec.params.http1)
	protocols.SetUnencryptedHTTP2(spec.params.h2c)
	httpServer := &http.Server{
		Handler:           handler,
		Protocols:         protocols,
		ReadHeaderTimeout: spec.params.readHeaderTimeout,
		IdleTimeout:       spec.params.idleTimeout,
		MaxHeaderBytes:    spec.params.maxHeaderBytes, // HTTP/2: SETTINGS_MAX_HEADER_LIST_SIZE too
		HTTP2:             spec.params.http2.config(),
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		// Called by the fast path too: the limiter's list of idle
		// connections follows it.
		ConnState: limiter.connState,
	}
	if tlsConfig != nil {
		protocols.SetHTTP2(spec.params.h2c) // h2 over TLS, negotiated by ALPN
		httpServer.ConnContext = connIdentity
		httpServer.Handler = retireExpiring(handler)
		if hasServerNames(spec.terminate) {
			httpServer.Handler = misdirected(httpServer.Handler, spec.terminate)
		}
		ln = newTLSListener(ln, tlsConfig, spec.params.tls.mode == modePermissive, logger)
	}
	// A plaintext listener has no peer identity, as in Envoy: an
	// authenticated principal never matches there. On a sidecar's outbound
	// listener the control plane resolves a mesh route's rules for the
	// calling service instead (docs/security.md).
	var srv servingServer = httpServer
	if p.opts.FastHTTP1 && spec.params.http1 {
		// The fast path serves the body-less HTTP/1.x requests and hands
		// everything else (h2c, ALPN h2, bodies, malformed requests) to
		// httpServer, configured as without it.
		srv = &h1server.Server{Fallback: httpServer}
	} else if spec.params.http1 {
		// net/http alone, with the framing guard the fast path puts in
		// front of it too: both refuse the same requests.
		srv = &h1server.Guarded{Server: httpServer}
	}
	return &server{
		listener: spec.name,
		address:  address,
		params:   spec.params,
		secrets:  spec.secrets,
		bound:    time.Now(),
		ln:       ln,
		limiter:  limiter,
		handler:  handler,
		http:     srv,
	}, nil
}

// listenerHandler is the http.Handler of one server: the listener-level
// request adjustments of its HttpConnectionManager in front of the shared
// httpproxy.Handler. It takes no lock and allocates nothing.
type listenerHandler struct {
	stripAnyHostPort atomic.Bool
	proxy            *httpproxy.Handler
}

func (h *listenerHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.stripAnyHostPort.Load() {
		r.Host = router.HostWithoutPort(r.Host)
	}
	h.proxy.ServeHTTP(w, r)
}

// serve starts s in the background.
func (p *Proxy) serve(s *server) {
	s.started = true
	p.logger.Info("listener serving", "listener", s.listener, "address", s.ln.Addr().String(), "tls", s.params.tls.mode.String())
	p.serveWG.Go(func() {
		if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			p.logger.Error("listener stopped", "listener", s.listener, "error", err)
		}
	})
}

// drainInBackground lets s finish its in-flight requests (up to
// Options.DrainTimeout, or until StopNow).
func (p *Proxy) drainInBackground(s *server) {
	p.logger.Info("listener removed: draining", "listener", s.listener, "address", s.address)
	p.serveWG.Go(func() {
		ctx, cancel := context.WithTimeout(p.abort, p.opts.DrainTimeout)
		defer cancel()
		s.shutdown(ctx, p.logger)
	})
}

// shutdown stops s gracefully, forcing connections closed when ctx ends first.
// The WebSockets it carries (connections the http.Server no longer
// tracks) get until ctx ends too, then are closed.
func (s *server) shutdown(ctx context.Context, logger *slog.Logger) {
	if err := s.http.Shutdown(ctx); err != nil {
		logger.Warn("listener drain timed out; closing connections", "listener", s.listener, "error", err)
		_ = s.http.Close()
	}
	for _, h := range append([]*server{s}, s.subs...) {
		if h.handler == nil {
			continue // an L4 listener: its connections are the http.Server's to close
		}
		if n := h.handler.proxy.DrainTunnels(ctx); n > 0 {
			logger.Info("listener drain timed out; WebSockets closed", "listener", s.listener, "websockets", n)
		}
	}
}

// httpServers yields every HTTP server with the listener spec it serves
// (nil once its listener is gone): each server of p.servers, then the
// subs of a capture listener's, each with its HttpConnectionManager's
// spec. p.mu is held.
func (p *Proxy) httpServers(yield func(*server, *listenerSpec) bool) {
	for _, s := range p.servers {
		spec := p.state.listeners[s.listener]
		if !yield(s, spec) {
			return
		}
		for i, sub := range s.subs {
			var subSpec *listenerSpec
			if spec != nil && i+1 < len(spec.captureHTTP) {
				subSpec = spec.captureHTTP[i+1]
			}
			if !yield(sub, subSpec) {
				return
			}
		}
	}
}
