package h1server

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The parity harness: the same bytes are sent, as one connection that the
// client half-closes, to the fast server (with its Fallback) and to a plain
// net/http server with the same handler and settings; the responses must be
// the same, apart from the Date values and the order of header fields.

// memConn is an in-memory connection: reads return the input then EOF,
// writes are collected, Close is signaled.
type memConn struct {
	in     *bytes.Reader
	mu     sync.Mutex
	out    bytes.Buffer
	closed chan struct{}
	once   sync.Once
}

func newMemConn(input []byte) *memConn {
	return &memConn{in: bytes.NewReader(input), closed: make(chan struct{})}
}

func (c *memConn) Read(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	return c.in.Read(p)
}

func (c *memConn) Write(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

func (c *memConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *memConn) output() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.out.Bytes())
}

type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }

func (c *memConn) LocalAddr() net.Addr              { return memAddr("192.0.2.1:80") }
func (c *memConn) RemoteAddr() net.Addr             { return memAddr("198.51.100.7:4711") }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// memListener hands out queued connections.
type memListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newMemListener() *memListener {
	return &memListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *memListener) Addr() net.Addr { return memAddr("192.0.2.1:80") }

// echoHandler answers with what it saw of the request; the query shapes
// the response (status, cl, te, conn, body, flush, trailer, info).
func echoHandler(fastSeen *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(*response); ok && fastSeen != nil {
			fastSeen.Add(1)
		}
		body, err := io.ReadAll(r.Body)
		var keys []string
		for k, vv := range r.Header {
			for _, v := range vv {
				keys = append(keys, fmt.Sprintf("%q: %q", k, v))
			}
		}
		slices.Sort(keys)
		var b strings.Builder
		fmt.Fprintf(&b, "method=%q uri=%q url=%q proto=%q %d.%d host=%q cl=%d close=%v te=%q remote=%q tls=%v\n",
			r.Method, r.RequestURI, r.URL.String(), r.Proto, r.ProtoMajor, r.ProtoMinor, r.Host,
			r.ContentLength, r.Close, r.TransferEncoding, r.RemoteAddr, r.TLS != nil)
		b.WriteString(strings.Join(keys, "\n"))
		fmt.Fprintf(&b, "\nbody=%q err=%v\n", body, err)
		out := b.String()

		q := r.URL.Query()
		h := w.Header()
		h.Set("Content-Type", "text/plain") // no sniffing on either side
		h.Set("X-Method", r.Method)
		if v := q.Get("info"); v != "" {
			n, _ := strconv.Atoi(v)
			if n >= 100 && n < 200 && n != 101 {
				w.WriteHeader(n)
			}
		}
		if v := q.Get("cl"); v != "" {
			h.Set("Content-Length", v)
		}
		switch v := q.Get("te"); v {
		case "identity", "chunked": // others make responses no reader parses
			h.Set("Transfer-Encoding", v)
		}
		if v := q.Get("conn"); v != "" {
			h.Set("Connection", v)
		}
		if q.Has("trailer") {
			h.Set("Trailer", "X-Trailer")
		}
		if q.Has("nodate") {
			h["Date"] = nil
		}
		if v := q.Get("size"); v != "" {
			n, _ := strconv.Atoi(v)
			out = strings.Repeat("x", min(max(n, 0), 100000))
		}
		status := http.StatusOK
		if v := q.Get("status"); v != "" {
			if n, err := strconv.Atoi(v); err == nil && n >= 200 && n <= 999 {
				status = n
			}
		}
		if status != http.StatusOK || q.Has("writeheader") {
			w.WriteHeader(status)
		}
		if q.Has("flush") {
			half := len(out) / 2
			_, _ = io.WriteString(w, out[:half])
			w.(http.Flusher).Flush()
			out = out[half:]
		}
		if !q.Has("empty") {
			_, _ = io.WriteString(w, out)
		}
		if q.Has("trailer") {
			h.Set("X-Trailer", "t1")
			h.Set(http.TrailerPrefix+"X-Late", "t2")
		}
		if q.Has("panic") {
			panic(http.ErrAbortHandler)
		}
	})
}

// settings is the http.Server configuration both sides share.
func newStdServer(h http.Handler) *http.Server {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           h,
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          discardLog,
	}
}

// memServers are a fast server and a reference net/http server on
// in-memory listeners.
type memServers struct {
	fast, std    *memListener
	fastSrv      *Server
	stdSrv       *http.Server
	fastRequests atomic.Int64
}

func startMemServers(tb testing.TB) *memServers {
	ms := &memServers{fast: newMemListener(), std: newMemListener()}
	ms.fastSrv = &Server{Fallback: newStdServer(echoHandler(&ms.fastRequests))}
	ms.stdSrv = newStdServer(echoHandler(nil))
	go func() { _ = ms.fastSrv.Serve(ms.fast) }()
	go func() { _ = (&Guarded{Server: ms.stdSrv}).Serve(ms.std) }()
	tb.Cleanup(func() {
		_ = ms.fastSrv.Close()
		_ = ms.stdSrv.Close()
	})
	return ms
}

// exchange sends input as one connection to l and returns all it answered
// before closing the connection (or timeout).
func exchange(tb testing.TB, l *memListener, input []byte, timeout time.Duration) []byte {
	c := newMemConn(input)
	l.conns <- c
	select {
	case <-c.closed:
	case <-time.After(timeout):
		tb.Fatalf("connection not closed after %v; input %q, output so far %q", timeout, input, c.output())
	}
	return c.output()
}

// parsedResponse is one response, normalized for comparison.
type parsedResponse struct {
	status  string
	proto   string
	header  []string // sorted "Key: value", Date values blanked
	body    string
	trailer []string
	err     string
	// closeDelimited: the body ends where the connection does (no
	// Content-Length, not chunked).
	closeDelimited bool
}

// parseResponses reads the responses in out; a response carries its
// request's method in X-Method (for HEAD) when the handler wrote it.
func parseResponses(out []byte) []parsedResponse {
	var list []parsedResponse
	br := bufio.NewReaderSize(bytes.NewReader(out), len(out)+16)
	for {
		if _, err := br.Peek(1); err != nil {
			return list
		}
		buf, _ := br.Peek(br.Buffered())
		method := "GET"
		if end := bytes.Index(buf, []byte("\r\n\r\n")); end >= 0 {
			if bytes.Contains(buf[:end], []byte("\r\nX-Method: HEAD\r\n")) {
				method = "HEAD"
			}
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			// Unparseable (a handler's invalid header): compare the rest
			// as lines, sorted, Date lines dropped.
			rest, _ := io.ReadAll(br)
			var lines []string
			for l := range strings.SplitSeq(string(buf), "\r\n") {
				if !strings.HasPrefix(l, "Date: ") {
					lines = append(lines, l)
				}
			}
			slices.Sort(lines)
			return append(list, parsedResponse{err: fmt.Sprintf("%v: %q (%d bytes after)", err, lines, len(rest))})
		}
		body, err := io.ReadAll(resp.Body)
		p := parsedResponse{status: resp.Status, proto: resp.Proto, body: string(body),
			closeDelimited: method != "HEAD" && resp.ContentLength < 0 && len(resp.TransferEncoding) == 0}
		if err != nil {
			p.err = err.Error()
		}
		p.header = normalizeHeader(resp.Header)
		p.trailer = normalizeHeader(resp.Trailer)
		list = append(list, p)
	}
}

func normalizeHeader(h http.Header) []string {
	var out []string
	for k, vv := range h {
		for _, v := range vv {
			if k == "Date" {
				v = "(date)"
			}
			out = append(out, k+": "+v)
		}
	}
	slices.Sort(out)
	return out
}

// compareServers sends input to both and reports a difference, if any.
func (ms *memServers) compare(tb testing.TB, input []byte) (fast, std []byte, diff string) {
	fast = exchange(tb, ms.fast, input, 10*time.Second)
	std = exchange(tb, ms.std, input, 10*time.Second)
	if bytes.HasPrefix(input, []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")) {
		// h2c, served by net/http in both cases; how much of its
		// SETTINGS frame gets out before it sees the end of input varies.
		return fast, std, ""
	}
	pf, ps := parseResponses(fast), parseResponses(std)
	if len(pf) != len(ps) {
		return fast, std, fmt.Sprintf("%d responses from the fast server, %d from net/http", len(pf), len(ps))
	}
	for i := range pf {
		a, b := pf[i], ps[i]
		if a.err != "" && a.err == b.err && (strings.HasPrefix(a.body, b.body) || strings.HasPrefix(b.body, a.body)) {
			// A response aborted midway (the handler panicked): net/http
			// still held up to 2 KiB of body in a buffer it drops; the
			// fast path has sent them. Both are broken responses.
			b.body = a.body
		}
		if a.err == "" && b.err == "" && a.closeDelimited && b.closeDelimited && i == len(pf)-1 &&
			strings.HasPrefix(a.body, b.body) && len(a.body)-len(b.body) <= 2<<10 {
			// The same, for a body delimited by the close of the connection
			// (HTTP/1.0): the abort cannot show, the close ends the body
			// either way; net/http dropped the bytes it still buffered,
			// the fast path sent them.
			b.body = a.body
		}
		if a.status != b.status || a.proto != b.proto || a.body != b.body || a.err != b.err ||
			!slices.Equal(a.header, b.header) || !slices.Equal(a.trailer, b.trailer) {
			return fast, std, fmt.Sprintf("response %d differs:\nfast: %+v\nstd:  %+v", i, a, b)
		}
	}
	return fast, std, ""
}

// parityCases are requests on which the fast server must answer exactly as
// net/http; fast says whether the fast path (not Fallback) serves the
// first request.
var parityCases = []struct {
	name  string
	input string
	fast  bool
}{
	{"simple GET", "GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n", true},
	{"bare LF", "GET /a HTTP/1.1\nHost: example.com\n\n", false},
	{"HTTP/1.0", "GET /a HTTP/1.0\r\nHost: x\r\n\r\n", true},
	{"HTTP/1.0 keep-alive", "GET /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", true},
	{"HTTP/1.0 keep-alive with CL", "GET /a?cl=3&size=3 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\nHost: x\r\n\r\n", true},
	{"HTTP/1.0 keep-alive, handler keep-alive", "GET /a?cl=3&size=3&conn=keep-alive HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\nHost: x\r\n\r\n", true},
	{"HTTP/1.0 large body", "GET /a?size=5000 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", true},
	{"HTTP/1.0 no host", "GET /a HTTP/1.0\r\n\r\n", false},
	{"keep-alive pipelined", "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nHEAD /3 HTTP/1.1\r\nHost: a\r\n\r\nGET /4?size=3000 HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"Connection: close", "GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"Connection: Keep-Alive, Close", "GET /a HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, Close\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"handler Connection: close", "GET /a?conn=close HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"HEAD", "HEAD /a HTTP/1.1\r\nHost: a\r\n\r\nHEAD /b?empty HTTP/1.1\r\nHost: a\r\n\r\nHEAD /c?cl=10&empty HTTP/1.1\r\nHost: a\r\n\r\nGET /d HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"204 and 304", "GET /a?status=204 HTTP/1.1\r\nHost: a\r\n\r\nGET /b?status=304&cl=5 HTTP/1.1\r\nHost: a\r\n\r\nGET /c?status=204&empty HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"chunked", "GET /a?size=5000 HTTP/1.1\r\nHost: a\r\n\r\nGET /b?flush HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"declared CL", "GET /a?cl=12&size=12 HTTP/1.1\r\nHost: a\r\n\r\nGET /b?cl=5000&size=5000 HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"CL too short", "GET /a?cl=5&size=12 HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"CL too long", "GET /a?cl=50&size=12 HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"invalid CL", "GET /a?cl=abc&size=12 HTTP/1.1\r\nHost: a\r\n\r\nGET /b?cl=-1&size=3000 HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"TE identity", "GET /a?te=identity HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"TE chunked", "GET /a?te=chunked HTTP/1.1\r\nHost: a\r\n\r\nGET /b?te=chunked&size=3000 HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"TE and CL", "GET /a?te=chunked&cl=3&size=3 HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"trailers", "GET /a?trailer HTTP/1.1\r\nHost: a\r\n\r\nGET /b?trailer&flush HTTP/1.1\r\nHost: a\r\n\r\nGET /c?trailer&size=3000 HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"informational", "GET /a?info=103 HTTP/1.1\r\nHost: a\r\nLink: x\r\n\r\n", true},
	{"unknown status", "GET /a?status=599 HTTP/1.1\r\nHost: a\r\n\r\nGET /a?status=299 HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"no Date", "GET /a?nodate HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"abort", "GET /a?panic&flush HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"POST without body, then CRLF", "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"query and escapes", "GET /a%20b/c?x=1&y=%2F#frag HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"duplicate headers", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n", true},
	{"Pragma no-cache", "GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n", true},
	{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  2\r\n\r\n", false},
	{"value with tab", "GET / HTTP/1.1\r\nHost: a\r\nX-A:\t1\t\r\n\r\n", true},
	{"empty value", "GET / HTTP/1.1\r\nHost: a\r\nX-A:\r\n\r\n", true},
	{"Host with port", "GET / HTTP/1.1\r\nHost: a.example:8080\r\n\r\n", true},
	{"IPv6 Host", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", true},

	// Handed to net/http.
	{"body with CL", "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: a\r\n\r\n", false},
	{"chunked body", "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n", false},
	{"body after fast requests", "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPUT /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: a\r\n\r\n", true},
	{"Expect 100-continue", "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc", false},
	{"Expect without body", "GET /a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", false},
	{"Expect unknown", "GET /a HTTP/1.1\r\nHost: a\r\nExpect: foo\r\n\r\n", false},
	{"Upgrade", "GET /a HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", false},
	{"h2c upgrade header", "GET /a HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n", false},
	{"absolute-form", "GET http://b.example/x HTTP/1.1\r\nHost: a\r\n\r\n", false},
	{"absolute-form without Host", "GET http://b.example/x HTTP/1.1\r\n\r\n", false},
	{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", false},
	{"CONNECT", "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", false},
	{"missing Host", "GET /a HTTP/1.1\r\n\r\n", false},
	{"empty Host", "GET /a HTTP/1.1\r\nHost:\r\n\r\n", false},
	{"two Hosts", "GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", false},
	{"bad Host", "GET /a HTTP/1.1\r\nHost: a b\r\n\r\n", false},
	{"bad Host byte", "GET /a HTTP/1.1\r\nHost: a\"b\r\n\r\n", false},
	{"bad header line", "GET /exact HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n", false},
	{"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n", false},
	{"bad header name", "GET / HTTP/1.1\r\nHost: a\r\nX(A): 1\r\n\r\n", false},
	{"control byte in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n", false},
	{"DEL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x7f2\r\n\r\n", false},
	{"CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r2\r\n\r\n", false},
	{"leading space first header", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", false},
	{"bad method", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", false},
	{"bad version", "GET / HTTP/1.x\r\nHost: a\r\n\r\n", false},
	{"HTTP/2.0 request", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", false},
	{"HTTP/0.9", "GET / HTTP/0.9\r\nHost: a\r\n\r\n", false},
	{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", false},
	{"no version", "GET /\r\nHost: a\r\n\r\n", false},
	{"bad URL", "GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n", false},
	{"empty URI", "GET  HTTP/1.1\r\nHost: a\r\n\r\n", false},
	{"duplicate CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\n", false},
	{"same CL twice", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", true},
	{"bad CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", false},
	{"TE and CL request", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false},
	{"unknown TE", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", false},
	{"leading CRLF", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", false},
	{"truncated head", "GET / HTTP/1.1\r\nHost: a\r\n", false},
	{"truncated request line", "GET / HTTP/1.1", false},
	{"garbage", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", false},
	{"large head", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 5000) + "\r\n\r\n", false},
	{"h2c preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false},
	{"PRI without preface", "PRI * HTTP/2.0\r\n\r\n", false},
	{"bad request then good", "GET /exact HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", false},
	{"bad request after good", "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /exact HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n", true},

	// Refused by the guard in front of net/http (guard.go).
	{"bare LF ending the head", "GET / HTTP/1.1\r\nHost: a\r\n\n", false},
	{"CR CR LF", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\r\n\r\n", false},
	{"obs-fold with a tab", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\t2\r\n\r\n", false},
	{"HTTP/1.0 with TE", "GET /a HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", false},
	{"CL and TE then a request", "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n", false},
	{"TE identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", false},
	{"obs-fold after a body", "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", false},
	{"bad chunk size", "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\nhi\r\n0\r\n\r\n", false},
	{"trailer folded", "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n 2\r\n\r\n", false},
	{"bare CR in a short tail", "GET / HTTP/1.1\r\nHost: a\r\n\r\n0\r0", true},
	{"short tail", "GET / HTTP/1.1\r\nHost: a\r\n\r\nGE", true},
}

func TestParityWithNetHTTP(t *testing.T) {
	ms := startMemServers(t)
	for _, tt := range parityCases {
		t.Run(tt.name, func(t *testing.T) {
			before := ms.fastRequests.Load()
			fast, std, diff := ms.compare(t, []byte(tt.input))
			if diff != "" {
				t.Fatalf("%s\nfast output: %q\nstd output:  %q", diff, fast, std)
			}
			if got := ms.fastRequests.Load() > before; got != tt.fast {
				t.Errorf("served on the fast path: %v, want %v\noutput: %q", got, tt.fast, fast)
			}
		})
	}
}

var discardLog = log.New(io.Discard, "", 0)

// A fuzz seed corpus entry per parity case.
func addParitySeeds(f *testing.F) {
	for _, tt := range parityCases {
		f.Add([]byte(tt.input))
	}
}
