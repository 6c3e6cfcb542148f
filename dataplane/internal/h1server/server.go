// Package h1server is an HTTP/1.1 server fast path in front of a net/http
// Server: it serves the common request itself, on the connection's
// goroutine, and hands every connection it does not fully understand to the
// net/http server, untouched.
//
// # Why
//
// net/http's server costs, per request on a keep-alive connection: a
// background read goroutine started and aborted around the handler (an
// extra read system call that ends in EAGAIN, a netpoll park and unpark and
// two goroutine hand-offs), a context.WithCancel, a cloned response header
// map, sorted header writing, a date formatted and two read-deadline resets.
// For a tiny response over loopback that is a third of a request's cost
// (BenchmarkServer: 20 µs and 20 allocations per round trip, 13.6 µs and 11
// on the fast path).
//
// # What the fast path serves
//
// One goroutine per connection reads a request head into a pooled 4 KiB
// buffer and parses it with net/http's own parser (http.ReadRequest: same
// request line, header, URL, Host and framing rules, so the fast path is
// exactly as strict as net/http), then applies the checks net/http's server
// adds (HTTP/1.x only, Host required and valid, valid field names and
// values) and the line rules of the framing guard (every line ends with
// CRLF, no other CR, no obs-fold; see guard.go). It serves the request
// itself only when all of these hold:
//
//   - HTTP/1.0 or HTTP/1.1, no body (no Transfer-Encoding, Content-Length
//     absent or 0, no Transfer-Encoding on HTTP/1.0 either), no Expect, no
//     Upgrade;
//   - an origin-form target ("/..."), not CONNECT, OPTIONS * or PRI;
//   - a non-empty, valid Host;
//   - the whole head fits in the buffer and in Fallback.MaxHeaderBytes;
//   - on TLS, the handshake is complete and ALPN chose no protocol or
//     HTTP/1.x.
//
// Anything else, including every malformed request, goes to Fallback: the
// connection is handed over at a request boundary, with the bytes already
// read replayed first (a copy of the head is kept while it is parsed, so
// nothing is lost), through a listener that Fallback.Serve accepts from. That covers h2c prior
// knowledge (the "PRI * HTTP/2.0" preface), ALPN h2, requests with bodies,
// Expect: 100-continue, upgrades, oversized heads (431) and all error
// answers (400, 501, 505...), which are therefore net/http's own, byte for
// byte. Once handed over, a connection stays with net/http, which reads an
// HTTP/1.x connection through the framing guard (guard.go): it refuses,
// with net/http's own 400, obs-fold, bare LF and bare CR in heads and
// trailers, Content-Length with Transfer-Encoding, Transfer-Encoding on
// HTTP/1.0 or without a final chunked, and malformed chunked framing, on
// every request of the connection. A request the fast path cannot parse
// never gets an answer from it: either the fast path serves a request
// net/http behind the guard would serve the same way, or net/http decides.
// Guarded puts the same guard in front of net/http's server used alone, so
// both setups refuse the same requests (FuzzServer compares them).
//
// The response writer mirrors net/http's framing: Content-Length when the
// handler sets it (or, as net/http does, when the handler finishes within
// the first 2 KiB), otherwise chunked for HTTP/1.1 and close-delimited for
// HTTP/1.0; no body for HEAD, 1xx, 204 and 304; a cached Date header;
// Connection: close both ways and HTTP/1.0 keep-alive; trailers
// (http.TrailerPrefix and declared Trailer keys) after a chunked body; 1xx
// informational responses; http.Flusher. A panic in the handler closes the
// connection (http.ErrAbortHandler silently, anything else logged with its
// stack to Fallback.ErrorLog), as in net/http.
//
// # Differences from net/http, on the fast path only
//
//   - The request context is the connection's: it is canceled when the
//     client goes away during a request that stays in its handler longer
//     than probeDelay (50 ms), when the connection is found dead (a failed
//     write), when the connection closes, and by Close. It is not canceled
//     when ServeHTTP returns. net/http reads the connection in the
//     background during every handler call to notice a client leaving (a
//     failed read or EOF cancels the context); the fast path starts that
//     read only for a request still in its handler after probeDelay (see
//     there), so that a proxy's upstream exchange with a slow backend is
//     aborted as on net/http, while a client that leaves a faster request
//     is noticed when its response is written. As on net/http, a client
//     that half-closes its side during a probed request is taken as gone
//     (it still gets the response, then the connection is closed), and a
//     pipelined request read by the probe is served next. A context
//     derived from r.Context() must be canceled by whoever derived it (the
//     proxy's upstream code does): otherwise it lives as long as the
//     connection.
//   - The Content-Type of a response without one is not sniffed (net/http
//     would add one to, say, an upstream response that has none).
//   - Response header fields are written in map order, not sorted.
//   - The ResponseWriter implements http.Flusher only (no Hijacker, no
//     CloseNotifier), and the handler must not use it, nor the response
//     header map, after ServeHTTP returns (both are reused).
//     Upgrades (Upgrade header) are never served on the fast path: a
//     handler that hijacks gets net/http's connection, the framing guard
//     over it, which it switches off with Upgraded once the connection
//     carries another protocol.
//   - A "PRI * HTTP/2.0" request after other requests on the connection
//     closes it (net/http would hand it to the handler); at the start of a
//     connection it goes to Fallback, which switches to h2c.
//   - Fallback.SetKeepAlivesEnabled is not seen. Fallback.ConnState is
//     called as net/http calls it (StateNew when accepted, StateActive once
//     a request head is read, StateIdle after its response, StateClosed),
//     with the connection as accepted; a connection handed over is then
//     reported by Fallback itself, from StateNew, as the wrapper that
//     replays its bytes (its NetConn method returns the connection).
//   - To save a timer update per request, an idle connection may be closed
//     up to 1/16 of IdleTimeout (at most a second) early.
//
// The request the handler gets is http.ReadRequest's, with RemoteAddr, TLS
// (the connection's state) and the context set; Body is http.NoBody. It is
// not pooled: the proxy's handler hands its Header and URL to upstream
// transports that may hold them after ServeHTTP returns. Parsing costs
// about 0.8 µs and 9 allocations for a typical request, a few per cent of a
// proxied request; a hand-written parser would save part of that while
// giving up net/http's own rules.
//
// # Memory
//
// A connection holds its read and write buffers (pooled, 4 KiB each) only
// from the first byte of a request to the end of its response: one that
// has sent nothing yet, or is idle between requests, holds none (see
// conn.awaitBytes), so thousands of idle connections cost their goroutines
// and a few hundred bytes each.
//
// # Settings
//
// The Server has no settings of its own: it takes Handler, ReadHeaderTimeout,
// ReadTimeout, WriteTimeout, IdleTimeout, MaxHeaderBytes, BaseContext,
// ConnContext, ConnState, Protocols (HTTP/1 disabled: everything goes to
// Fallback) and ErrorLog from Fallback, so both paths always behave alike.
// Serve wraps Fallback.ConnContext so that it sees the connection the listener
// accepted, not the wrapper that replays buffered bytes; Fallback must be
// served, shut down and closed only through the Server.
package h1server

import (
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshgate/meshgate/internal/backoff"
)

// Server is the HTTP/1.1 fast path in front of Fallback. Serve, Shutdown and
// Close mirror http.Server's.
type Server struct {
	// Fallback serves what the fast path does not, and gives the fast path
	// its settings (see the package documentation). Required.
	Fallback *http.Server

	initOnce    sync.Once
	handoff     *handoffListener
	connContext func(context.Context, net.Conn) context.Context // Fallback's, before wrapping

	inShutdown atomic.Bool
	mu         sync.Mutex
	listeners  map[*net.Listener]struct{}
	conns      map[*conn]struct{}
	sweeping   bool // sweep runs
}

// errNoFallback is Serve's error without a Fallback.
var errNoFallback = errors.New("h1server: Server.Fallback is required")

// init prepares the hand-off listener and starts Fallback on it.
func (s *Server) init() {
	s.initOnce.Do(func() {
		fb := s.Fallback
		s.handoff = newHandoffListener()
		s.connContext = fb.ConnContext
		orig := fb.ConnContext
		fb.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			if h, ok := c.(interface{ acceptedConn() net.Conn }); ok {
				c = h.acceptedConn()
			}
			if orig != nil {
				return orig(ctx, c)
			}
			return ctx
		}
		go func() {
			if err := fb.Serve(s.handoff); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				s.logf("h1server: fallback server stopped: %v", err)
			}
		}()
	})
}

// acceptRetryInitial and acceptRetryMax bound the backoff after a failed
// Accept, as net/http's.
const (
	acceptRetryInitial = 5 * time.Millisecond
	acceptRetryMax     = time.Second
)

// Serve accepts connections on ln and serves each on its own goroutine, as
// http.Server.Serve does; it always returns a non-nil error, and
// http.ErrServerClosed after Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error {
	if s.Fallback == nil {
		return errNoFallback
	}
	s.init()
	if !s.trackListener(&ln, true) {
		return http.ErrServerClosed
	}
	defer s.trackListener(&ln, false)

	baseCtx := context.Background()
	if s.Fallback.BaseContext != nil {
		baseCtx = s.Fallback.BaseContext(ln)
		if baseCtx == nil {
			panic("BaseContext returned a nil context")
		}
	}
	ctx := context.WithValue(baseCtx, http.ServerContextKey, s.Fallback)
	retry := backoff.New(acceptRetryInitial, acceptRetryMax)
	for {
		rw, err := ln.Accept()
		if err != nil {
			if s.shuttingDown() {
				return http.ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Any other failure is retried with backoff, not only those
			// net.Error.Temporary (deprecated) named: a listener that is
			// not closed may accept again (out of file descriptors or
			// buffers, a connection aborted before it was accepted).
			wait := retry.Next()
			s.logf("h1server: Accept error: %v; retrying in %v", err, wait)
			time.Sleep(wait)
			continue
		}
		retry.Reset()
		connCtx := ctx
		if cc := s.connContext; cc != nil {
			connCtx = cc(connCtx, rw)
			if connCtx == nil {
				panic("ConnContext returned nil")
			}
		}
		connCtx = context.WithValue(connCtx, http.LocalAddrContextKey, rw.LocalAddr())
		c := &conn{srv: s, rwc: rw, start: time.Now()}
		c.ctx, c.cancel = context.WithCancel(connCtx)
		if !s.trackConn(c, true) {
			c.cancel()
			_ = rw.Close()
			continue
		}
		s.setConnState(rw, http.StateNew)
		go c.serve()
	}
}

// Shutdown stops accepting, closes idle connections, lets the requests in
// flight finish and then closes their connections, as http.Server.Shutdown
// does; Fallback is shut down alongside. It returns ctx's error when ctx
// ends first (the caller may then Close).
func (s *Server) Shutdown(ctx context.Context) error {
	s.inShutdown.Store(true)
	s.mu.Lock()
	lnErr := s.closeListenersLocked()
	s.mu.Unlock()
	if s.Fallback == nil {
		return lnErr
	}
	s.init()
	fbDone := make(chan error, 1)
	go func() { fbDone <- s.Fallback.Shutdown(ctx) }()
	// Connections waiting to be handed over are closed from now on.
	_ = s.handoff.Close()

	const maxPoll = 500 * time.Millisecond
	poll := time.Millisecond
	timer := time.NewTimer(poll)
	defer timer.Stop()
	for !s.closeIdleConns() {
		select {
		case <-ctx.Done():
			<-fbDone
			return ctx.Err()
		case <-timer.C:
			poll = min(2*poll, maxPoll)
			timer.Reset(poll)
		}
	}
	if err := <-fbDone; err != nil {
		return err
	}
	return lnErr
}

// Close closes the listeners and every connection, including Fallback's,
// immediately, and cancels the contexts of the requests in flight.
func (s *Server) Close() error {
	s.inShutdown.Store(true)
	s.mu.Lock()
	err := s.closeListenersLocked()
	for c := range s.conns {
		c.cancel()
		_ = c.rwc.Close()
		delete(s.conns, c)
	}
	s.mu.Unlock()
	if s.Fallback == nil {
		return err
	}
	s.init()
	_ = s.handoff.Close()
	if fbErr := s.Fallback.Close(); fbErr != nil && err == nil {
		err = fbErr
	}
	return err
}

func (s *Server) shuttingDown() bool { return s.inShutdown.Load() }

// trackListener adds or removes ln; adding fails once shutting down.
func (s *Server) trackListener(ln *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.shuttingDown() {
			return false
		}
		if s.listeners == nil {
			s.listeners = make(map[*net.Listener]struct{})
		}
		s.listeners[ln] = struct{}{}
		return true
	}
	delete(s.listeners, ln)
	return true
}

func (s *Server) closeListenersLocked() error {
	var err error
	for ln := range s.listeners {
		if cerr := (*ln).Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

// trackConn adds or removes c; adding fails once shutting down.
func (s *Server) trackConn(c *conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.shuttingDown() {
			return false
		}
		if s.conns == nil {
			s.conns = make(map[*conn]struct{})
		}
		s.conns[c] = struct{}{}
		if !s.sweeping {
			s.sweeping = true
			go s.sweep()
		}
		return true
	}
	delete(s.conns, c)
	return true
}

// closeIdleConns closes the connections waiting for a request (and those
// that never sent one within 5 s, as net/http does) and reports whether no
// connection is left.
func (s *Server) closeIdleConns() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	quiescent := true
	for c := range s.conns {
		st := connState(c.state.Load())
		if st == stateNew && time.Since(c.start) > 5*time.Second {
			st = stateIdle
		}
		if st != stateIdle {
			quiescent = false
			continue
		}
		_ = c.rwc.Close()
		delete(s.conns, c)
	}
	return quiescent
}

// logf logs to Fallback.ErrorLog, else to the log package's logger.
func (s *Server) logf(format string, args ...any) {
	if s.Fallback != nil && s.Fallback.ErrorLog != nil {
		s.Fallback.ErrorLog.Printf(format, args...)
		return
	}
	log.Printf(format, args...)
}

// Settings read from Fallback, with net/http's defaults and precedence.

func (s *Server) readHeaderTimeout() time.Duration {
	if s.Fallback.ReadHeaderTimeout != 0 {
		return s.Fallback.ReadHeaderTimeout
	}
	return s.Fallback.ReadTimeout
}

func (s *Server) idleTimeout() time.Duration {
	if s.Fallback.IdleTimeout != 0 {
		return s.Fallback.IdleTimeout
	}
	return s.Fallback.ReadTimeout
}

func (s *Server) maxHeaderBytes() int {
	if s.Fallback.MaxHeaderBytes > 0 {
		return s.Fallback.MaxHeaderBytes
	}
	return http.DefaultMaxHeaderBytes
}

func (s *Server) http1() bool {
	return s.Fallback.Protocols == nil || s.Fallback.Protocols.HTTP1()
}

// setConnState calls Fallback.ConnState, if set.
func (s *Server) setConnState(c net.Conn, state http.ConnState) {
	if hook := s.Fallback.ConnState; hook != nil {
		hook(c, state)
	}
}

func (s *Server) handler() http.Handler {
	if s.Fallback.Handler != nil {
		return s.Fallback.Handler
	}
	return http.DefaultServeMux
}
