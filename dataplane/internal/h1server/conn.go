package h1server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Buffer sizes: a request head must fit the read buffer to be served on
// the fast path (larger heads go to Fallback); the write buffer is
// net/http's.
const (
	readBufferSize  = 4 << 10
	writeBufferSize = 4 << 10
	// bufferBeforeChunking is how much body a handler may write, without
	// a Content-Length, before the response is committed to chunking; a
	// handler that ends within it gets a Content-Length (net/http's rule).
	bufferBeforeChunking = 2048
)

var (
	readerPool  sync.Pool // *bufio.Reader of readBufferSize
	writerPool  sync.Pool // *bufio.Writer of writeBufferSize
	pendingPool sync.Pool // *[]byte of cap bufferBeforeChunking
	arrivedPool sync.Pool // *[]byte of len readBufferSize: see awaitBytes
)

// connState is where a connection is, for Shutdown.
type connState int32

const (
	stateNew    connState = iota // accepted, no byte of a request read yet
	stateActive                  // reading or serving a request
	stateIdle                    // waiting for the next request
)

// conn is one connection on the fast path.
type conn struct {
	srv   *Server
	rwc   net.Conn // as accepted
	start time.Time
	state atomic.Int32

	remoteAddr string
	tlsState   *tls.ConnectionState
	ctx        context.Context    // the requests' context
	cancel     context.CancelFunc // cancels ctx; set before serve starts

	// br and bw are pooled, held only from the first byte of a request to
	// the end of its response (see awaitBytes); nil in between.
	br  *bufio.Reader
	bw  *bufio.Writer
	rdl time.Time // read deadline set on rwc (zero: none)
	// raw reads a plaintext TCP connection without a buffer of its own
	// while waiting (nil for TLS and other connections); arrived is what
	// such a read got, handed to br first (then returned to arrivedPool).
	raw        syscall.RawConn
	rawRead    func(fd uintptr) bool // c.readRawStep, bound once
	arrived    []byte
	arrivedBuf *[]byte
	rawN       int
	rawErr     error
	// werr is the first write error: the connection is dead.
	werr error

	head      []byte // copy of the request head being parsed, replayed on hand-off
	afterPOST bool   // the last request was a POST: skip up to 4 leading CR/LF
	res       response
	probe     prober // the background read during a slow handler
}

// Outcomes of reading a request.
type readAction int

const (
	actServe   readAction = iota // serve the request
	actClose                     // close the connection without an answer
	actHandOff                   // give the connection to Fallback
)

func (c *conn) serve() {
	handedOff := false
	defer func() {
		if err := recover(); err != nil && err != http.ErrAbortHandler { //nolint:errorlint // sentinel value, as net/http compares it
			const size = 64 << 10
			buf := make([]byte, size)
			buf = buf[:runtime.Stack(buf, false)]
			c.srv.logf("http: panic serving %v: %v\n%s", c.remoteAddr, err, buf)
		}
		if !handedOff {
			c.close()
		}
	}()
	if ra := c.rwc.RemoteAddr(); ra != nil {
		c.remoteAddr = ra.String()
	}

	if tc, ok := c.rwc.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		if !cs.HandshakeComplete {
			c.handOff(nil, false) // net/http runs the handshake
			handedOff = true
			return
		}
		switch cs.NegotiatedProtocol {
		case "", "http/1.1", "http/1.0":
		default:
			c.handOff(nil, false) // h2 (or a protocol net/http refuses)
			handedOff = true
			return
		}
		c.tlsState = &cs
	}
	if !c.srv.http1() {
		c.handOff(nil, false)
		handedOff = true
		return
	}
	if c.tlsState == nil {
		c.raw = rawConnOf(c.rwc)
	}
	c.res.c = c

	handler := c.srv.handler()
	writeTimeout := c.srv.Fallback.WriteTimeout
	if d := c.srv.readHeaderTimeout(); d > 0 {
		c.setReadDeadline(time.Now().Add(d))
	}
	for first := true; ; first = false {
		if !c.waitForRequest(first) {
			return
		}
		req, n, act := c.readRequest(first)
		if c.srv.shuttingDown() {
			return // as net/http: a request read while shutting down is dropped
		}
		switch act {
		case actClose:
			return
		case actHandOff:
			c.handOffRequest(n)
			handedOff = true
			return
		}
		c.srv.setConnState(c.rwc, http.StateActive)
		if writeTimeout > 0 {
			_ = c.rwc.SetWriteDeadline(time.Now().Add(writeTimeout))
		}
		w := &c.res
		w.reset(req)
		// Probe for a client that goes away during a slow handler, unless
		// it already sent more (pipelining): see probeDelay.
		probed := c.br.Buffered() == 0 && len(c.arrived) == 0
		if probed {
			c.handlerStarts()
		}
		handler.ServeHTTP(w, req)
		gone := probed && c.handlerEnds()
		w.finish()
		if writeTimeout > 0 {
			_ = c.rwc.SetWriteDeadline(time.Time{})
		}
		if gone || !w.shouldReuseConnection() || c.srv.shuttingDown() {
			return
		}
		c.afterPOST = req.Method == "POST"
		c.srv.setConnState(c.rwc, http.StateIdle)
	}
}

// readRequest reads and parses the next request head. n is the length of
// the head in the read buffer (for a hand-off after parsing).
func (c *conn) readRequest(first bool) (req *http.Request, n int, act readAction) {
	n, act = c.readHead(first)
	if act != actServe {
		return nil, n, act
	}
	br := c.br
	head, _ := br.Peek(n)
	if !strictLines(head) {
		// A bare LF or CR, or obs-fold: net/http behind the guard
		// refuses it.
		return nil, 0, actHandOff
	}
	c.head = append(c.head[:0], head...)
	before := br.Buffered()
	req, err := http.ReadRequest(br)
	consumed := before - br.Buffered()
	if consumed > n {
		// Cannot happen: the head ends with its first blank line, where
		// net/http's parser stops. Not replayable, so not answerable.
		return nil, 0, actClose
	}
	if err != nil || consumed < n {
		// Malformed: net/http answers it, from the copy of the head.
		_, _ = br.Discard(n - consumed)
		return nil, n, actHandOff
	}
	switch c.eligible(req, first) {
	case actClose:
		return nil, 0, actClose
	case actHandOff:
		return nil, n, actHandOff
	}
	if req.ProtoMinor == 0 && hasField(c.head[:n], transferEncodingName) {
		// net/http ignores Transfer-Encoding on HTTP/1.0; the guard
		// refuses it (faulty framing).
		return nil, n, actHandOff
	}
	req.RemoteAddr = c.remoteAddr
	req.TLS = c.tlsState
	*req = *req.WithContext(c.ctx) // inlined: the copy stays on the stack
	return req, n, actServe
}

// eligible decides whether the fast path serves req: actServe, actHandOff
// to Fallback, or actClose. first: no request was read before on the
// connection.
func (c *conn) eligible(req *http.Request, first bool) readAction {
	if req.ProtoMajor != 1 || req.ProtoMinor > 1 {
		if req.Method == "PRI" && !first {
			// net/http would give a mid-connection "PRI * HTTP/2.0" to the
			// handler; handing it over would switch the connection to
			// h2c instead. Neither is wanted from an edge: close.
			return actClose
		}
		return actHandOff
	}
	if req.Body != http.NoBody || req.Method == "CONNECT" || req.Method == "PRI" ||
		req.RequestURI == "" || req.RequestURI[0] != '/' {
		return actHandOff
	}
	// Server-side checks of net/http (conn.readRequest): the parser has
	// removed Host from Header; with an origin-form target req.Host is the
	// Host header, and an empty or absent one is left to net/http.
	if req.Host == "" || !httpguts.ValidHostHeader(req.Host) {
		return actHandOff
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return actHandOff
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return actHandOff
			}
		}
		switch k {
		case "Expect", "Upgrade":
			return actHandOff
		}
	}
	return actServe
}

// readHead waits for a complete request head in the read buffer and returns
// its length (actServe), or what to do with the connection instead.
func (c *conn) readHead(first bool) (int, readAction) {
	headerTimeout := c.srv.readHeaderTimeout()
	br := c.br
	if !first {
		// As net/http, wait for 4 bytes under the idle timeout: fewer
		// before the end of the connection close it silently, unless
		// the guard refuses them (then net/http sees 4 bytes and answers
		// 400: so does Fallback).
		if _, err := br.Peek(4); err != nil {
			if rest, _ := br.Peek(br.Buffered()); len(rest) > 0 {
				if _, poison := (&guard{}).check(rest); poison != nil {
					return 0, actHandOff
				}
			}
			return 0, actClose
		}
	}
	c.state.Store(int32(stateActive))
	if c.afterPOST {
		// RFC 7230 section 3 tolerance for old buggy clients (net/http's).
		peek, _ := br.Peek(4)
		_, _ = br.Discard(numLeadingCRorLF(peek))
	}
	// On a new connection the header deadline runs from the accept;
	// otherwise it is set only when the head needs more than one read.
	headerDeadlineSet := first
	limit := min(br.Size(), c.srv.maxHeaderBytes())
	for {
		buf, _ := br.Peek(br.Buffered())
		if i := headEnd(buf); i > 0 {
			if i > limit {
				return 0, actHandOff
			}
			return i, actServe
		}
		if len(buf) >= limit {
			return 0, actHandOff // too large for the fast path: net/http decides (431...)
		}
		if !headerDeadlineSet {
			headerDeadlineSet = true
			if headerTimeout > 0 {
				c.setReadDeadline(time.Now().Add(headerTimeout))
			}
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			if err == io.EOF && br.Buffered() > 0 { //nolint:errorlint // bufio returns io.EOF itself
				return 0, actHandOff // a truncated head: net/http answers it as it would
			}
			return 0, actClose
		}
	}
}

// strictLines reports whether every line of the request head b (up to and
// including the blank line that ends it) ends with CRLF and holds no other
// CR, and no line after the first starts with a space or a tab (obs-fold):
// the line rules of the guard (guard.go), which refuses any head that
// breaks them. It costs a search per line and a count of b's CRs.
func strictLines(b []byte) bool {
	lines := 0
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			break
		}
		i += j
		if i == 0 || b[i-1] != '\r' {
			return false
		}
		lines++
		i++
		if i < len(b) && (b[i] == ' ' || b[i] == '\t') {
			return false
		}
	}
	return bytes.Count(b, crlf[:1]) == lines
}

var crlf = []byte("\r\n")

// hasField reports whether the request head b has a field line named name
// (lower case), in any case.
func hasField(b []byte, name string) bool {
	for len(b) > 0 {
		i := bytes.Index(b, crlf)
		if i < 0 {
			return false
		}
		b = b[i+2:]
		if len(b) > len(name) && b[len(name)] == ':' && asciiEqualFoldLower(b[:len(name)], name) {
			return true
		}
	}
	return false
}

// asciiEqualFoldLower reports whether b equals the lower-case ASCII lower,
// ignoring case.
func asciiEqualFoldLower(b []byte, lower string) bool {
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// headEnd returns the length of the request head at the start of b (up to
// and including the blank line that ends it), or -1 when b holds no blank
// line yet. A line ends with LF; a blank line is empty or a lone CR, as
// net/textproto reads them.
func headEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		if i < len(b) && b[i] == '\n' {
			return i + 1
		}
		if i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n' {
			return i + 2
		}
	}
}

func numLeadingCRorLF(v []byte) (n int) {
	for _, b := range v {
		if b != '\r' && b != '\n' {
			break
		}
		n++
	}
	return n
}

// setReadDeadline sets rwc's read deadline, remembering it.
func (c *conn) setReadDeadline(t time.Time) {
	c.rdl = t
	_ = c.rwc.SetReadDeadline(t)
}

// setIdleDeadline bounds the wait for the next request by IdleTimeout. To
// save a timer update per request, a deadline already set is kept when it
// is at most 1/16 of the timeout (and at most a second) earlier than the
// exact one: an idle connection may be closed that much early.
func (c *conn) setIdleDeadline() {
	d := c.srv.idleTimeout()
	if d <= 0 {
		if !c.rdl.IsZero() {
			c.setReadDeadline(time.Time{})
		}
		return
	}
	want := time.Now().Add(d)
	slack := min(d/16, time.Second)
	if c.rdl.IsZero() || c.rdl.After(want) || want.Sub(c.rdl) > slack {
		c.setReadDeadline(want)
	}
}

// handOffRequest gives the connection to Fallback with the request head of
// length n (still in the read buffer, or copied in c.head) and everything
// read after it replayed first, through the guard.
func (c *conn) handOffRequest(n int) {
	br := c.br
	var pending []byte
	if n > 0 {
		// The head was parsed (consumed) from br: its copy comes first.
		pending = make([]byte, 0, n+br.Buffered())
		pending = append(pending, c.head[:n]...)
	}
	rest, _ := br.Peek(br.Buffered())
	pending = append(pending, rest...)
	// Read by awaitBytes but not given to br yet (not expected).
	pending = append(pending, c.arrived...)
	if c.probe.n > 0 { // not read from the connection yet (not expected)
		pending = append(pending, c.probe.buf[:c.probe.n]...)
		c.probe.n = 0
	}
	c.handOff(pending, true)
}

// handOff gives the connection, with pending to be read first, to
// Fallback (or closes it when Fallback no longer accepts); c is done. When
// guarded, at an HTTP/1.x request boundary, Fallback reads it through the
// guard (guard.go).
func (c *conn) handOff(pending []byte, guarded bool) {
	c.srv.trackConn(c, false)
	c.cancel()
	c.releaseBuffers()
	// Fallback sets the deadlines it wants, but only those it has.
	_ = c.rwc.SetDeadline(time.Time{})
	var hc net.Conn = c.rwc
	if len(pending) > 0 {
		hc = newReplayConn(c.rwc, pending)
	}
	if guarded {
		hc = newGuardedConn(hc)
	}
	if !c.srv.handoff.hand(hc) {
		_ = c.rwc.Close()
	}
}

// close flushes what the handler wrote and closes the connection.
func (c *conn) close() {
	c.handlerEnds() // after a panic in the handler
	if c.bw != nil && c.werr == nil {
		_ = c.bw.Flush()
	}
	c.cancel()
	_ = c.rwc.Close()
	c.releaseBuffers()
	c.srv.trackConn(c, false)
	c.srv.setConnState(c.rwc, http.StateClosed)
}

// waitForRequest waits for the first bytes of the next request (first: of
// the connection, under the header deadline; otherwise under the idle
// deadline, unless bytes of it were read already) and takes the buffers to
// read it (awaitBytes); false: close the connection (EOF, timeout, reset,
// shutdown: net/http closes silently too). It is called from serve, so that
// the stack of a waiting connection is short: the runtime halves an idle
// goroutine's stack only while it uses less than a quarter of it.
func (c *conn) waitForRequest(first bool) bool {
	if !first {
		if c.br.Buffered() > 0 || len(c.arrived) > 0 || c.probe.n > 0 {
			return true // pipelined, or read by the probe
		}
		c.state.Store(int32(stateIdle))
		c.setIdleDeadline()
		if c.srv.shuttingDown() {
			return false
		}
		// Nothing of the next request yet: an idle connection holds no
		// buffer, nor the last request.
		c.releaseBuffers()
		c.res.req = nil
	}
	return c.awaitBytes() == nil
}

// awaitBytes waits, under the read deadline set, until bytes of a request
// arrive, then takes the read and write buffers from their pools: a
// connection that has sent nothing, or is idle between requests, holds no
// buffer (a few hundred bytes of its own, and its goroutine). On a
// plaintext TCP connection the wait is the poller's and the first read goes
// into a pooled buffer only once the connection is readable (readRaw), as
// many system calls as a buffered read; on other connections (TLS) a
// one-byte read waits (TLS decrypts a whole record into its own buffer, so
// the rest costs no system call). What was read is given to br first
// (connReader).
func (c *conn) awaitBytes() error {
	if c.br != nil {
		return nil
	}
	if c.raw != nil {
		if err := c.readRaw(); err != nil {
			return err
		}
	} else if c.probe.n == 0 {
		n, err := c.rwc.Read(c.probe.buf[:])
		if n == 0 {
			if err == nil {
				err = io.ErrNoProgress
			}
			return err
		}
		c.probe.n = n
	}
	c.br = getReader(connReader{c})
	c.bw = getWriter(connWriter{c})
	return nil
}

// releaseBuffers returns the connection's buffers to their pools.
func (c *conn) releaseBuffers() {
	if c.br != nil {
		c.br.Reset(nil)
		readerPool.Put(c.br)
		c.br = nil
	}
	if c.bw != nil {
		c.bw.Reset(nil)
		writerPool.Put(c.bw)
		c.bw = nil
	}
	c.releaseArrived()
	c.res.releasePending()
}

func (c *conn) releaseArrived() {
	if c.arrivedBuf != nil {
		arrivedPool.Put(c.arrivedBuf)
		c.arrivedBuf = nil
	}
	c.arrived = nil
}

func getArrived() *[]byte {
	if b, ok := arrivedPool.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, readBufferSize)
	return &b
}

func getReader(r io.Reader) *bufio.Reader {
	if br, ok := readerPool.Get().(*bufio.Reader); ok {
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, readBufferSize)
}

func getWriter(w io.Writer) *bufio.Writer {
	if bw, ok := writerPool.Get().(*bufio.Writer); ok {
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, writeBufferSize)
}

// connWriter writes to the connection; the first failure marks it dead and
// cancels the requests' context (net/http's checkConnErrorWriter).
type connWriter struct{ c *conn }

func (w connWriter) Write(p []byte) (int, error) {
	n, err := w.c.rwc.Write(p)
	if err != nil && w.c.werr == nil {
		w.c.werr = err
		w.c.cancel()
	}
	return n, err
}
