package h1server

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// # The framing guard
//
// net/http's request parser is more lenient than a proxy at the edge may
// be: it unfolds obs-fold continuation lines, takes a bare LF as a line
// end, and serves a request with both Content-Length and Transfer-Encoding
// by the chunked coding on a connection it keeps open (RFC 9112 allows all
// three to a server; a gateway that forwards requests to other parsers
// should not). It has no hook to refuse them, and the request it hands to
// the handler no longer shows them. The guard is therefore in front of the
// parser, on the connection's byte stream: it follows the HTTP/1.1
// request framing of the connection (request heads, Content-Length and
// chunked bodies, trailers), checks each byte as it is read, and, on a
// violation, replaces the rest of the stream with bytes that make
// net/http's own parser fail at that very point (a header line "\x00:" in
// a head or trailer, a CR inside a chunk-size line, a broken chunk-data
// CRLF), so that net/http answers, in order, with its own 400 and closes
// the connection, exactly as for any other malformed request. Nothing is
// buffered or copied: bytes are checked in the caller's buffer.
//
// Refused (RFC 9112 section references):
//
//   - a line in a request head or in a trailer section that ends with a
//     bare LF (2.2), a CR not followed by LF (2.2), a field line that
//     starts with a space or a tab (obs-fold, 5.2, or whitespace before
//     the first field, 2.2);
//   - a request with both Content-Length and Transfer-Encoding (6.1: the
//     server may refuse it and must close the connection);
//   - an HTTP/1.0 request with Transfer-Encoding (6.1: faulty framing);
//   - a Transfer-Encoding whose final coding is not chunked (6.3: the
//     length cannot be determined, 400 and close); net/http answers 501 to
//     other codings before a final chunked (gzip, chunked);
//   - an invalid Content-Length (a sign, an inner space, a list), or two
//     with different values (net/http refuses these too);
//   - a chunk-size line that is not 1 to 16 hex digits, optional
//     whitespace, an optional extension and CRLF; chunk data not followed
//     by CRLF (net/http refuses these too, as a body read error).
//
// The guard never changes a request it accepts, and it follows exactly the
// framing net/http applies to the requests it accepts: where net/http would
// refuse a request the guard lets through (say an overlong chunk line or an
// invalid Host), net/http answers and closes the connection itself. A
// connection that starts with the HTTP/2 preface, or reaches it at a request
// boundary, is passed through from then on: it is HTTP/2 (h2c), or
// net/http refuses the "SM" request that follows and closes it.

// guardState is where the guard is in the request stream.
type guardState uint8

const (
	gHeadStart     guardState = iota // at a request boundary: leading CR/LF allowed
	gRequestLine                     // in the request line
	gRequestLineCR                   // after a CR in the request line
	gFieldStart                      // at the start of a field line or of the blank line
	gFieldName                       // in a field name
	gFieldValue                      // in a field value
	gFieldCR                         // after a CR in a field line
	gHeadEndCR                       // after the CR of the blank line that ends the head
	gPreface                         // after "PRI * HTTP/2.0\r\n\r\n": in "SM\r\n\r\n"
	gBody                            // in a Content-Length body
	gChunkSize                       // in the hex digits of a chunk-size line
	gChunkOWS                        // in whitespace after the chunk size
	gChunkExt                        // in a chunk extension
	gChunkSizeCR                     // after the CR of a chunk-size line
	gChunkData                       // in chunk data
	gChunkDataCR                     // expecting the CR after chunk data
	gChunkDataLF                     // expecting the LF after chunk data
	gTrailerStart                    // at the start of a trailer line or of the final blank line
	gTrailerLine                     // in a trailer line
	gTrailerCR                       // after a CR in a trailer line
	gTrailerEndCR                    // after the CR of the final blank line
	gPassthrough                     // not HTTP/1.x any more (h2c): unchecked
	gPoisoned                        // a violation was replaced: what follows is dropped
)

// Field kinds the guard reads the value of.
const (
	fieldOther uint8 = iota
	fieldContentLength
	fieldTransferEncoding
)

const (
	contentLengthName    = "content-length"
	transferEncodingName = "transfer-encoding"
	// h2Preface is the HTTP/2 client connection preface: a request head
	// "PRI * HTTP/2.0" and the "SM" that follows it.
	h2PrefaceHead = "PRI * HTTP/2.0"
	h2PrefaceRest = "SM\r\n\r\n"
)

// Replacements of the rest of the stream after a violation. Each makes
// net/http's parser fail where it is.
var (
	// At the start of a line of a head or trailer section: a field line
	// with an invalid name, then the end of the section.
	poisonLineStart = []byte("\x00:\r\n\r\n")
	// Inside a line of a head or trailer section: that line ends, then as
	// above. (A request line ending so still fails at the next line; a
	// line that had only a CR is a field line without a colon.)
	poisonMidLine = []byte("\r\n\x00:\r\n\r\n")
	// Inside a chunk-size line: a CR before its CRLF.
	poisonChunkLine = []byte("\r\r\n")
	// Instead of the CRLF after chunk data (or its LF).
	poisonChunkCRLF = []byte("xx")
	poisonChunkLF   = []byte("x")
)

// guard is the framing state of one connection's request stream. The zero
// value is at the start of a connection.
type guard struct {
	state guardState

	// The request line: its length, first and last 8 bytes (for the
	// HTTP/2 preface and the HTTP/1.0 version).
	lineLen    int
	lineFirst  uint64
	lineLast   uint64
	http10     bool // the request is HTTP/1.0
	prefaceHit bool // the request line is the HTTP/2 preface's
	fields     int  // field lines in the head

	// The field being read.
	field   uint8
	nameLen int
	nameCL  bool // the name read so far is a prefix of Content-Length
	nameTE  bool // ... of Transfer-Encoding

	// Content-Length: values seen, the current one and its parse state.
	clSeen    bool
	clInvalid bool
	cl        int64
	clValue   int64
	clState   uint8 // 0 leading whitespace, 1 digits, 2 trailing whitespace

	// Transfer-Encoding: field lines and codings seen, whether the last
	// coding is chunked, and the coding token being read.
	teFields    int
	teCodings   int
	teChunked   bool
	tokLen      int
	tokBad      bool
	tokEnded    bool // whitespace after the token
	prefaceRead int  // bytes of h2PrefaceRest matched

	remaining uint64 // of a Content-Length body or a chunk
	chunkHex  int    // hex digits of the chunk size
}

// check checks p, bytes just read from the connection, and advances the
// state. It returns len(p) when all of p may be passed on; otherwise the
// index of the first byte that violates the framing and the bytes to pass
// on in its place (and instead of everything after it).
func (g *guard) check(p []byte) (n int, poison []byte) {
	for i := 0; i < len(p); {
		switch g.state {
		case gPassthrough:
			return len(p), nil
		case gPoisoned:
			return i, nil
		case gBody:
			k := uint64(len(p) - i)
			if k >= g.remaining {
				i += int(g.remaining)
				g.remaining = 0
				g.state = gHeadStart
				continue
			}
			g.remaining -= k
			return len(p), nil
		case gChunkData:
			k := uint64(len(p) - i)
			if k >= g.remaining {
				i += int(g.remaining)
				g.remaining = 0
				g.state = gChunkDataCR
				continue
			}
			g.remaining -= k
			return len(p), nil
		// Runs of bytes that only matter for the CR or LF that ends them.
		case gRequestLine:
			k := lineSpan(p[i:])
			g.requestLineBytes(p[i : i+k])
			if i += k; i == len(p) {
				return len(p), nil
			}
		case gFieldName:
			if !g.nameCL && !g.nameTE {
				k := lineSpan(p[i:])
				if c := bytes.IndexByte(p[i:i+k], ':'); c >= 0 {
					k = c
				}
				if i += k; i == len(p) {
					return len(p), nil
				}
			}
		case gFieldValue:
			if g.field == fieldOther {
				if i += lineSpan(p[i:]); i == len(p) {
					return len(p), nil
				}
			}
		case gTrailerLine, gChunkExt:
			if i += lineSpan(p[i:]); i == len(p) {
				return len(p), nil
			}
		}
		if poison := g.step(p[i]); poison != nil {
			g.state = gPoisoned
			return i, poison
		}
		i++
	}
	return len(p), nil
}

// step advances the state by one byte; a non-nil result is the
// replacement of a violation.
func (g *guard) step(b byte) (poison []byte) {
	switch g.state {
	case gHeadStart:
		if b == '\r' || b == '\n' {
			return nil // leading empty lines: net/http skips or refuses them
		}
		g.startRequest()
		g.state = gRequestLine
		return g.step(b)

	case gRequestLine:
		switch b {
		case '\r':
			g.state = gRequestLineCR
		case '\n':
			return poisonMidLine // bare LF
		default:
			g.requestLineBytes([]byte{b})
		}
		return nil

	case gRequestLineCR:
		if b != '\n' {
			return poisonMidLine // bare CR
		}
		g.http10 = g.lineLen >= 8 && g.lineLast == pack8("HTTP/1.0")
		g.prefaceHit = g.lineLen == len(h2PrefaceHead) &&
			g.lineFirst == pack8(h2PrefaceHead[:8]) && g.lineLast == pack8(h2PrefaceHead[len(h2PrefaceHead)-8:])
		g.state = gFieldStart
		return nil

	case gFieldStart, gTrailerStart:
		trailer := g.state == gTrailerStart
		switch b {
		case '\r':
			if trailer {
				g.state = gTrailerEndCR
			} else {
				g.state = gHeadEndCR
			}
			return nil
		case '\n', ' ', '\t':
			return poisonLineStart // bare LF, obs-fold or leading whitespace
		}
		if trailer {
			g.field = fieldOther
			g.state = gTrailerLine
			return nil
		}
		g.fields++
		g.field, g.nameLen, g.nameCL, g.nameTE = fieldOther, 0, true, true
		g.state = gFieldName
		return g.step(b)

	case gFieldName:
		switch b {
		case ':':
			switch {
			case g.nameCL && g.nameLen == len(contentLengthName):
				g.field = fieldContentLength
				g.clValue, g.clState = 0, 0
			case g.nameTE && g.nameLen == len(transferEncodingName):
				g.field = fieldTransferEncoding
				g.teFields++
				g.tokLen, g.tokBad, g.tokEnded = 0, false, false
			}
			g.state = gFieldValue
		case '\r':
			g.state = gFieldCR // no colon: net/http refuses the line
		case '\n':
			return poisonMidLine
		default:
			c := lower(b)
			g.nameCL = g.nameCL && g.nameLen < len(contentLengthName) && contentLengthName[g.nameLen] == c
			g.nameTE = g.nameTE && g.nameLen < len(transferEncodingName) && transferEncodingName[g.nameLen] == c
			g.nameLen++
		}
		return nil

	case gFieldValue:
		switch b {
		case '\r':
			g.endField()
			g.state = gFieldCR
			return nil
		case '\n':
			return poisonMidLine
		}
		switch g.field {
		case fieldContentLength:
			g.contentLengthByte(b)
		case fieldTransferEncoding:
			g.transferEncodingByte(b)
		}
		return nil

	case gFieldCR:
		if b != '\n' {
			return poisonMidLine // bare CR
		}
		g.state = gFieldStart
		return nil

	case gHeadEndCR:
		if b != '\n' {
			return poisonMidLine // bare CR (the line holds a CR: no colon)
		}
		return g.endHead()

	case gPreface:
		if b != h2PrefaceRest[g.prefaceRead] {
			// Not the preface: net/http reads a "PRI" request and then
			// these bytes as the next request.
			matched := g.prefaceRead
			g.state = gHeadStart
			for i := range matched {
				if poison := g.step(h2PrefaceRest[i]); poison != nil {
					return poison // cannot happen: "SM\r\n" is a valid line
				}
			}
			return g.step(b)
		}
		g.prefaceRead++
		if g.prefaceRead == len(h2PrefaceRest) {
			g.state = gPassthrough
		}
		return nil

	case gChunkSize:
		if v, ok := unhexByte(b); ok {
			if g.chunkHex == 16 {
				return poisonChunkLine // longer than net/http accepts
			}
			g.remaining = g.remaining<<4 | uint64(v)
			g.chunkHex++
			return nil
		}
		if g.chunkHex == 0 {
			return poisonChunkLine // no size
		}
		switch b {
		case ';':
			g.state = gChunkExt
		case ' ', '\t':
			g.state = gChunkOWS
		case '\r':
			g.state = gChunkSizeCR
		default:
			return poisonChunkLine
		}
		return nil

	case gChunkOWS:
		// Whitespace only at the end of the line (net/http trims it
		// before it looks for an extension).
		switch b {
		case ' ', '\t':
		case '\r':
			g.state = gChunkSizeCR
		default:
			return poisonChunkLine
		}
		return nil

	case gChunkExt:
		switch b {
		case '\r':
			g.state = gChunkSizeCR
		case '\n':
			return poisonChunkLine
		}
		return nil

	case gChunkSizeCR:
		if b != '\n' {
			return poisonChunkLine
		}
		g.chunkHex = 0
		if g.remaining == 0 {
			g.state = gTrailerStart
		} else {
			g.state = gChunkData
		}
		return nil

	case gChunkDataCR:
		if b != '\r' {
			return poisonChunkCRLF
		}
		g.state = gChunkDataLF
		return nil

	case gChunkDataLF:
		if b != '\n' {
			return poisonChunkLF
		}
		g.state = gChunkSize
		return nil

	case gTrailerLine:
		switch b {
		case '\r':
			g.state = gTrailerCR
		case '\n':
			return poisonMidLine
		}
		return nil

	case gTrailerCR:
		if b != '\n' {
			return poisonMidLine
		}
		g.state = gTrailerStart
		return nil

	case gTrailerEndCR:
		if b != '\n' {
			return poisonMidLine
		}
		g.state = gHeadStart
		return nil
	}
	return nil // gBody, gChunkData, gPassthrough, gPoisoned: handled by check
}

// lineSpan returns the length of the run of bytes at the start of p that
// holds no CR and no LF.
func lineSpan(p []byte) int {
	n := bytes.IndexByte(p, '\r')
	if n < 0 {
		n = len(p)
	}
	if m := bytes.IndexByte(p[:n], '\n'); m >= 0 {
		return m
	}
	return n
}

// requestLineBytes takes bytes of the request line (no CR or LF): it
// keeps the line's length, first 8 and last 8 bytes.
func (g *guard) requestLineBytes(b []byte) {
	if g.lineLen < 8 {
		for _, c := range b[:min(len(b), 8-g.lineLen)] {
			g.lineFirst = g.lineFirst<<8 | uint64(c)
		}
	}
	for _, c := range b[max(0, len(b)-8):] {
		g.lineLast = g.lineLast<<8 | uint64(c)
	}
	g.lineLen += len(b)
}

// startRequest resets the per-request state.
func (g *guard) startRequest() {
	*g = guard{state: gRequestLine}
}

// endField ends a Content-Length or Transfer-Encoding field value.
func (g *guard) endField() {
	switch g.field {
	case fieldContentLength:
		if g.clState == 0 { // empty
			g.clInvalid = true
		}
		if g.clSeen && g.clValue != g.cl {
			g.clInvalid = true
		}
		g.clSeen, g.cl = true, g.clValue
	case fieldTransferEncoding:
		g.endCoding()
	}
	g.field = fieldOther
}

// contentLengthByte reads one byte of a Content-Length value: optional
// whitespace, decimal digits (at most 2^63-1), optional whitespace.
func (g *guard) contentLengthByte(b byte) {
	switch {
	case b == ' ' || b == '\t':
		if g.clState == 1 {
			g.clState = 2
		}
	case b >= '0' && b <= '9' && g.clState < 2:
		g.clState = 1
		if g.clValue > (1<<63-1-int64(b-'0'))/10 {
			g.clInvalid = true
			return
		}
		g.clValue = g.clValue*10 + int64(b-'0')
	default:
		g.clInvalid = true
	}
}

// transferEncodingByte reads one byte of a Transfer-Encoding value, a
// comma-separated list of codings.
func (g *guard) transferEncodingByte(b byte) {
	switch b {
	case ',':
		g.endCoding()
	case ' ', '\t':
		if g.tokLen > 0 {
			g.tokEnded = true
		}
	default:
		if g.tokEnded || g.tokLen >= len("chunked") || "chunked"[g.tokLen] != lower(b) {
			g.tokBad = true
		}
		g.tokLen++
	}
}

// endCoding ends a coding of a Transfer-Encoding list (empty list elements
// do not count).
func (g *guard) endCoding() {
	if g.tokLen > 0 {
		g.teCodings++
		g.teChunked = !g.tokBad && g.tokLen == len("chunked")
	}
	g.tokLen, g.tokBad, g.tokEnded = 0, false, false
}

// endHead decides the framing of the request whose head just ended.
func (g *guard) endHead() (poison []byte) {
	switch {
	case g.prefaceHit && g.fields == 0:
		g.state, g.prefaceRead = gPreface, 0
	case g.teFields > 0:
		switch {
		case g.http10, g.clSeen, !g.teChunked:
			return poisonMidLine
		case g.teCodings > 1 || g.teFields > 1:
			// Codings before the chunked: net/http answers 501 and
			// closes the connection.
			g.state = gPassthrough
		default:
			g.state, g.remaining, g.chunkHex = gChunkSize, 0, 0
		}
	case g.clSeen:
		if g.clInvalid {
			return poisonMidLine
		}
		g.state, g.remaining = gBody, uint64(g.cl)
		if g.remaining == 0 {
			g.state = gHeadStart
		}
	default:
		g.state = gHeadStart
	}
	return nil
}

func lower(b byte) byte {
	if b >= 'A' && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}

func unhexByte(b byte) (byte, bool) {
	switch {
	case b >= '0' && b <= '9':
		return b - '0', true
	case b >= 'a' && b <= 'f':
		return b - 'a' + 10, true
	case b >= 'A' && b <= 'F':
		return b - 'A' + 10, true
	}
	return 0, false
}

// pack8 packs the 8 bytes of s big-endian, as the guard packs the first and
// last bytes of a request line.
func pack8(s string) (v uint64) {
	for i := range 8 {
		v = v<<8 | uint64(s[i])
	}
	return v
}

// guardedConn is a connection net/http reads through a guard that starts
// at a request boundary: on the fast path's hand-off (over the connection
// that replays what the fast path had read), or as accepted (Guarded).
type guardedConn struct {
	net.Conn
	guard guard
	// pending holds the part of a replacement not returned yet.
	pending []byte
	// refused is set when a violation was replaced: Close lingers.
	refused atomic.Bool
	closed  atomic.Bool
}

// Lingering close of a refused connection: net/http stopped reading at
// the violation, and closing a socket with unread bytes resets it, which
// can destroy the 400 on its way to the client. Close half-closes, reads
// and drops what the client sent (up to lingerMax bytes, for at most
// lingerTimeout), then closes, on a goroutine of its own.
const (
	lingerTimeout = 500 * time.Millisecond
	lingerMax     = 256 << 10
)

func (c *guardedConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.guard.state == gPoisoned {
		// net/http reads no further than the replacement, but for the
		// background read it starts during a handler: that one must see
		// what an idle connection shows (more bytes, the end of the
		// connection or the deadline that ends the read), not an end of
		// stream that would cancel the request in flight.
		for {
			if _, err := c.Conn.Read(p); err != nil {
				return 0, err
			}
		}
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		k, poison := c.guard.check(p[:n])
		if poison != nil {
			c.refused.Store(true)
			m := copy(p[k:], poison)
			c.pending = poison[m:]
			return k + m, nil
		}
	}
	return n, err
}

// CloseWrite half-closes the connection when it supports it (net/http uses
// it to answer 431 before closing).
func (c *guardedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Close closes the connection; after a refusal, with a lingering close.
func (c *guardedConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return net.ErrClosed
	}
	if !c.refused.Load() {
		return c.Conn.Close()
	}
	go func() {
		_ = c.CloseWrite()
		_ = c.Conn.SetReadDeadline(time.Now().Add(lingerTimeout))
		_, _ = io.CopyN(io.Discard, c.Conn, lingerMax)
		_ = c.Conn.Close()
	}()
	return nil
}

// NetConn is the connection under the guard (as tls.Conn.NetConn), for
// ConnState hooks.
func (c *guardedConn) NetConn() net.Conn { return c.Conn }

// Upgraded switches the guard off for the rest of the connection: it
// carries another protocol from now on (after 101 Switching Protocols, on a
// connection the handler hijacked). A connection already refused stays so.
// Only the goroutine that reads the connection may call it, between reads.
func (c *guardedConn) Upgraded() {
	if c.guard.state != gPoisoned {
		c.guard.state = gPassthrough
	}
}

// acceptedConn is the connection as the listener accepted it, for
// ConnContext.
func (c *guardedConn) acceptedConn() net.Conn {
	if a, ok := c.Conn.(interface{ acceptedConn() net.Conn }); ok {
		return a.acceptedConn()
	}
	return c.Conn
}

// connectionStater is a TLS connection (or a wrapper of one).
type connectionStater interface {
	ConnectionState() tls.ConnectionState
}

// tlsGuardedConn is a guardedConn over a TLS connection: net/http takes
// the request's TLS state from ConnectionState.
type tlsGuardedConn struct {
	guardedConn
	cs connectionStater
}

func (c *tlsGuardedConn) ConnectionState() tls.ConnectionState { return c.cs.ConnectionState() }

// newGuardedConn wraps c in a guard starting at a request boundary.
func newGuardedConn(c net.Conn) net.Conn {
	if cs, ok := c.(connectionStater); ok {
		return &tlsGuardedConn{guardedConn: guardedConn{Conn: c}, cs: cs}
	}
	return &guardedConn{Conn: c}
}

// Guarded is net/http's server alone (no fast path) with the framing guard
// in front of its HTTP/1.x connections, so that it refuses what the fast
// path's Server refuses (see The framing guard in guard.go): Serve wraps
// each accepted connection, except TLS connections that negotiated another
// protocol than HTTP/1.x (h2) or whose handshake is not complete (net/http
// must see the *tls.Conn to run it; meshgate's TLS listeners complete it
// before Accept returns). ConnContext sees the connection as accepted.
// Shutdown and Close are the embedded server's.
type Guarded struct {
	*http.Server

	once sync.Once
}

// Serve serves ln as http.Server.Serve does, with the guard.
func (s *Guarded) Serve(ln net.Listener) error {
	s.once.Do(func() {
		orig := s.ConnContext
		if orig == nil {
			return
		}
		s.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			if a, ok := c.(interface{ acceptedConn() net.Conn }); ok {
				c = a.acceptedConn()
			}
			return orig(ctx, c)
		}
	})
	return s.Server.Serve(guardListener{ln})
}

// guardListener wraps the HTTP/1.x connections ln accepts in the guard.
type guardListener struct{ net.Listener }

func (l guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		if !cs.HandshakeComplete {
			return c, nil
		}
		switch cs.NegotiatedProtocol {
		case "", "http/1.1", "http/1.0":
		default:
			return c, nil
		}
	}
	return newGuardedConn(c), nil
}
