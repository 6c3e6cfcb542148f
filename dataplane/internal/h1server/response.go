package h1server

import (
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// response is the http.ResponseWriter of the fast path, reused for every
// request of a connection. Its framing decisions are net/http's
// (chunkWriter.writeHeader), without content sniffing.
type response struct {
	c   *conn
	req *http.Request

	header http.Header // the handler's
	// snapshot is the header as it was at WriteHeader, when the head is
	// written later (net/http ignores changes made after WriteHeader).
	snapshot http.Header
	snapped  bool

	status           int
	wroteHeader      bool // WriteHeader called (logically written)
	committed        bool // head written to the connection's buffer
	handlerDone      bool
	isHEAD, is11     bool
	wants10KeepAlive bool // HTTP/1.0 with Connection: keep-alive
	wantsClose       bool // the request asked to close
	closeAfterReply  bool
	contentLength    int64 // -1: unknown
	written          int64
	chunking         bool
	trailers         []string // declared in the Trailer header

	pending    []byte  // body written before the head is committed
	pendingBuf *[]byte // pooled backing array of pending
	scratch    [20]byte
}

// reset prepares w for req.
func (w *response) reset(req *http.Request) {
	w.req = req
	if w.header == nil {
		w.header = make(http.Header)
	} else {
		clear(w.header)
	}
	w.snapped = false
	w.status = 0
	w.wroteHeader, w.committed, w.handlerDone = false, false, false
	w.isHEAD = req.Method == "HEAD"
	w.is11 = req.ProtoAtLeast(1, 1)
	conn := headerGet(req.Header, "Connection")
	w.wants10KeepAlive = req.ProtoMajor == 1 && req.ProtoMinor == 0 && hasToken(conn, "keep-alive")
	w.wantsClose = req.Close || hasToken(conn, "close")
	w.closeAfterReply = false
	w.contentLength = -1
	w.written = 0
	w.chunking = false
	w.trailers = w.trailers[:0]
	w.pending = nil
}

func headerGet(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Header returns the response header map.
func (w *response) Header() http.Header { return w.header }

// WriteHeader sends the status code, as net/http's does: 1xx informational
// responses immediately, the final head when the framing is known (at once
// with a Content-Length or a body-less status, else with the first body
// bytes past 2 KiB, at Flush or when the handler returns).
func (w *response) WriteHeader(code int) {
	if w.wroteHeader {
		w.c.srv.logf("http: superfluous response.WriteHeader call (h1server)")
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	bw := w.c.bw
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		writeStatusLine(bw, w.is11, code, w.scratch[:0])
		writeHeaderFields(bw, w.header, exContentLength|exTransferEncoding)
		_, _ = bw.WriteString("\r\n")
		_ = bw.Flush()
		return
	}
	w.wroteHeader = true
	w.status = code
	validCL := false
	if cl := headerGet(w.header, "Content-Length"); cl != "" {
		if v, err := strconv.ParseInt(cl, 10, 64); err == nil && v >= 0 {
			w.contentLength = v
			validCL = true
		}
	}
	if validCL || !bodyAllowedForStatus(code) {
		// The framing no longer depends on the body: write the head now,
		// which also freezes it as net/http's copy at WriteHeader does.
		w.commit(nil)
		return
	}
	w.snapped = true
	if w.snapshot == nil {
		w.snapshot = make(http.Header, len(w.header))
	} else {
		clear(w.snapshot)
	}
	for k, vv := range w.header {
		w.snapshot[k] = vv
	}
	if cl := headerGet(w.header, "Content-Length"); cl != "" {
		w.c.srv.logf("http: invalid Content-Length of %q", cl)
		delete(w.header, "Content-Length")
	}
}

// Write writes body bytes.
func (w *response) Write(p []byte) (int, error) { return w.write(len(p), p, "") }

// WriteString writes body bytes without converting s.
func (w *response) WriteString(s string) (int, error) { return w.write(len(s), nil, s) }

func (w *response) write(n int, b []byte, s string) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if n == 0 {
		return 0, nil
	}
	if !bodyAllowedForStatus(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(n)
	if w.contentLength != -1 && w.written > w.contentLength {
		return 0, http.ErrContentLength
	}
	if !w.committed {
		if len(w.pending)+n <= bufferBeforeChunking {
			if w.pending == nil {
				w.getPending()
			}
			if b != nil {
				w.pending = append(w.pending, b...)
			} else {
				w.pending = append(w.pending, s...)
			}
			return n, nil
		}
		if err := w.commitPending(); err != nil {
			return 0, err
		}
	}
	return w.writeBody(n, b, s)
}

// commitPending writes the head and the body written so far.
func (w *response) commitPending() error {
	w.commit(w.pending)
	var err error
	if len(w.pending) > 0 {
		_, err = w.writeBody(len(w.pending), w.pending, "")
	}
	w.releasePending()
	return err
}

// writeBody writes body bytes after the head: as a chunk when chunking,
// nothing for HEAD.
func (w *response) writeBody(n int, b []byte, s string) (int, error) {
	if w.isHEAD {
		return n, nil
	}
	bw := w.c.bw
	if w.chunking {
		_, _ = bw.Write(strconv.AppendInt(w.scratch[:0], int64(n), 16))
		_, _ = bw.WriteString("\r\n")
	}
	var err error
	if b != nil {
		n, err = bw.Write(b)
	} else {
		n, err = bw.WriteString(s)
	}
	if w.chunking && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	return n, err
}

// Flush sends what was written so far (http.Flusher).
func (w *response) Flush() { _ = w.FlushError() }

// FlushError is Flush returning the write error (http.ResponseController).
func (w *response) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		if err := w.commitPending(); err != nil {
			return err
		}
	}
	return w.c.bw.Flush()
}

// finish completes the response once the handler returned.
func (w *response) finish() {
	w.handlerDone = true
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		_ = w.commitPending()
	}
	bw := w.c.bw
	if w.chunking {
		_, _ = bw.WriteString("0\r\n")
		if t := w.finalTrailers(); t != nil {
			_ = t.Write(bw)
		}
		_, _ = bw.WriteString("\r\n")
	}
	_ = bw.Flush()
}

// shouldReuseConnection is net/http's rule for keeping the connection.
func (w *response) shouldReuseConnection() bool {
	if w.closeAfterReply {
		return false
	}
	if !w.isHEAD && w.contentLength != -1 && bodyAllowedForStatus(w.status) && w.contentLength != w.written {
		return false // did not write what it announced: out of sync
	}
	return w.c.werr == nil
}

func (w *response) getPending() {
	if bp, ok := pendingPool.Get().(*[]byte); ok {
		w.pendingBuf = bp
	} else {
		b := make([]byte, 0, bufferBeforeChunking)
		w.pendingBuf = &b
	}
	w.pending = (*w.pendingBuf)[:0]
}

func (w *response) releasePending() {
	if w.pendingBuf != nil {
		pendingPool.Put(w.pendingBuf)
		w.pendingBuf = nil
	}
	w.pending = nil
}

// Fields the head leaves out of the handler's header.
type exclusion uint8

const (
	exContentLength exclusion = 1 << iota
	exTransferEncoding
	exConnection
	exContentType
)

// commit writes the status line and header fields to the connection's
// buffer: net/http's chunkWriter.writeHeader, with p the first chunk of the
// body (all of it when the handler is done).
func (w *response) commit(p []byte) {
	w.committed = true
	c := w.c
	keepAlivesEnabled := !c.srv.shuttingDown()
	header := w.header
	if w.snapped {
		header = w.snapshot
	}
	var excl exclusion

	trailers := false
	for k := range header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			trailers = true // such keys are never written (invalid names)
			break
		}
	}
	for _, v := range header["Trailer"] {
		trailers = true
		foreachHeaderElement(v, w.declareTrailer)
	}

	te := headerGet(header, "Transfer-Encoding")
	hasTE := te != ""

	// A handler that is done without a Content-Length gets one, even 0,
	// except for HEAD without a body (it may have skipped writing one).
	autoCL := false
	if w.handlerDone && !trailers && !hasTE && bodyAllowedForStatus(w.status) && !headerHas(header, "Content-Length") && (!w.isHEAD || len(p) > 0) {
		w.contentLength = int64(len(p))
		autoCL = true
	}

	if w.wants10KeepAlive && keepAlivesEnabled {
		sentLength := headerGet(header, "Content-Length") != ""
		if sentLength && headerGet(header, "Connection") == "keep-alive" {
			w.closeAfterReply = false
		}
	}

	hasCL := w.contentLength != -1
	var setConnection, setTE string
	if w.wants10KeepAlive && (w.isHEAD || hasCL || !bodyAllowedForStatus(w.status)) {
		if _, ok := header["Connection"]; !ok {
			setConnection = "keep-alive"
		}
	} else if !w.is11 || w.wantsClose {
		w.closeAfterReply = true
	}
	if headerGet(header, "Connection") == "close" || !keepAlivesEnabled {
		w.closeAfterReply = true
	}

	code := w.status
	if !bodyAllowedForStatus(code) {
		excl |= exContentLength | exTransferEncoding
		if code == http.StatusNotModified {
			excl |= exContentType
		}
	}
	setDate := !headerHas(header, "Date")

	if hasCL && hasTE && te != "identity" {
		c.srv.logf("http: WriteHeader called with both Transfer-Encoding of %q and a Content-Length of %d", te, w.contentLength)
		excl |= exContentLength
		hasCL = false
	}

	switch {
	case w.isHEAD || !bodyAllowedForStatus(code) || code == http.StatusNoContent:
		excl |= exTransferEncoding
	case hasCL:
		excl |= exTransferEncoding
	case w.is11:
		if hasTE && te == "identity" {
			w.chunking = false
			w.closeAfterReply = true
			excl |= exTransferEncoding
		} else {
			w.chunking = true
			setTE = "chunked"
			if hasTE && te == "chunked" {
				excl |= exTransferEncoding
			}
		}
	default:
		// HTTP/1.0 without a length: the body ends with the connection.
		w.closeAfterReply = true
		excl |= exTransferEncoding
	}
	if w.chunking {
		excl |= exContentLength
	}

	if w.closeAfterReply && (!keepAlivesEnabled || !hasToken(headerGet(header, "Connection"), "close")) && !isProtocolSwitchResponse(code, header) {
		excl |= exConnection
		if w.is11 {
			setConnection = "close"
		}
	}

	bw := c.bw
	writeStatusLine(bw, w.is11, code, w.scratch[:0])
	writeHeaderFields(bw, header, excl)
	if setDate {
		_, _ = bw.WriteString("Date: ")
		_, _ = bw.Write(currentDate())
		_, _ = bw.WriteString("\r\n")
	}
	if autoCL {
		_, _ = bw.WriteString("Content-Length: ")
		_, _ = bw.Write(strconv.AppendInt(w.scratch[:0], int64(len(p)), 10))
		_, _ = bw.WriteString("\r\n")
	}
	if setConnection != "" {
		_, _ = bw.WriteString("Connection: ")
		_, _ = bw.WriteString(setConnection)
		_, _ = bw.WriteString("\r\n")
	}
	if setTE != "" {
		_, _ = bw.WriteString("Transfer-Encoding: ")
		_, _ = bw.WriteString(setTE)
		_, _ = bw.WriteString("\r\n")
	}
	_, _ = bw.WriteString("\r\n")
}

func headerHas(h http.Header, key string) bool {
	_, ok := h[key]
	return ok
}

// declareTrailer notes a field announced in the Trailer header.
func (w *response) declareTrailer(k string) {
	k = http.CanonicalHeaderKey(k)
	if !httpguts.ValidTrailerHeader(k) {
		return // forbidden by RFC 7230 section 4.1.2
	}
	w.trailers = append(w.trailers, k)
}

// finalTrailers are the trailers to send after a chunked body (net/http's).
func (w *response) finalTrailers() http.Header {
	var t http.Header
	for k, vv := range w.header {
		if kk, found := strings.CutPrefix(k, http.TrailerPrefix); found {
			if t == nil {
				t = make(http.Header)
			}
			t[kk] = vv
		}
	}
	for _, k := range w.trailers {
		if t == nil {
			t = make(http.Header)
		}
		for _, v := range w.header[k] {
			t.Add(k, v)
		}
	}
	return t
}

// foreachHeaderElement calls fn for each non-empty element of the
// comma-separated list v (net/http's).
func foreachHeaderElement(v string, fn func(string)) {
	v = textproto.TrimString(v)
	if v == "" {
		return
	}
	if !strings.Contains(v, ",") {
		fn(v)
		return
	}
	for f := range strings.SplitSeq(v, ",") {
		if f = textproto.TrimString(f); f != "" {
			fn(f)
		}
	}
}

func bodyAllowedForStatus(status int) bool {
	switch {
	case status >= 100 && status <= 199:
		return false
	case status == http.StatusNoContent, status == http.StatusNotModified:
		return false
	}
	return true
}

func isProtocolSwitchResponse(code int, h http.Header) bool {
	return code == http.StatusSwitchingProtocols && h.Get("Upgrade") != "" &&
		httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade")
}

// writeStatusLine writes an HTTP/1.x status line (net/http's).
func writeStatusLine(bw interface {
	WriteString(string) (int, error)
	Write([]byte) (int, error)
}, is11 bool, code int, scratch []byte) {
	if is11 {
		_, _ = bw.WriteString("HTTP/1.1 ")
	} else {
		_, _ = bw.WriteString("HTTP/1.0 ")
	}
	if text := http.StatusText(code); text != "" {
		_, _ = bw.Write(strconv.AppendInt(scratch[:0], int64(code), 10))
		_, _ = bw.WriteString(" ")
		_, _ = bw.WriteString(text)
		_, _ = bw.WriteString("\r\n")
	} else {
		_, _ = fmt.Fprintf(bw, "%03d status code %d\r\n", code, code)
	}
}

// headerNewlineToSpace is net/http's sanitizer of written values.
var headerNewlineToSpace = strings.NewReplacer("\n", " ", "\r", " ")

// writeHeaderFields writes h but the excluded fields, as net/http's
// Header.WriteSubset does (invalid names dropped, CR and LF in values
// replaced by spaces, values trimmed) but in map order.
func writeHeaderFields(bw interface {
	WriteString(string) (int, error)
}, h http.Header, excl exclusion) {
	for k, vv := range h {
		if excl != 0 && excluded(k, excl) {
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			v = sanitizeValue(v)
			_, _ = bw.WriteString(k)
			_, _ = bw.WriteString(": ")
			_, _ = bw.WriteString(v)
			_, _ = bw.WriteString("\r\n")
		}
	}
}

func excluded(k string, excl exclusion) bool {
	switch k {
	case "Content-Length":
		return excl&exContentLength != 0
	case "Transfer-Encoding":
		return excl&exTransferEncoding != 0
	case "Connection":
		return excl&exConnection != 0
	case "Content-Type":
		return excl&exContentType != 0
	}
	return false
}

// sanitizeValue is headerNewlineToSpace then textproto.TrimString, without
// allocating for the common clean value.
func sanitizeValue(v string) string {
	clean := true
	for i := 0; i < len(v); i++ {
		if v[i] == '\r' || v[i] == '\n' {
			clean = false
			break
		}
	}
	if !clean {
		v = headerNewlineToSpace.Replace(v)
	}
	if len(v) > 0 && (isASCIISpace(v[0]) || isASCIISpace(v[len(v)-1])) {
		v = textproto.TrimString(v)
	}
	return v
}

func isASCIISpace(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' }
