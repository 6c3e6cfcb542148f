package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The request-smuggling corpus: raw byte sequences sent to a gateway whose
// only route leads to a raw TCP backend that records every byte it
// receives. smugglingCorpus returns the cases; runSmugglingCase plays one
// and checks it; TestSmugglingCorpus runs them all against both HTTP/1.1
// servers of the gateway. A chaos or soak suite can replay the same cases
// (under load, across restarts) with the same two functions.

// smugglingCase is one connection's worth of raw request bytes and what the
// gateway must do with them.
type smugglingCase struct {
	name string
	raw  string
	// status is the status of each response the client must get, in order.
	status []int
	// close: the gateway closes the connection after the last response.
	// Otherwise the connection must stay usable: a probe request sent after
	// the responses is answered.
	close bool
	// forwarded lists the requests ("METHOD target") the backend must have
	// received, complete, in order; nil: none.
	forwarded []string
	// check, when set, looks further at the requests the backend received.
	check func([]backendRequest) error
}

// Marker paths of requests hidden in another's body: the backend must never
// receive one as a request.
const smuggledPath = "/smuggled"

func chunkedPost(path, chunks string) string {
	return "POST " + path + " HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
}

// smugglingCorpus returns the cases. Every case's backend requests are also
// checked for ambiguous framing (checkUnambiguous).
func smugglingCorpus() []smugglingCase {
	const bad = http.StatusBadRequest
	const ok = http.StatusOK
	// The smuggled request that a Content-Length covers when the chunked
	// body before it is empty.
	const hidden = "GET " + smuggledPath + " HTTP/1.1\r\nHost: a\r\n\r\n"
	clCovering := strconv.Itoa(len("0\r\n\r\n" + hidden))
	withBody := func(body string) func([]backendRequest) error {
		return func(reqs []backendRequest) error {
			if len(reqs) == 0 || string(reqs[0].body) != body {
				return fmt.Errorf("backend got body %q, want %q", bodies(reqs), body)
			}
			return nil
		}
	}
	return []smugglingCase{
		// Content-Length and Transfer-Encoding together (RFC 9112 section
		// 6.1): refused, connection closed, nothing forwarded.
		{name: "CL then TE", status: []int{bad}, close: true,
			raw: "POST /cl-te HTTP/1.1\r\nHost: a\r\nContent-Length: " + clCovering + "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden},
		{name: "TE then CL", status: []int{bad}, close: true,
			raw: "POST /te-cl HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: " + clCovering + "\r\n\r\n0\r\n\r\n" + hidden},
		{name: "CL and TE in lower and mixed case", status: []int{bad}, close: true,
			raw: "POST /cl-te HTTP/1.1\r\nHost: a\r\ncontent-length: " + clCovering + "\r\ntRaNsFeR-eNcOdInG: CHUNKED\r\n\r\n0\r\n\r\n" + hidden},
		{name: "CL 0 and TE with a body", status: []int{bad}, close: true,
			raw: "POST /cl-te HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n" + strconv.FormatInt(int64(len(hidden)), 16) + "\r\n" + hidden + "\r\n0\r\n\r\n"},
		{name: "CL and TE folded", status: []int{bad}, close: true,
			raw: "POST /cl-te HTTP/1.1\r\nHost: a\r\nContent-Length: " + clCovering + "\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + hidden},
		{name: "CL and TE on HTTP/1.0", status: []int{bad}, close: true,
			raw: "POST /cl-te HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nContent-Length: " + clCovering + "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden},
		{name: "TE on HTTP/1.0", status: []int{bad}, close: true,
			raw: "POST /te10 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden},

		// Transfer-Encoding values: only a final chunked is a framing.
		{name: "TE folded", status: []int{bad}, close: true,
			raw: "POST /te-fold HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + hidden},
		{name: "TE chunked, identity", status: []int{bad}, close: true,
			raw: "POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + hidden},
		{name: "TE xchunked", status: []int{bad}, close: true,
			raw: "POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + hidden},
		{name: "TE identity", status: []int{bad}, close: true,
			raw: "POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + hidden},
		{name: "TE chunked then identity fields", status: []int{bad}, close: true,
			raw: "POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + hidden},
		{name: "TE gzip, chunked is not implemented", status: []int{http.StatusNotImplemented}, close: true,
			raw: "POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + hidden},
		{name: "TE with space before the colon", status: []int{bad}, close: true,
			raw: "POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + hidden},
		{name: "TE chunked with trailing space", status: []int{ok}, forwarded: []string{"POST /te-space"}, check: withBody("hello"),
			raw: "POST /te-space HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{name: "TE Chunked in capitals", status: []int{ok}, forwarded: []string{"POST /te-caps"}, check: withBody("hello"),
			raw: "POST /te-caps HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},

		// Content-Length values.
		{name: "two different CL", status: []int{bad}, close: true,
			raw: "POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: " + strconv.Itoa(len(hidden)) + "\r\n\r\n" + hidden},
		{name: "two equal CL", status: []int{ok}, forwarded: []string{"POST /cl-twice"}, check: withBody("hello"),
			raw: "POST /cl-twice HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"},
		{name: "CL list", status: []int{bad}, close: true,
			raw: "POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello"},
		{name: "CL with plus sign", status: []int{bad}, close: true,
			raw: "POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello"},
		{name: "CL negative", status: []int{bad}, close: true,
			raw: "POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\nhello"},
		{name: "CL with inner space", status: []int{bad}, close: true,
			raw: "POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 1 0\r\n\r\nhelloworld"},
		{name: "CL in hex", status: []int{bad}, close: true,
			raw: "POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello"},
		{name: "CL with spaces around", status: []int{ok}, forwarded: []string{"POST /cl-ows"}, check: withBody("hello"),
			raw: "POST /cl-ows HTTP/1.1\r\nHost: a\r\nContent-Length:   5  \r\n\r\nhello"},

		// Line endings and folding in the head.
		{name: "bare LF line endings", status: []int{bad}, close: true,
			raw: "GET /bare-lf HTTP/1.1\nHost: a\n\n"},
		{name: "bare LF after the request line", status: []int{bad}, close: true,
			raw: "GET /bare-lf HTTP/1.1\nHost: a\r\n\r\n"},
		{name: "bare LF ending the head", status: []int{bad}, close: true,
			raw: "GET /bare-lf HTTP/1.1\r\nHost: a\r\n\n"},
		{name: "bare LF hiding a request", status: []int{bad}, close: true,
			raw: "GET /bare-lf HTTP/1.1\r\nHost: a\r\nX-A: 1\n\n" + hidden},
		{name: "bare CR in a value", status: []int{bad}, close: true,
			raw: "GET /bare-cr HTTP/1.1\r\nHost: a\r\nX-A: 1\r2\r\n\r\n"},
		{name: "bare CR before CRLF", status: []int{bad}, close: true,
			raw: "GET /bare-cr HTTP/1.1\r\nHost: a\r\nX-A: 1\r\r\n\r\n"},
		{name: "bare CR in the request line", status: []int{bad}, close: true,
			raw: "GET /bare\rcr HTTP/1.1\r\nHost: a\r\n\r\n"},
		{name: "obs-fold", status: []int{bad}, close: true,
			raw: "GET /fold HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n"},
		{name: "obs-fold with a tab", status: []int{bad}, close: true,
			raw: "GET /fold HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\t2\r\n\r\n"},
		{name: "obs-fold of the first field", status: []int{bad}, close: true,
			raw: "GET /fold HTTP/1.1\r\n Host: a\r\n\r\n"},

		// Chunked bodies: a malformed one is the client's fault.
		{name: "chunk size overflow", status: []int{bad}, close: true,
			raw: chunkedPost("/chunk", "10000000000000005\r\nhello\r\n0\r\n\r\n")},
		{name: "chunk size negative", status: []int{bad}, close: true,
			raw: chunkedPost("/chunk", "-5\r\nhello\r\n0\r\n\r\n")},
		{name: "chunk size with leading space", status: []int{bad}, close: true,
			raw: chunkedPost("/chunk", " 5\r\nhello\r\n0\r\n\r\n")},
		{name: "chunk size 0x", status: []int{bad}, close: true,
			raw: chunkedPost("/chunk", "0x5\r\nhello\r\n0\r\n\r\n")},
		{name: "chunk size empty", status: []int{bad}, close: true,
			raw: chunkedPost("/chunk", "\r\nhello\r\n0\r\n\r\n")},
		{name: "chunk data without CRLF", status: []int{bad}, close: true,
			raw: chunkedPost("/chunk", "5\r\nhelloX\r\n0\r\n\r\n")},
		{name: "chunk size line with bare LF", status: []int{bad}, close: true,
			raw: chunkedPost("/chunk", "5\nhello\r\n0\r\n\r\n")},
		{name: "chunk extension with bare LF", status: []int{bad}, close: true,
			raw: chunkedPost("/chunk", "5;ext=1\nhello\r\n0\r\n\r\n")},
		{name: "chunk extension with bare CR", status: []int{bad}, close: true,
			raw: chunkedPost("/chunk", "5;e\rx\r\nhello\r\n0\r\n\r\n")},
		{name: "last chunk with bare LF", status: []int{bad}, close: true,
			raw: chunkedPost("/chunk", "5\r\nhello\r\n0\n\r\n")},
		{name: "trailer folded", status: []int{bad}, close: true,
			raw: chunkedPost("/chunk", "5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n")},
		{name: "trailer with bare LF", status: []int{bad}, close: true,
			raw: chunkedPost("/chunk", "5\r\nhello\r\n0\r\nX-T: 1\n\r\n")},
		{name: "chunk extension", status: []int{ok}, forwarded: []string{"POST /chunk-ext"}, check: withBody("hello"),
			raw: chunkedPost("/chunk-ext", "5;name=value\r\nhello\r\n0\r\n\r\n")},

		// Pipelining: legitimate sequences stay intact, and nothing after a
		// refused request is read as a request.
		{name: "pipelined after a CL body", status: []int{ok, ok}, forwarded: []string{"POST /p1", "GET /p2"},
			raw: "POST /p1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /p2 HTTP/1.1\r\nHost: a\r\n\r\n"},
		{name: "pipelined after a chunked body", status: []int{ok, ok}, forwarded: []string{"POST /p1", "GET /p2"},
			raw: chunkedPost("/p1", "5\r\nhello\r\n0\r\n\r\n") + "GET /p2 HTTP/1.1\r\nHost: a\r\n\r\n"},
		{name: "request text inside a chunked body", status: []int{ok}, forwarded: []string{"POST /carrier"}, check: withBody(hidden),
			raw: chunkedPost("/carrier", strconv.FormatInt(int64(len(hidden)), 16)+"\r\n"+hidden+"\r\n0\r\n\r\n")},
		{name: "request text inside a CL body", status: []int{ok}, forwarded: []string{"POST /carrier"}, check: withBody(hidden),
			raw: "POST /carrier HTTP/1.1\r\nHost: a\r\nContent-Length: " + strconv.Itoa(len(hidden)) + "\r\n\r\n" + hidden},
		{name: "good then folded", status: []int{ok, bad}, close: true, forwarded: []string{"GET /ok"},
			raw: "GET /ok HTTP/1.1\r\nHost: a\r\n\r\nGET " + smuggledPath + " HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n"},
		{name: "body then folded", status: []int{ok, bad}, close: true, forwarded: []string{"POST /p1"},
			raw: "POST /p1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET " + smuggledPath + " HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n"},
		{name: "body then bare LF", status: []int{ok, bad}, close: true, forwarded: []string{"POST /p1"},
			raw: "POST /p1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET " + smuggledPath + " HTTP/1.1\nHost: a\n\n"},
		{name: "chunked body then CL and TE", status: []int{ok, bad}, close: true, forwarded: []string{"POST /p1"},
			raw: chunkedPost("/p1", "5\r\nhello\r\n0\r\n\r\n") + "POST /cl-te HTTP/1.1\r\nHost: a\r\nContent-Length: " + clCovering + "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden},
		{name: "bad chunk then a request", status: []int{bad}, close: true,
			raw: chunkedPost("/chunk", "5\r\nhelloXX"+hidden)},
		{name: "refused then a request", status: []int{bad}, close: true,
			raw: "GET /bare-lf HTTP/1.1\nHost: a\n\n" + hidden},

		// Request lines.
		{name: "absolute-form", status: []int{ok}, forwarded: []string{"GET /abs"},
			raw: "GET http://a.example/abs HTTP/1.1\r\nHost: a.example\r\n\r\n"},
		{name: "space in the target", status: []int{bad}, close: true,
			raw: "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"},
		{name: "two spaces after the method", status: []int{bad}, close: true,
			raw: "GET  /a HTTP/1.1\r\nHost: a\r\n\r\n"},
		{name: "space after the version", status: []int{bad}, close: true,
			raw: "GET /a HTTP/1.1 \r\nHost: a\r\n\r\n"},
		{name: "tabs as separators", status: []int{bad}, close: true,
			raw: "GET\t/a\tHTTP/1.1\r\nHost: a\r\n\r\n"},
		{name: "no Host", status: []int{bad}, close: true,
			raw: "GET /a HTTP/1.1\r\n\r\n"},

		// Size.
		{name: "huge header", status: []int{http.StatusRequestHeaderFieldsTooLarge}, close: true,
			raw: "GET /huge HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 70<<10) + "\r\n\r\n"},

		// Forwarded as sent: no User-Agent is added.
		{name: "no User-Agent", status: []int{ok}, forwarded: []string{"GET /no-ua"},
			raw: "GET /no-ua HTTP/1.1\r\nHost: a\r\n\r\n",
			check: func(reqs []backendRequest) error {
				if len(reqs) > 0 && reqs[0].header["User-Agent"] != nil {
					return fmt.Errorf("backend got User-Agent %q from a request without one", reqs[0].header["User-Agent"])
				}
				return nil
			}},
		{name: "User-Agent kept", status: []int{ok}, forwarded: []string{"GET /ua"},
			raw: "GET /ua HTTP/1.1\r\nHost: a\r\nUser-Agent: corpus/1\r\n\r\n",
			check: func(reqs []backendRequest) error {
				if len(reqs) > 0 && !slices.Equal(reqs[0].header["User-Agent"], []string{"corpus/1"}) {
					return fmt.Errorf("backend got User-Agent %q, want corpus/1", reqs[0].header["User-Agent"])
				}
				return nil
			}},
	}
}

func bodies(reqs []backendRequest) []string {
	var out []string
	for _, r := range reqs {
		out = append(out, string(r.body))
	}
	return out
}

// backendRequest is one complete request the raw backend received.
type backendRequest struct {
	line   string // request line
	header textproto.MIMEHeader
	body   []byte
}

// target is "METHOD request-target".
func (r backendRequest) target() string {
	method, rest, _ := strings.Cut(r.line, " ")
	uri, _, _ := strings.Cut(rest, " ")
	return method + " " + uri
}

// rawBackend is an HTTP/1.1 origin on a raw socket: it records every byte
// it receives and every request it could read completely (head as sent,
// duplicates kept; body decoded), and answers each with a short 200.
type rawBackend struct {
	ln       net.Listener
	mu       sync.Mutex
	raw      bytes.Buffer
	requests []backendRequest
}

func startRawBackend(t *testing.T) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &rawBackend{ln: ln}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.serve(c)
		}
	}()
	return b
}

func (b *rawBackend) addr() string { return b.ln.Addr().String() }

// reset forgets what was received so far.
func (b *rawBackend) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.raw.Reset()
	b.requests = nil
}

// received returns the raw bytes and the complete requests received since
// the last reset.
func (b *rawBackend) received() ([]byte, []backendRequest) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.raw.Bytes()), slices.Clone(b.requests)
}

func (b *rawBackend) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.raw.Write(p)
}

func (b *rawBackend) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(io.TeeReader(c, b))
	tp := textproto.NewReader(br)
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		header, err := tp.ReadMIMEHeader()
		if err != nil {
			return
		}
		var body []byte
		switch {
		case header["Transfer-Encoding"] != nil:
			if body, err = io.ReadAll(httputil.NewChunkedReader(br)); err != nil {
				return
			}
			if _, err := tp.ReadMIMEHeader(); err != nil { // trailers
				return
			}
		case header["Content-Length"] != nil:
			n, err := strconv.Atoi(header.Get("Content-Length"))
			if err != nil || n < 0 {
				return
			}
			body = make([]byte, n)
			if _, err := io.ReadFull(br, body); err != nil {
				return
			}
		}
		b.mu.Lock()
		b.requests = append(b.requests, backendRequest{line: line, header: header, body: body})
		b.mu.Unlock()
		answer := "backend: " + line + "\n"
		if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(answer), answer); err != nil {
			return
		}
	}
}

// checkUnambiguous fails on a request the backend received with an
// ambiguous or smuggled framing: Content-Length and Transfer-Encoding
// together, more than one Content-Length, a Transfer-Encoding other than
// chunked, or the smuggled marker as a request.
func checkUnambiguous(reqs []backendRequest) error {
	for _, r := range reqs {
		te, cl := r.header["Transfer-Encoding"], r.header["Content-Length"]
		switch {
		case te != nil && cl != nil:
			return fmt.Errorf("backend got %q with Content-Length %q and Transfer-Encoding %q", r.line, cl, te)
		case len(cl) > 1:
			return fmt.Errorf("backend got %q with Content-Length %q", r.line, cl)
		case te != nil && !slices.Equal(te, []string{"chunked"}):
			return fmt.Errorf("backend got %q with Transfer-Encoding %q", r.line, te)
		case strings.Contains(r.line, smuggledPath):
			return fmt.Errorf("backend got the smuggled request %q", r.line)
		}
	}
	return nil
}

// smugglingResult is what the client saw of one case.
type smugglingResult struct {
	status []int
	closed bool   // the gateway closed the connection after the responses
	err    string // how reading the responses ended, when not by EOF
}

// playSmugglingCase sends tc.raw on a new connection to addr and reads the
// responses: as many as tc.status lists, then either the end of the
// connection (tc.close) or the answer to a probe request (the connection
// is still usable), at most extra responses in between.
func playSmugglingCase(addr string, tc smugglingCase) (smugglingResult, error) {
	var res smugglingResult
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return res, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(tc.raw)); err != nil {
		return res, fmt.Errorf("write: %w", err)
	}
	br := bufio.NewReader(conn)
	// readOne reads a response; io.EOF: the connection ended before one.
	readOne := func() error {
		if _, err := br.Peek(1); err != nil {
			if isConnReset(err) {
				return io.EOF
			}
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		res.status = append(res.status, resp.StatusCode)
		return nil
	}
	for range tc.status {
		if err := readOne(); err != nil {
			res.closed = errors.Is(err, io.EOF)
			if !res.closed {
				res.err = err.Error()
			}
			return res, nil
		}
	}
	if !tc.close {
		const probe = "GET /probe HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
		if _, err := conn.Write([]byte(probe)); err != nil {
			res.err = "probe: " + err.Error()
			return res, nil
		}
	} else {
		// Whatever comes now is more than expected; a connection left
		// open shows as a timeout.
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	}
	for {
		if err := readOne(); err != nil {
			res.closed = errors.Is(err, io.EOF)
			if !res.closed {
				res.err = err.Error()
			}
			return res, nil
		}
	}
}

func isConnReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && strings.Contains(ne.Err.Error(), "connection reset")
}

// runSmugglingCase plays tc against the gateway at addr whose route leads
// to backend, and reports every way the outcome differs from the case.
func runSmugglingCase(addr string, backend *rawBackend, tc smugglingCase) error {
	backend.reset()
	res, err := playSmugglingCase(addr, tc)
	if err != nil {
		return err
	}
	raw, reqs := backend.received()
	var problems []string
	wantStatus := tc.status
	if !tc.close {
		wantStatus = append(slices.Clone(tc.status), http.StatusOK) // the probe
	}
	if !slices.Equal(res.status, wantStatus) {
		problems = append(problems, fmt.Sprintf("client got statuses %v, want %v", res.status, wantStatus))
	}
	if !res.closed {
		problems = append(problems, fmt.Sprintf("connection not closed after the responses (%s)", res.err))
	}
	var got []string
	for _, r := range reqs {
		if r.target() != "GET /probe" {
			got = append(got, r.target())
		}
	}
	if !slices.Equal(got, tc.forwarded) {
		problems = append(problems, fmt.Sprintf("backend got requests %q, want %q", got, tc.forwarded))
	}
	if err := checkUnambiguous(reqs); err != nil {
		problems = append(problems, err.Error())
	}
	if tc.check != nil {
		if err := tc.check(reqs); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s\nbackend received %d bytes: %.600q", strings.Join(problems, "\n"), len(raw), raw)
	}
	return nil
}

const smugglingPolicy = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge-fast}
spec:
  gatewayClassName: meshgate
  listeners: [{name: http, protocol: HTTP, port: ${gw-fast.port}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge-std}
spec:
  gatewayClassName: meshgate
  listeners: [{name: http, protocol: HTTP, port: ${gw-std.port}}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: recorder}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${recorder}"}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: all}
spec:
  parentRefs: [{name: edge-fast}, {name: edge-std}]
  rules:
    - backendRefs: [{name: recorder, port: 80}]
`

// TestSmugglingCorpus plays the corpus against a gateway with each
// HTTP/1.1 server (--http1-server fast and std): the statuses, the closed
// connections and what the backend received must be those of the case.
func TestSmugglingCorpus(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	backend := startRawBackend(t)
	c.vars["recorder"] = backend.addr()
	c.vars["recorder.port"] = backend.addr()[strings.LastIndex(backend.addr(), ":")+1:]
	c.policy("gateway.yaml", smugglingPolicy)
	c.startControlPlane()
	for _, mode := range []string{"fast", "std"} {
		c.gateway("edge-"+mode, "--http1-server", mode)
	}
	corpus := smugglingCorpus()
	for _, mode := range []string{"fast", "std"} {
		gw := c.addr("gw-" + mode)
		c.expectEventually(mode+" gateway routes to the backend", 10*time.Second, "http://"+gw+"/ready", nil, func(r *response) error {
			if r.status != http.StatusOK || !strings.HasPrefix(r.body, "backend: ") {
				return fmt.Errorf("got %d %q", r.status, r.body)
			}
			return nil
		})
		t.Run(mode, func(t *testing.T) {
			for _, tc := range corpus {
				t.Run(tc.name, func(t *testing.T) {
					if err := runSmugglingCase(gw, backend, tc); err != nil {
						t.Errorf("%s\nsent: %.300q", err, tc.raw)
					}
				})
			}
		})
	}
}
