package dataplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/meshgate/meshgate/dataplane/accesslog"
	"github.com/meshgate/meshgate/dataplane/filters/rbac"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/metrics"
	"github.com/meshgate/meshgate/dataplane/peer"
	"github.com/meshgate/meshgate/dataplane/upstream"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// L4 defaults.
const (
	// defaultTCPIdleTimeout is tcp_proxy's idle_timeout when unset
	// (Envoy's): a connection with no byte either way for that long is
	// closed.
	defaultTCPIdleTimeout = time.Hour
	// clientHelloTimeout bounds the wait for the ClientHello whose SNI
	// chooses a filter chain (Envoy's tls_inspector has 15 s).
	clientHelloTimeout = 15 * time.Second
	// maxClientHello bounds the bytes read to find the SNI.
	maxClientHello = 64 << 10
	// tcpCopyBuffer is the buffer of each direction of a proxied connection.
	tcpCopyBuffer = 32 << 10
)

// l4Spec is a listener whose filter chains proxy bytes (tcp_proxy) rather
// than HTTP: a gateway's TCP and TLS-passthrough ports.
type l4Spec struct {
	// inspect: the listener has the tls_inspector, chains are chosen by
	// transport protocol and SNI.
	inspect bool
	// mtls: the chains terminate mesh mTLS (a sidecar's inbound listener
	// of a TCP service): the listener's TLS layer hands over connections
	// already handshaken (or plaintext, PERMISSIVE), whose transport
	// protocol chooses the chain.
	mtls   bool
	chains []l4Chain
}

// l4Chain is one filter chain of an l4Spec.
type l4Chain struct {
	name string
	// transport is the chain's filter_chain_match.transport_protocol:
	// "tls", "raw_buffer" or "" (either).
	transport   string
	serverNames []string
	// rbac are the network RBAC filters before the tcp_proxy, in order:
	// a connection one of them denies is closed.
	rbac  []*rbac.Engine
	proxy tcpProxySpec
	// terminate, when set, is the TLS the chain terminates with
	// certificates received over SDS (a gateway's TLS listener in mode
	// Terminate) before proxying the plaintext bytes; nil: the bytes pass
	// as they come (TCP, TLS passthrough).
	terminate *terminateChain
}

// tcpProxySpec is a parsed tcp_proxy.
type tcpProxySpec struct {
	statPrefix string
	clusters   []string
	weights    []uint32
	total      uint32
	idle       time.Duration // <= 0: none
	accessLogs []*accesslog.Settings
}

// isL4Listener reports whether l's filter chains carry tcp_proxy
// (xdscheck keeps a listener's chains all of one kind).
func isL4Listener(l *listenerv3.Listener) bool {
	chains := l.GetFilterChains()
	if len(chains) == 0 || len(chains[0].GetFilters()) == 0 {
		return false
	}
	filters := chains[0].GetFilters()
	return filters[len(filters)-1].GetTypedConfig().MessageName() == xdscheck.TCPProxyType
}

// parseL4 reads the filter chains of a listener whose chains carry
// tcp_proxy (checked by xdscheck), and the TLS they terminate, when they
// carry the mesh's DownstreamTlsContext (haveIdentity: the proxy has the
// identity it needs).
func parseL4(l *listenerv3.Listener, haveIdentity bool) (*l4Spec, tlsParams, error) {
	spec := &l4Spec{inspect: len(l.GetListenerFilters()) > 0}
	var params tlsParams
	if terminatingL4(l) {
		// Each chain with certificates terminates TLS itself, after the
		// tls_inspector chose it; the others pass TLS through.
		spec, err := parseL4Chains(l, spec)
		return spec, params, err
	}
	if slices.ContainsFunc(l.GetFilterChains(), func(c *listenerv3.FilterChain) bool { return c.GetTransportSocket() != nil }) {
		var terminate []terminateChain
		var err error
		if params, terminate, err = parseListenerTLS(l, haveIdentity); err != nil {
			return nil, params, err
		}
		if len(terminate) > 0 {
			return nil, params, errors.New("filter_chains: certificates received over SDS are not supported with tcp_proxy")
		}
		spec.mtls = true
	}
	spec2, err := parseL4Chains(l, spec)
	return spec2, params, err
}

// terminatingL4 reports whether a chain of l presents certificates
// received over SDS (a gateway's TLS listener in mode Terminate).
func terminatingL4(l *listenerv3.Listener) bool {
	return slices.ContainsFunc(l.GetFilterChains(), func(c *listenerv3.FilterChain) bool {
		ctx := &tlsv3.DownstreamTlsContext{}
		return c.GetTransportSocket() != nil && c.GetTransportSocket().GetTypedConfig().UnmarshalTo(ctx) == nil && terminating(ctx)
	})
}

// parseL4Terminate reads the TLS a chain of an L4 listener terminates
// with certificates received over SDS: chosen by the tls_inspector (its
// transport_protocol "tls"), no client certificate.
func parseL4Terminate(path string, chain *listenerv3.FilterChain, spec *l4Spec) (*terminateChain, error) {
	m := chain.GetFilterChainMatch()
	if !spec.inspect || m.GetTransportProtocol() != "tls" {
		return nil, fmt.Errorf("%s.filter_chain_match.transport_protocol: \"tls\" (and the tls_inspector) required with certificates received over SDS", path)
	}
	if len(m.GetApplicationProtocols()) > 0 {
		return nil, fmt.Errorf("%s.filter_chain_match.application_protocols: not supported with tcp_proxy", path)
	}
	ctx := &tlsv3.DownstreamTlsContext{}
	if err := chain.GetTransportSocket().GetTypedConfig().UnmarshalTo(ctx); err != nil {
		return nil, fmt.Errorf("%s.transport_socket.typed_config: %w", path, err)
	}
	if !terminating(ctx) {
		return nil, fmt.Errorf("%s.transport_socket: a listener with certificates received over SDS has no other TLS chains", path)
	}
	c, err := parseTerminateChain(m.GetServerNames(), nil, ctx)
	if err != nil {
		return nil, fmt.Errorf("%s.transport_socket.typed_config.%w", path, err)
	}
	return &c, nil
}

// parseL4Chains reads the chains of an L4 listener into spec.
func parseL4Chains(l *listenerv3.Listener, spec *l4Spec) (*l4Spec, error) {
	seen := map[string]bool{}
	for i, chain := range l.GetFilterChains() {
		path := fmt.Sprintf("filter_chains[%d]", i)
		m := chain.GetFilterChainMatch()
		c := l4Chain{name: chain.GetName(), transport: m.GetTransportProtocol(), serverNames: m.GetServerNames()}
		if len(c.serverNames) > 0 && spec.mtls {
			return nil, fmt.Errorf("%s.filter_chain_match.server_names: not supported with mesh mTLS", path)
		}
		if (c.transport != "" || len(c.serverNames) > 0) && !spec.inspect {
			return nil, fmt.Errorf("%s.filter_chain_match: needs the tls_inspector listener filter", path)
		}
		key := fmt.Sprint(c.transport, c.serverNames)
		if seen[key] {
			return nil, fmt.Errorf("%s.filter_chain_match: transport_protocol %q and these server_names matched by two chains", path, c.transport)
		}
		seen[key] = true
		if chain.GetTransportSocket() != nil && !spec.mtls {
			var err error
			if c.terminate, err = parseL4Terminate(path, chain, spec); err != nil {
				return nil, err
			}
		}
		filters := chain.GetFilters()
		for j, f := range filters[:len(filters)-1] {
			nr := &netrbacv3.RBAC{}
			if err := f.GetTypedConfig().UnmarshalTo(nr); err != nil {
				return nil, fmt.Errorf("%s.filters[%d].typed_config: %w", path, j, err)
			}
			e, err := rbac.Compile(&rbachttpv3.RBAC{Rules: nr.GetRules(), RulesStatPrefix: nr.GetStatPrefix()})
			if err != nil {
				return nil, fmt.Errorf("%s.filters[%d].typed_config: %w", path, j, err)
			}
			c.rbac = append(c.rbac, e)
		}
		tp := &tcpproxyv3.TcpProxy{}
		if err := filters[len(filters)-1].GetTypedConfig().UnmarshalTo(tp); err != nil {
			return nil, fmt.Errorf("%s.filters[%d].typed_config: %w", path, len(filters)-1, err)
		}
		c.proxy = tcpProxySpec{statPrefix: tp.GetStatPrefix(), idle: defaultTCPIdleTimeout}
		if d := tp.GetIdleTimeout(); d != nil {
			c.proxy.idle = d.AsDuration() // zero: no idle timeout (Envoy's)
		}
		switch {
		case tp.GetCluster() != "":
			c.proxy.clusters, c.proxy.weights, c.proxy.total = []string{tp.GetCluster()}, []uint32{1}, 1
		case tp.GetWeightedClusters() != nil:
			for _, cw := range tp.GetWeightedClusters().GetClusters() {
				c.proxy.clusters = append(c.proxy.clusters, cw.GetName())
				c.proxy.weights = append(c.proxy.weights, cw.GetWeight())
				c.proxy.total += cw.GetWeight()
			}
			if c.proxy.total == 0 {
				return nil, fmt.Errorf("%s.filters[0].typed_config.weighted_clusters: every weight is zero", path)
			}
		default:
			return nil, fmt.Errorf("%s.filters[0].typed_config: cluster or weighted_clusters required", path)
		}
		var err error
		if c.proxy.accessLogs, err = accesslog.Parse(tp.GetAccessLog()); err != nil {
			return nil, fmt.Errorf("%s.filters[0].typed_config.%w", path, err)
		}
		spec.chains = append(spec.chains, c)
	}
	return spec, nil
}

// pick chooses a cluster by weight.
func (t *tcpProxySpec) pick() string {
	if len(t.clusters) == 1 {
		return t.clusters[0]
	}
	n := rand.Uint32N(t.total)
	for i, w := range t.weights {
		if n < w {
			return t.clusters[i]
		}
		n -= w
	}
	return t.clusters[len(t.clusters)-1]
}

// match is the index of the chain a connection of transport ("tls" or
// "raw_buffer") and SNI selects, as Envoy matches filter chains: by
// server name (exact, then the longest "*." suffix, then none), among the
// chains of its transport protocol or of none; -1 for none.
func (s *l4Spec) match(transport, sni string) int {
	var idx []int
	var selectors []terminateChain
	for i, c := range s.chains {
		if c.transport == "" || c.transport == transport {
			idx = append(idx, i)
			selectors = append(selectors, terminateChain{serverNames: c.serverNames})
		}
	}
	if j := selectChain(selectors, sni, nil); j >= 0 {
		return idx[j]
	}
	return -1
}

// l4Config is what an L4 server proxies with: swapped whole by sync.
type l4Config struct {
	spec     *l4Spec
	clusters map[string]*upstream.Cluster
	logs     [][]accesslog.Log // by chain
	// tls are the TLS configs of the chains that terminate (nil for the
	// others), by chain.
	tls    []*tls.Config
	stats  *metrics.TCPListener
	denied *httpfilter.Counters // the RBAC filters' denials (rbac.StatDenied)
	// capture is the listener's capture spec, for a capture listener.
	capture *captureSpec
}

// l4Server serves a listener of tcp_proxy chains: each accepted
// connection is matched to a chain and its bytes are copied to and from
// an endpoint of the cluster the chain picks.
type l4Server struct {
	listener string
	logger   *slog.Logger
	limiter  *connLimiter
	config   atomic.Pointer[l4Config]

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
	ln     net.Listener
}

func newL4Server(listener string, limiter *connLimiter, logger *slog.Logger) *l4Server {
	return &l4Server{listener: listener, limiter: limiter, logger: logger, conns: map[net.Conn]struct{}{}}
}

// Serve accepts connections until ln is closed.
func (s *l4Server) Serve(ln net.Listener) error {
	return s.serveWith(ln, func(c net.Conn) {
		defer c.Close()
		s.handle(c)
	})
}

// serveWith accepts connections until ln is closed, each handled by
// handle in a goroutine of its own.
func (s *l4Server) serveWith(ln net.Listener, handle func(net.Conn)) error {
	s.mu.Lock()
	if s.closed {
		// Shut down before it started serving: nobody else closes ln.
		s.mu.Unlock()
		_ = ln.Close()
		return http.ErrServerClosed
	}
	s.ln = ln
	s.mu.Unlock()
	for {
		conn, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		// A proxied connection is always busy: never reclaimed as idle.
		s.limiter.connState(conn, http.StateActive)
		if !s.track(conn, true) {
			_ = conn.Close()
			return http.ErrServerClosed
		}
		s.wg.Go(func() {
			defer s.track(conn, false)
			handle(conn)
		})
	}
}

// track adds or removes a connection; false when the server is closed.
func (s *l4Server) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closed {
			return false
		}
		s.conns[c] = struct{}{}
		return true
	}
	delete(s.conns, c)
	return true
}

// Shutdown stops accepting and waits for the open connections to end,
// until ctx does (then ctx's error: the caller closes them).
func (s *l4Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	if s.ln != nil {
		_ = s.ln.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes the listener and every open connection.
func (s *l4Server) Close() error {
	s.mu.Lock()
	s.closed = true
	if s.ln != nil {
		_ = s.ln.Close()
	}
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	return nil
}

// handle proxies one downstream connection.
func (s *l4Server) handle(down net.Conn) {
	cfg := s.config.Load()
	if cfg == nil {
		return // not configured yet: refused, as a listener without a matching chain
	}
	transport, sni, prefix := "raw_buffer", "", []byte(nil)
	ctx := context.Background()
	switch {
	case cfg.spec.mtls:
		// Handshaken by the listener's TLS layer (plaintext: PERMISSIVE).
		if _, ok := down.(*tls.Conn); ok {
			transport = "tls"
		}
		ctx = connIdentity(ctx, down)
	case cfg.spec.inspect:
		var err error
		transport, sni, prefix, err = inspectClientHello(down)
		if err != nil {
			s.logger.Debug("tcp connection: reading its first bytes failed", "listener", s.listener, "error", err)
			return
		}
	}
	i := cfg.spec.match(transport, sni)
	if i < 0 {
		s.logger.Debug("tcp connection: no filter chain matches", "listener", s.listener, "transport", transport, "server_name", sni)
		return
	}
	s.proxyChain(ctx, down, cfg, i, sni, prefix, netip.AddrPort{})
}

// proxyChain proxies down, whose first bytes (read to choose its chain) are
// prefix, with chain i of cfg; dst is its original destination, where an
// ORIGINAL_DST cluster sends it (invalid: none). down is closed by the
// caller.
func (s *l4Server) proxyChain(ctx context.Context, down net.Conn, cfg *l4Config, i int, sni string, prefix []byte, dst netip.AddrPort) {
	chain := &cfg.spec.chains[i]
	if chain.terminate != nil {
		tc, err := terminateL4(down, prefix, cfg.tls[i])
		if err != nil {
			s.logger.Debug("tcp connection: TLS handshake failed", "listener", s.listener, "server_name", sni, "error", err)
			return
		}
		defer tc.Close()
		down, prefix = tc, nil
	}
	var entry *accesslog.Entry
	if len(cfg.logs[i]) > 0 {
		entry = accesslog.StartConn(ctx, down.RemoteAddr().String())
		entry.SetRoute(chain.name, "")
		defer accesslog.Finish(cfg.logs[i], entry)
	}
	if len(chain.rbac) > 0 {
		req := (&http.Request{RemoteAddr: down.RemoteAddr().String(), URL: &url.URL{Path: "/"}, Header: http.Header{}}).WithContext(ctx)
		for _, e := range chain.rbac {
			if allowed, policy := e.Evaluate(req); !allowed {
				key := e.StatKey(policy)
				cfg.denied.Inc(key)
				entry.Deny(key)
				s.logger.Info("tcp connection denied by RBAC", "listener", s.listener, "peer", peer.Identity(ctx), "policy", key)
				return
			}
		}
	}
	name := chain.proxy.pick()
	entry.SetUpstream(name, "")
	cluster := cfg.clusters[name]
	if cluster == nil {
		entry.Fail(accesslog.NoClusterFound, accesslog.DetailsClusterNotFound)
		return
	}
	var endpoint string
	if cluster.OriginalDestination() {
		if !dst.IsValid() {
			entry.Fail(accesslog.NoHealthyUpstream, accesslog.DetailsNoHealthyUpstream)
			return
		}
		endpoint = dst.String()
	} else {
		var ok bool
		if endpoint, ok = cluster.Next(); !ok {
			entry.Fail(accesslog.NoHealthyUpstream, accesslog.DetailsNoHealthyUpstream)
			return
		}
	}
	entry.SetUpstream(name, endpoint)
	stats := cfg.stats.Cluster(name)
	stats.Opened()
	defer stats.Closed()
	ctx, cancel := context.WithTimeout(context.Background(), upstream.DefaultConnectTimeout*2)
	up, err := cluster.DialStream(ctx, endpoint)
	cancel()
	if err != nil {
		var overflow *upstream.OverflowError
		if errors.As(err, &overflow) {
			entry.Fail(accesslog.UpstreamOverflow, accesslog.DetailsOverflow)
		} else {
			entry.Fail(accesslog.UpstreamConnectionFailure, accesslog.DetailsConnectFailure)
		}
		s.logger.Debug("tcp connection: connecting upstream failed", "listener", s.listener, "cluster", name, "endpoint", endpoint, "error", err)
		return
	}
	defer up.Close()
	if len(prefix) > 0 {
		if _, err := up.Write(prefix); err != nil {
			entry.Fail(accesslog.UpstreamConnectionTermination, accesslog.DetailsConnectTerminated)
			return
		}
	}
	sent, received := pipe(down, up, chain.proxy.idle)
	received += int64(len(prefix))
	entry.AddTunnelBytes(sent, received)
	stats.Bytes(received, sent)
}

// pipe copies bytes both ways until both directions end (a half-close is
// passed on) or the connection is idle for idle (<= 0: never). It returns
// the bytes sent to the client and received from it.
func pipe(down, up net.Conn, idle time.Duration) (sent, received int64) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	copyHalf := func(dst, src net.Conn, n *int64) {
		defer wg.Done()
		buf := make([]byte, tcpCopyBuffer)
		for {
			k, err := src.Read(buf)
			if k > 0 {
				last.Store(time.Now().UnixNano())
				if _, werr := dst.Write(buf[:k]); werr != nil {
					_ = src.Close()
					_ = dst.Close()
					return
				}
				*n += int64(k)
			}
			if err != nil {
				cw, ok := dst.(interface{ CloseWrite() error })
				if !ok || !errors.Is(err, io.EOF) || cw.CloseWrite() != nil {
					_ = dst.Close()
					_ = src.Close()
				}
				return
			}
		}
	}
	wg.Add(2)
	go copyHalf(up, down, &received)
	go copyHalf(down, up, &sent)
	if idle > 0 {
		go func() {
			t := time.NewTimer(idle)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					quiet := time.Since(time.Unix(0, last.Load()))
					if quiet >= idle {
						_ = down.Close()
						_ = up.Close()
						return
					}
					t.Reset(idle - quiet)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	return sent, received
}

// inspectClientHello reads the first bytes of conn: a TLS ClientHello
// (transport "tls" and its SNI) or anything else ("raw_buffer"). It
// returns the bytes read, which the upstream must receive first.
func inspectClientHello(conn net.Conn) (transport, sni string, read []byte, err error) {
	if err := conn.SetReadDeadline(time.Now().Add(clientHelloTimeout)); err != nil {
		return "", "", nil, err
	}
	defer func() { _ = conn.SetReadDeadline(time.Time{}) }()
	rec := &recordingConn{Conn: conn, limit: maxClientHello}
	first := make([]byte, 1)
	if _, err := io.ReadFull(rec, first); err != nil {
		return "", "", rec.buf.Bytes(), err
	}
	if first[0] != 0x16 { // not a TLS handshake record
		return "raw_buffer", "", rec.buf.Bytes(), nil
	}
	rec.replay = first
	var hello *tls.ClientHelloInfo
	errStop := errors.New("client hello read")
	hs := tls.Server(rec, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		hello = h
		return nil, errStop
	}})
	_ = hs.Handshake()
	if hello == nil {
		// Not a ClientHello crypto/tls can read: TLS, without an SNI.
		return "tls", "", rec.buf.Bytes(), nil
	}
	return "tls", hello.ServerName, rec.buf.Bytes(), nil
}

// recordingConn reads from Conn, keeping what it read (up to limit),
// first serving replay; it writes nothing (the handshake's alert is
// dropped).
type recordingConn struct {
	net.Conn
	buf    bytes.Buffer
	limit  int
	replay []byte
}

func (c *recordingConn) Read(p []byte) (int, error) {
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		return n, nil
	}
	if c.buf.Len() >= c.limit {
		return 0, errors.New("client hello too large")
	}
	p = p[:min(len(p), c.limit-c.buf.Len())]
	n, err := c.Conn.Read(p)
	c.buf.Write(p[:n])
	return n, err
}

func (c *recordingConn) Write(p []byte) (int, error) { return len(p), nil }

// listenL4 binds address for spec, a tcp_proxy listener, and prepares its
// server; sync gives it its configuration.
func (p *Proxy) listenL4(spec *listenerSpec, address string, logger *slog.Logger) (*server, error) {
	bound, err := p.bind(address)
	if err != nil {
		return nil, fmt.Errorf("listener %q: bind %s: %w", spec.name, address, err)
	}
	limiter := newConnLimiter(bound, spec.name, p.opts.MaxConnections, &p.conns, logger)
	var ln net.Listener = limiter
	if spec.params.tls.mode != modePlaintext {
		tlsConfig, err := p.serverTLSConfig(spec.params)
		if err != nil {
			_ = bound.Close()
			return nil, fmt.Errorf("listener %q: %w", spec.name, err)
		}
		ln = newTLSListener(ln, tlsConfig, spec.params.tls.mode == modePermissive, logger)
	}
	l4 := newL4Server(spec.name, limiter, logger)
	return &server{
		listener: spec.name,
		address:  address,
		params:   spec.params,
		secrets:  spec.secrets,
		bound:    time.Now(),
		ln:       ln,
		limiter:  limiter,
		http:     l4,
		l4:       l4,
	}, nil
}

// syncL4 stores, into every tcp_proxy server whose listener, clusters or
// access logs changed, its new configuration. p.mu is held.
func (p *Proxy) syncL4(clusters map[string]*upstream.Cluster) {
	for _, s := range p.servers {
		if s.l4 == nil {
			continue
		}
		spec := p.state.listeners[s.listener]
		if spec == nil {
			continue
		}
		l4 := spec.l4
		if spec.capture != nil {
			l4 = spec.capture.l4
		}
		if l4 == nil {
			continue
		}
		if s.l4Stored.spec == spec && maps.Equal(s.l4Stored.clusters, clusters) {
			continue
		}
		cfg := &l4Config{spec: l4, clusters: clusters, stats: p.metrics.tcp.Listener(spec.name),
			denied: p.filterStats.Counters(rbac.StatDenied), capture: spec.capture}
		for _, c := range l4.chains {
			cfg.logs = append(cfg.logs, p.accessLogsFor(c.proxy.accessLogs))
			var tc *tls.Config
			if c.terminate != nil {
				tc = p.l4TerminateConfig(c.terminate)
			}
			cfg.tls = append(cfg.tls, tc)
		}
		s.l4.config.Store(cfg)
		s.l4Stored.spec, s.l4Stored.clusters = spec, clusters
	}
}

// l4TerminateConfig is the tls.Config of a chain terminating TLS before
// its tcp_proxy: its certificate looked up in the accepted secrets per
// handshake (a certificate received anew applies to the next handshakes),
// its TLS versions, cipher suites and ALPN.
func (p *Proxy) l4TerminateConfig(c *terminateChain) *tls.Config {
	certs := c.certs
	return &tls.Config{
		MinVersion:   c.minVersion,
		CipherSuites: c.ciphers,
		NextProtos:   c.alpn,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return p.listenerCertificate(hello, certs)
		},
	}
}

// terminateL4 completes the TLS handshake of down, whose first bytes (the
// ClientHello the tls_inspector read) are prefix, within
// clientHelloTimeout.
func terminateL4(down net.Conn, prefix []byte, cfg *tls.Config) (*tls.Conn, error) {
	tc := tls.Server(&replayConn{Conn: down, pending: prefix}, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), clientHelloTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}

// replayConn replays the bytes already read from a connection before
// reading more.
type replayConn struct {
	net.Conn
	pending []byte
}

// NetConn is the connection under c (as tls.Conn.NetConn).
func (c *replayConn) NetConn() net.Conn { return c.Conn }

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
