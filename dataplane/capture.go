package dataplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/meshgate/meshgate/dataplane/origdst"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// defaultListenerFiltersTimeout is Envoy's listener_filters_timeout: how
// long the inspectors wait for a connection's first bytes.
const defaultListenerFiltersTimeout = 15 * time.Second

// maxHTTPRequestLine bounds the bytes the http_inspector reads to find a
// request line.
const maxHTTPRequestLine = 8 << 10

// h2Preface is the client connection preface of HTTP/2 (h2c with prior
// knowledge).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// captureSpec is a listener with the original_dst listener filter (a
// transparent sidecar's capture listener): each connection's chain is
// chosen by its original destination, then by what the inspectors read.
type captureSpec struct {
	chains []captureChain
	// fallback is the index of the default_filter_chain's tcp_proxy in
	// l4.chains; -1: none (a connection no chain matches is closed).
	fallback int
	// l4 holds the tcp_proxy chains (and the default one), parsed.
	l4 *l4Spec
	// timeout bounds the inspectors' wait; on timeout, the connection
	// goes on with what was read (continue_on_listener_filters_timeout)
	// or is closed.
	timeout            time.Duration
	continueOnTimeout  bool
	tlsInspector, http bool // the inspectors the listener has
}

// captureChain is one filter chain of a capture listener: its match, and
// where a connection it takes goes.
type captureChain struct {
	name      string
	port      uint16         // destination_port; 0: any
	prefixes  []netip.Prefix // prefix_ranges; none: any
	transport string         // transport_protocol; "": any
	protocols []string       // application_protocols; none: any
	// http: the chain's HttpConnectionManager takes it: the HTTP server
	// of listenerSpec.captureHTTP[httpIdx]; else the tcp_proxy l4 of
	// the l4Spec.
	http    bool
	httpIdx int
	l4      int
}

// isCaptureListener reports whether l reads the original destination of
// its connections.
func isCaptureListener(l *listenerv3.Listener) bool {
	return slices.ContainsFunc(l.GetListenerFilters(), func(f *listenerv3.ListenerFilter) bool {
		return f.GetTypedConfig().MessageName() == xdscheck.OriginalDstType
	})
}

// parseCapture reads a capture listener (checked by xdscheck): each
// distinct HttpConnectionManager of its HTTP chains (the control plane
// gives each service port its own route configuration) is parsed as the
// listener of an HTTP server of its own, chains carrying the same one
// sharing it; its tcp_proxy chains and default chain as an L4 listener's.
func parseCapture(l *listenerv3.Listener, old *listenerSpec, env parseEnv) (*listenerSpec, error) {
	errorf := func(format string, args ...any) error {
		return fmt.Errorf("listener %q: "+format, append([]any{l.GetName()}, args...)...)
	}
	cs := &captureSpec{fallback: -1, l4: &l4Spec{}, timeout: defaultListenerFiltersTimeout,
		continueOnTimeout: l.GetContinueOnListenerFiltersTimeout()}
	if d := l.GetListenerFiltersTimeout(); d != nil {
		cs.timeout = d.AsDuration() // zero: no timeout (Envoy's)
	}
	for _, f := range l.GetListenerFilters() {
		switch f.GetTypedConfig().MessageName() {
		case xdscheck.HTTPInspectorType:
			cs.http = true
		case xdscheck.OriginalDstType:
		default:
			cs.tlsInspector = true
		}
	}
	var httpChains []*listenerv3.FilterChain // one per distinct HttpConnectionManager
	httpByConfig := map[string]int{}         // its index, by the manager's bytes
	addL4 := func(path string, chain *listenerv3.FilterChain) (int, error) {
		one := &listenerv3.Listener{FilterChains: []*listenerv3.FilterChain{{Name: chain.GetName(), Filters: chain.GetFilters()}}}
		parsed, err := parseL4Chains(one, &l4Spec{})
		if err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
		cs.l4.chains = append(cs.l4.chains, parsed.chains[0])
		return len(cs.l4.chains) - 1, nil
	}
	for i, chain := range l.GetFilterChains() {
		path := fmt.Sprintf("filter_chains[%d]", i)
		m := chain.GetFilterChainMatch()
		c := captureChain{name: chain.GetName(), transport: m.GetTransportProtocol(), protocols: m.GetApplicationProtocols()}
		if p := m.GetDestinationPort(); p != nil {
			if p.GetValue() > 65535 {
				return nil, errorf("%s.filter_chain_match.destination_port: %d is not a port", path, p.GetValue())
			}
			c.port = uint16(p.GetValue())
		}
		for j, r := range m.GetPrefixRanges() {
			a, err := netip.ParseAddr(r.GetAddressPrefix())
			if err != nil {
				return nil, errorf("%s.filter_chain_match.prefix_ranges[%d].address_prefix: %q is not an IP address", path, j, r.GetAddressPrefix())
			}
			bits := a.BitLen()
			if r.GetPrefixLen() != nil {
				bits = int(r.GetPrefixLen().GetValue())
			}
			p, err := a.Unmap().Prefix(bits - (a.BitLen() - a.Unmap().BitLen()))
			if err != nil {
				return nil, errorf("%s.filter_chain_match.prefix_ranges[%d].prefix_len: %w", path, j, err)
			}
			c.prefixes = append(c.prefixes, p)
		}
		if (c.transport != "" && !cs.tlsInspector && !cs.http) || (len(c.protocols) > 0 && !cs.http && !cs.tlsInspector) {
			return nil, errorf("%s.filter_chain_match: transport_protocol and application_protocols need an inspector listener filter", path)
		}
		filters := chain.GetFilters()
		if filters[len(filters)-1].GetTypedConfig().MessageName() == xdscheck.TCPProxyType {
			var err error
			if c.l4, err = addL4(path, chain); err != nil {
				return nil, errorf("%w", err)
			}
		} else {
			c.http = true
			key := string(filters[len(filters)-1].GetTypedConfig().GetValue())
			idx, seen := httpByConfig[key]
			if !seen {
				idx = len(httpChains)
				httpByConfig[key] = idx
				httpChains = append(httpChains, chain)
			}
			c.httpIdx = idx
		}
		cs.chains = append(cs.chains, c)
	}
	if d := l.GetDefaultFilterChain(); d != nil {
		var err error
		if cs.fallback, err = addL4("default_filter_chain", d); err != nil {
			return nil, errorf("%w", err)
		}
	}
	var spec *listenerSpec
	var subs []*listenerSpec
	for i, chain := range httpChains {
		// An HTTP part: the listener as if it had this one chain.
		httpOnly := &listenerv3.Listener{
			Name: l.GetName(), Address: l.GetAddress(), TrafficDirection: l.GetTrafficDirection(),
			FilterChains: []*listenerv3.FilterChain{{Filters: chain.GetFilters()}},
		}
		var oldHTTP *listenerSpec
		if old != nil && old.capture != nil && i < len(old.captureHTTP) {
			oldHTTP = old.captureHTTP[i]
		}
		httpSpec, err := parseListener(httpOnly, oldHTTP, env)
		if err != nil {
			return nil, err
		}
		subs = append(subs, httpSpec)
	}
	if len(subs) > 0 {
		// The listener's own server is the first manager's; the others
		// are its subs (listenCapture), which need a new server when they
		// change (params.captureSubs).
		spec = new(listenerSpec)
		*spec = *subs[0]
		spec.captureHTTP = subs
		var others []serverParams
		for _, sub := range subs[1:] {
			others = append(others, sub.params)
		}
		if len(others) > 0 {
			spec.params.captureSubs = fmt.Sprint(others)
		}
	} else {
		spec = &listenerSpec{}
	}
	spec.config, spec.name = l, l.GetName()
	sa := l.GetAddress().GetSocketAddress()
	if _, err := netip.ParseAddr(sa.GetAddress()); err != nil {
		return nil, errorf("address.socket_address.address: %q is not an IP address", sa.GetAddress())
	}
	spec.address = net.JoinHostPort(sa.GetAddress(), fmt.Sprint(sa.GetPortValue()))
	if len(l.GetAdditionalAddresses()) > 0 {
		return nil, errorf("additional_addresses: not supported on a capture listener")
	}
	spec.capture = cs
	spec.params.capture = true
	// spec.accessLogs stays the HttpConnectionManager's (its requests'
	// lines); the tcp_proxy chains log on their own (syncAccessLogs
	// keeps their files open).
	return spec, nil
}

// match chooses the chain of a connection to dst, as Envoy matches filter
// chains, narrowing by each criterion in turn without going back: the
// chains of the destination port (else those without one), of the
// longest prefix holding the address (else those without prefixes), of
// the transport protocol (else those without one), of the application
// protocol (else those without any). inspect reads the connection's first
// bytes, once, when a criterion needs them. -1: none (the default chain).
func (cs *captureSpec) match(dst netip.AddrPort, inspect func() (transport string, protocols []string)) int {
	idx := make([]int, 0, 4)
	for i, c := range cs.chains {
		if c.port == dst.Port() {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		for i, c := range cs.chains {
			if c.port == 0 {
				idx = append(idx, i)
			}
		}
	}
	best, bestBits := idx[:0:0], -1
	addr := dst.Addr().Unmap()
	for _, i := range idx {
		for _, p := range cs.chains[i].prefixes {
			if p.Contains(addr) && p.Bits() >= bestBits {
				if p.Bits() > bestBits {
					best, bestBits = best[:0], p.Bits()
				}
				if !slices.Contains(best, i) {
					best = append(best, i)
				}
			}
		}
	}
	if len(best) == 0 {
		for _, i := range idx {
			if len(cs.chains[i].prefixes) == 0 {
				best = append(best, i)
			}
		}
	}
	if len(best) == 0 {
		return -1
	}
	if !slices.ContainsFunc(best, func(i int) bool { return cs.chains[i].transport != "" || len(cs.chains[i].protocols) > 0 }) {
		return best[0] // no inspection needed: no byte is waited for
	}
	transport, protocols := inspect()
	narrow := func(in []int, keep func(c *captureChain) bool, any func(c *captureChain) bool) []int {
		var out []int
		for _, i := range in {
			if keep(&cs.chains[i]) {
				out = append(out, i)
			}
		}
		if len(out) > 0 {
			return out
		}
		for _, i := range in {
			if any(&cs.chains[i]) {
				out = append(out, i)
			}
		}
		return out
	}
	best = narrow(best, func(c *captureChain) bool { return c.transport != "" && c.transport == transport },
		func(c *captureChain) bool { return c.transport == "" })
	best = narrow(best, func(c *captureChain) bool {
		return slices.ContainsFunc(c.protocols, func(p string) bool { return slices.Contains(protocols, p) })
	}, func(c *captureChain) bool { return len(c.protocols) == 0 })
	if len(best) == 0 {
		return -1
	}
	return best[0]
}

// inspectCapture reads the first bytes of conn, within timeout (zero: no
// bound), as the tls_inspector and http_inspector do: "tls" (with the
// ClientHello's ALPN), or "raw_buffer" with "http/1.1", "http/1.0" or
// "h2c" when they start a request. It returns the bytes read, which go
// first to whoever takes the connection; timedOut when the bytes did not
// decide before timeout.
func inspectCapture(conn net.Conn, timeout time.Duration, tlsOn, httpOn bool) (transport string, protocols []string, read []byte, timedOut bool, err error) {
	if timeout > 0 {
		if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return "", nil, nil, false, err
		}
		defer func() { _ = conn.SetReadDeadline(time.Time{}) }()
	}
	var buf bytes.Buffer
	chunk := make([]byte, 1024)
	isTimeout := func(err error) bool {
		var ne net.Error
		return errors.As(err, &ne) && ne.Timeout()
	}
	for {
		n, rerr := conn.Read(chunk)
		buf.Write(chunk[:n])
		b := buf.Bytes()
		if len(b) > 0 && b[0] == 0x16 && tlsOn {
			t, alpn, read, err := readClientHello(conn, b)
			if err != nil && isTimeout(err) {
				return "tls", nil, read, true, nil
			}
			return t, alpn, read, false, err
		}
		if len(b) > 0 {
			if !httpOn {
				return "raw_buffer", nil, b, false, nil
			}
			if proto, decided := httpProtocol(b); decided {
				return "raw_buffer", proto, b, false, nil
			}
		}
		if rerr != nil {
			if isTimeout(rerr) {
				return "raw_buffer", nil, b, true, nil
			}
			if errors.Is(rerr, io.EOF) && len(b) > 0 {
				return "raw_buffer", nil, b, false, nil
			}
			return "", nil, b, false, rerr
		}
	}
}

// readClientHello completes the read of a ClientHello whose first bytes
// are first: "tls", its ALPN protocols and every byte read.
func readClientHello(conn net.Conn, first []byte) (string, []string, []byte, error) {
	transport, _, read, err := inspectClientHello(&replayConn{Conn: conn, pending: slices.Clone(first)})
	return transport, nil, read, err
}

// httpProtocol reads the start of a connection as the http_inspector:
// the HTTP/2 preface ("h2c"), or a request line ("http/1.1", "http/1.0");
// decided is false while more bytes could still make it HTTP.
func httpProtocol(b []byte) (protocols []string, decided bool) {
	if n := min(len(b), len(h2Preface)); string(b[:n]) == h2Preface[:n] {
		if n == len(h2Preface) {
			return []string{"h2c"}, true
		}
		return nil, false
	}
	// method SP request-target SP HTTP/1.x CRLF
	sp := bytes.IndexByte(b, ' ')
	method := b
	if sp >= 0 {
		method = b[:sp]
	}
	for _, c := range method {
		if c < 'A' || c > 'Z' {
			return nil, true
		}
	}
	if sp < 0 {
		return nil, len(b) > 32 // no method is that long
	}
	eol := bytes.IndexByte(b, '\n')
	if eol < 0 {
		return nil, len(b) >= maxHTTPRequestLine
	}
	line := bytes.TrimSuffix(b[:eol], []byte("\r"))
	switch {
	case bytes.HasSuffix(line, []byte(" HTTP/1.1")):
		return []string{"http/1.1"}, true
	case bytes.HasSuffix(line, []byte(" HTTP/1.0")):
		return []string{"http/1.0"}, true
	}
	return nil, true
}

// captureServer serves a capture listener: it accepts connections, reads
// their original destination, and hands each to the HTTP server of its
// chain's HttpConnectionManager (through that server's queue) or proxies
// it with a tcp_proxy chain (l4). The chain is chosen once per
// connection: a request pays nothing for the listener having several.
type captureServer struct {
	listener string
	logger   *slog.Logger
	ln       net.Listener // as bound, under the connection limiter
	// queues[i] is what https[i], the server of the listener's i-th
	// HttpConnectionManager (listenerSpec.captureHTTP[i]), accepts; none
	// without HTTP chains.
	queues []*connQueue
	https  []servingServer
	l4     *l4Server
	wg     sync.WaitGroup
}

// Serve accepts until ln is closed.
func (s *captureServer) Serve(net.Listener) error {
	for i, h := range s.https {
		q := s.queues[i]
		s.wg.Go(func() { _ = h.Serve(q) })
	}
	return s.l4.serveWith(s.ln, s.handle)
}

// handle routes one accepted connection by its original destination.
func (s *captureServer) handle(down net.Conn) {
	cfg := s.l4.config.Load()
	if cfg == nil || cfg.capture == nil {
		_ = down.Close() // not configured yet: refused
		return
	}
	cs := cfg.capture
	raw := down
	if lc := limitedConnOf(down); lc != nil {
		raw = lc.Conn
	}
	dst, err := origdst.Get(raw)
	if err != nil {
		// Not redirected: a connection to the capture port itself would
		// loop back to it.
		s.logger.Debug("captured connection without an original destination: closed", "listener", s.listener, "error", err)
		_ = down.Close()
		return
	}
	var prefix []byte
	var inspectErr error
	i := cs.match(dst, func() (string, []string) {
		transport, protocols, read, timedOut, err := inspectCapture(down, cs.timeout, cs.tlsInspector, cs.http)
		prefix = read
		if err == nil && timedOut && !cs.continueOnTimeout {
			err = errors.New("listener filters timed out")
		}
		inspectErr = err
		return transport, protocols
	})
	if inspectErr != nil {
		s.logger.Debug("captured connection: reading its first bytes failed", "listener", s.listener, "destination", dst.String(), "error", inspectErr)
		_ = down.Close()
		return
	}
	if i >= 0 && cs.chains[i].http && cs.chains[i].httpIdx < len(s.queues) {
		if !s.queues[cs.chains[i].httpIdx].push(&replayConn{Conn: down, pending: prefix}) {
			_ = down.Close()
		}
		return
	}
	l4 := cs.fallback
	if i >= 0 {
		l4 = cs.chains[i].l4
	}
	defer down.Close()
	if l4 < 0 {
		s.logger.Debug("captured connection: no filter chain matches", "listener", s.listener, "destination", dst.String())
		return
	}
	s.l4.proxyChain(context.Background(), down, cfg, l4, "", prefix, dst)
}

// Shutdown stops accepting, then lets the HTTP server and the proxied
// connections finish until ctx ends.
func (s *captureServer) Shutdown(ctx context.Context) error {
	err := s.l4.Shutdown(ctx)
	for i, h := range s.https {
		s.queues[i].close()
		if herr := h.Shutdown(ctx); err == nil {
			err = herr
		}
	}
	s.wg.Wait()
	return err
}

// Close closes the listener and every connection.
func (s *captureServer) Close() error {
	_ = s.l4.Close()
	for i, h := range s.https {
		s.queues[i].close()
		_ = h.Close()
	}
	return nil
}

// connQueue is a net.Listener whose connections are pushed to it: the
// HTTP chains' connections, handed to the listener's HTTP server.
type connQueue struct {
	addr   net.Addr
	conns  chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// push hands c to Accept; false once closed.
func (q *connQueue) push(c net.Conn) bool {
	select {
	case q.conns <- c:
		return true
	case <-q.done:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) close() { q.closed.Do(func() { close(q.done) }) }

func (q *connQueue) Close() error { q.close(); return nil }

func (q *connQueue) Addr() net.Addr { return q.addr }

// listenCapture binds address for spec, a capture listener, and prepares
// its server: an HTTP server per HttpConnectionManager of its HTTP chains
// (if any), each behind a queue the capture server feeds, the first being
// the returned server's, the others its subs; sync gives them their
// configuration.
func (p *Proxy) listenCapture(spec *listenerSpec, address string, logger *slog.Logger) (*server, error) {
	bound, err := p.bind(address)
	if err != nil {
		return nil, fmt.Errorf("listener %q: bind %s: %w", spec.name, address, err)
	}
	limiter := newConnLimiter(bound, spec.name, p.opts.MaxConnections, &p.conns, logger)
	cs := &captureServer{listener: spec.name, logger: logger, ln: limiter, l4: newL4Server(spec.name, limiter, logger)}
	srv := &server{listener: spec.name, address: address, params: spec.params, bound: time.Now(), ln: limiter, limiter: limiter}
	var subs []*server
	for i, httpSpec := range spec.captureHTTP {
		q := newConnQueue(limiter.Addr())
		h, err := p.httpServer(httpSpec, address, limiter, q, logger)
		if err != nil {
			_ = bound.Close()
			return nil, err
		}
		cs.queues, cs.https = append(cs.queues, q), append(cs.https, h.http)
		h.ln = limiter
		if i == 0 {
			srv = h
		} else {
			subs = append(subs, h)
		}
	}
	srv.subs = subs
	srv.http, srv.l4 = cs, cs.l4
	return srv, nil
}
