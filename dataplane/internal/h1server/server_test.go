package h1server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fastServer runs a fast Server with fallback on a loopback listener.
type fastServer struct {
	srv  *Server
	addr string
	fast atomic.Int64 // requests the fast path served
	std  atomic.Int64 // requests Fallback served
}

// startFast serves h on the fast path (fallback settings from configure).
func startFast(t *testing.T, h http.Handler, configure func(*http.Server)) *fastServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveFast(t, ln, h, configure)
}

// serveFast is startFast on ln.
func serveFast(t *testing.T, ln net.Listener, h http.Handler, configure func(*http.Server)) *fastServer {
	t.Helper()
	fs := &fastServer{}
	counting := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(*response); ok {
			fs.fast.Add(1)
		} else {
			fs.std.Add(1)
		}
		h.ServeHTTP(w, r)
	})
	fb := newStdServer(counting)
	if configure != nil {
		configure(fb)
	}
	fs.srv = &Server{Fallback: fb}
	fs.addr = ln.Addr().String()
	done := make(chan error, 1)
	go func() { done <- fs.srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = fs.srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve() = %v, want http.ErrServerClosed", err)
		}
	})
	return fs
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

func hello(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "hello "+r.URL.Path)
}

// readResponse reads one response for method from br.
func readResponse(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestKeepAliveAndPipelining(t *testing.T) {
	fs := startFast(t, http.HandlerFunc(hello), nil)
	c := dial(t, fs.addr)
	br := bufio.NewReader(c)
	for i := range 3 { // one at a time on one connection
		fmt.Fprintf(c, "GET /%d HTTP/1.1\r\nHost: a\r\n\r\n", i)
		resp, body := readResponse(t, br, "GET")
		if resp.StatusCode != 200 || body != fmt.Sprintf("hello /%d", i) || resp.Close {
			t.Fatalf("request %d: %d %q close=%v", i, resp.StatusCode, body, resp.Close)
		}
	}
	// Pipelined: three heads in one write.
	_, _ = io.WriteString(c, "GET /a HTTP/1.1\r\nHost: a\r\n\r\nHEAD /b HTTP/1.1\r\nHost: a\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n")
	for _, want := range []struct{ method, body string }{{"GET", "hello /a"}, {"HEAD", ""}, {"GET", "hello /c"}} {
		resp, body := readResponse(t, br, want.method)
		if resp.StatusCode != 200 || body != want.body {
			t.Fatalf("%s: %d %q", want.method, resp.StatusCode, body)
		}
		if want.method == "HEAD" && resp.ContentLength != int64(len("hello /b")) {
			t.Errorf("HEAD Content-Length = %d", resp.ContentLength)
		}
	}
	if fs.fast.Load() != 6 || fs.std.Load() != 0 {
		t.Errorf("fast %d, fallback %d requests; want 6, 0", fs.fast.Load(), fs.std.Load())
	}
}

func TestStdClientThroughFastPath(t *testing.T) {
	fs := startFast(t, http.HandlerFunc(hello), nil)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	for i := range 20 {
		resp, err := client.Get(fmt.Sprintf("http://%s/x%d", fs.addr, i))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != fmt.Sprintf("hello /x%d", i) {
			t.Fatalf("body %q", body)
		}
	}
	if fs.fast.Load() != 20 {
		t.Errorf("fast path served %d of 20", fs.fast.Load())
	}
}

func TestResponseFraming(t *testing.T) {
	fs := startFast(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.Header().Set("Content-Length", "10")
			w.WriteHeader(http.StatusNotModified)
		case "/big":
			_, _ = io.WriteString(w, strings.Repeat("b", 10000))
		case "/cl":
			w.Header().Set("Content-Length", "5")
			_, _ = io.WriteString(w, "12345")
		case "/close":
			w.Header().Set("Connection", "close")
			_, _ = io.WriteString(w, "bye")
		}
	}), nil)
	c := dial(t, fs.addr)
	br := bufio.NewReader(c)
	cases := []struct {
		path      string
		status    int
		body      string
		chunked   bool
		cl        int64
		wantClose bool
	}{
		{"/204", 204, "", false, -1, false},
		{"/304", 304, "", false, -1, false},
		{"/big", 200, strings.Repeat("b", 10000), true, -1, false},
		{"/cl", 200, "12345", false, 5, false},
		{"/close", 200, "bye", false, 3, true},
	}
	for _, tt := range cases {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", tt.path)
		resp, body := readResponse(t, br, "GET")
		chunked := len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"
		if resp.StatusCode != tt.status || body != tt.body || chunked != tt.chunked || resp.Close != tt.wantClose {
			t.Errorf("%s: %d %d bytes chunked=%v close=%v", tt.path, resp.StatusCode, len(body), chunked, resp.Close)
		}
		if tt.cl >= 0 && resp.ContentLength != tt.cl {
			t.Errorf("%s: Content-Length %d, want %d", tt.path, resp.ContentLength, tt.cl)
		}
		if resp.Header.Get("Date") == "" {
			t.Errorf("%s: no Date", tt.path)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after Connection: close: read %v, want EOF", err)
	}
}

func TestFlushStreams(t *testing.T) {
	release := make(chan struct{})
	fs := startFast(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		<-release
		_, _ = io.WriteString(w, "second")
	}), nil)
	c := dial(t, fs.addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first" {
		t.Fatalf("first chunk before the handler returned: %q, %v", buf, err)
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second" {
		t.Fatalf("rest %q, %v", rest, err)
	}
}

func TestConnectionCloseAndHTTP10(t *testing.T) {
	fs := startFast(t, http.HandlerFunc(hello), nil)
	for _, tt := range []struct {
		name, req string
		keep      bool
	}{
		{"request Connection: close", "GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false},
		{"HTTP/1.0", "GET /a HTTP/1.0\r\nHost: a\r\n\r\n", false},
		{"HTTP/1.0 keep-alive", "GET /a HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, fs.addr)
			_, _ = io.WriteString(c, tt.req)
			br := bufio.NewReader(c)
			resp, body := readResponse(t, br, "GET")
			if body != "hello /a" {
				t.Fatalf("body %q", body)
			}
			if tt.keep {
				if resp.Header.Get("Connection") != "keep-alive" || resp.Close {
					t.Fatalf("HTTP/1.0 keep-alive answered Connection %q", resp.Header.Get("Connection"))
				}
				_, _ = io.WriteString(c, tt.req)
				if _, body := readResponse(t, br, "GET"); body != "hello /a" {
					t.Fatalf("second body %q", body)
				}
				return
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("connection not closed: %v", err)
			}
		})
	}
}

func TestLargeHeaderIs431(t *testing.T) {
	fs := startFast(t, http.HandlerFunc(hello), func(s *http.Server) { s.MaxHeaderBytes = 1 << 10 })
	c := dial(t, fs.addr)
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: %s\r\n\r\n", strings.Repeat("x", 8<<10))
	resp, _ := readResponse(t, bufio.NewReader(c), "GET")
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", resp.StatusCode)
	}
	// Below MaxHeaderBytes but above the fast path's buffer: served by
	// net/http.
	fs2 := startFast(t, http.HandlerFunc(hello), nil)
	c2 := dial(t, fs2.addr)
	fmt.Fprintf(c2, "GET /big HTTP/1.1\r\nHost: a\r\nX-Big: %s\r\n\r\n", strings.Repeat("x", 8<<10))
	if resp, body := readResponse(t, bufio.NewReader(c2), "GET"); resp.StatusCode != 200 || body != "hello /big" || fs2.std.Load() != 1 {
		t.Fatalf("8 KiB head: %d %q (fallback served %d)", resp.StatusCode, body, fs2.std.Load())
	}
}

func TestBadRequestThenKeepsServing(t *testing.T) {
	fs := startFast(t, http.HandlerFunc(hello), nil)
	c := dial(t, fs.addr)
	_, _ = io.WriteString(c, "GET /exact HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
	status, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 400") {
		t.Fatalf("malformed request answered %q, %v", status, err)
	}
	resp, err := http.Get("http://" + fs.addr + "/exact")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello /exact" {
		t.Fatalf("after a bad request: %q", body)
	}
}

func TestHandOffToFallback(t *testing.T) {
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s body=%q", r.Method, r.URL.Path, r.Proto, body)
	})
	fs := startFast(t, echo, nil)

	t.Run("request with a body, then more on the connection", func(t *testing.T) {
		c := dial(t, fs.addr)
		br := bufio.NewReader(c)
		_, _ = io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
		if _, body := readResponse(t, br, "GET"); body != `GET /1 HTTP/1.1 body=""` {
			t.Fatal(body)
		}
		_, _ = io.WriteString(c, "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
		if _, body := readResponse(t, br, "POST"); body != `POST /2 HTTP/1.1 body="hello"` {
			t.Fatal(body)
		}
		_, _ = io.WriteString(c, "PUT /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /4 HTTP/1.1\r\nHost: a\r\n\r\n")
		if _, body := readResponse(t, br, "PUT"); body != `PUT /3 HTTP/1.1 body="abc"` {
			t.Fatal(body)
		}
		if _, body := readResponse(t, br, "GET"); body != `GET /4 HTTP/1.1 body=""` {
			t.Fatal(body)
		}
	})
	t.Run("Expect 100-continue", func(t *testing.T) {
		c := dial(t, fs.addr)
		br := bufio.NewReader(c)
		_, _ = io.WriteString(c, "POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
		resp, _ := readResponse(t, br, "POST")
		if resp.StatusCode != http.StatusContinue {
			t.Fatalf("status %d, want 100", resp.StatusCode)
		}
		_, _ = io.WriteString(c, "ok")
		if _, body := readResponse(t, br, "POST"); body != `POST /e HTTP/1.1 body="ok"` {
			t.Fatal(body)
		}
	})
	t.Run("Upgrade", func(t *testing.T) {
		c := dial(t, fs.addr)
		_, _ = io.WriteString(c, "GET /u HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		if _, body := readResponse(t, bufio.NewReader(c), "GET"); body != `GET /u HTTP/1.1 body=""` {
			t.Fatal(body)
		}
	})
	t.Run("h2c prior knowledge", func(t *testing.T) {
		protocols := new(http.Protocols)
		protocols.SetUnencryptedHTTP2(true)
		tr := &http.Transport{Protocols: protocols}
		defer tr.CloseIdleConnections()
		for _, path := range []string{"/h2a", "/h2b"} {
			resp, err := (&http.Client{Transport: tr}).Post("http://"+fs.addr+path, "text/plain", strings.NewReader("x"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := "POST " + path + ` HTTP/2.0 body="x"`; string(body) != want || resp.ProtoMajor != 2 {
				t.Fatalf("got %s %q, want %q", resp.Proto, body, want)
			}
		}
	})
	before := fs.std.Load()
	if before < 6 {
		t.Errorf("fallback served %d requests, want at least 6", before)
	}
}

func TestTLS(t *testing.T) {
	type seen struct {
		tls, fast bool
		proto     string
		ctxConn   string
	}
	results := make(chan seen, 10)
	type ctxKey struct{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, fast := w.(*response)
		_, _ = io.Copy(io.Discard, r.Body)
		results <- seen{tls: r.TLS != nil, fast: fast, proto: r.Proto, ctxConn: r.Context().Value(ctxKey{}).(string)}
		_, _ = io.WriteString(w, "ok")
	})
	ts := httptest.NewUnstartedServer(nil)
	ts.EnableHTTP2 = true
	ts.StartTLS() // only for its certificate and client
	cert := ts.TLS.Certificates[0]
	ts.Close()

	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	fb := &http.Server{Handler: h, Protocols: protocols, ErrorLog: discardLog,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, ctxKey{}, fmt.Sprintf("%T", c))
		}}
	srv := &Server{Fallback: fb}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &handshakingListener{Listener: inner, config: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	for _, tt := range []struct {
		name      string
		h2        bool
		body      bool
		wantFast  bool
		wantProto string
	}{
		{"HTTP/1.1 GET", false, false, true, "HTTP/1.1"},
		{"HTTP/1.1 POST (handed over)", false, true, false, "HTTP/1.1"},
		{"h2 (handed over)", true, false, false, "HTTP/2.0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: tt.h2}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			var resp *http.Response
			var err error
			if tt.body {
				resp, err = client.Post("https://"+inner.Addr().String()+"/", "text/plain", strings.NewReader("x"))
			} else {
				resp, err = client.Get("https://" + inner.Addr().String() + "/")
			}
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got := <-results
			if !got.tls || got.fast != tt.wantFast || got.proto != tt.wantProto || got.ctxConn != "*tls.Conn" {
				t.Fatalf("handler saw %+v", got)
			}
		})
	}
}

// handshakingListener completes the TLS handshake before Accept returns,
// as the proxy's TLS listener does.
type handshakingListener struct {
	net.Listener
	config *tls.Config
}

func (l *handshakingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := tls.Server(c, l.config)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			_ = c.Close()
			continue
		}
		return tc, nil
	}
}

func TestShutdownWaitsForInFlight(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	fs := startFast(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		_, _ = io.WriteString(w, "done")
	}), nil)
	// An idle keep-alive connection, closed by Shutdown at once.
	idle := dial(t, fs.addr)
	idleBR := bufio.NewReader(idle)
	_, _ = io.WriteString(idle, "GET /fast HTTP/1.1\r\nHost: a\r\n\r\n")
	readResponse(t, idleBR, "GET")

	busy := dial(t, fs.addr)
	_, _ = io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started

	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- fs.srv.Shutdown(context.Background()) }()
	if _, err := idleBR.ReadByte(); err != io.EOF {
		t.Errorf("idle connection: read %v, want EOF", err)
	}
	select {
	case err := <-shutdownDone:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := net.DialTimeout("tcp", fs.addr, time.Second); err == nil {
		t.Error("still accepting after Shutdown")
	}
	close(release)
	resp, body := readResponse(t, bufio.NewReader(busy), "GET")
	if body != "done" || !resp.Close {
		t.Errorf("in-flight request answered %q close=%v; want done and Connection: close", body, resp.Close)
	}
	select {
	case err := <-shutdownDone:
		if err != nil {
			t.Fatalf("Shutdown() = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the request ended")
	}
}

func TestShutdownTimesOutThenClose(t *testing.T) {
	started := make(chan struct{})
	ctxDone := make(chan struct{})
	fs := startFast(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		close(ctxDone)
	}), nil)
	c := dial(t, fs.addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := fs.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown() = %v, want deadline exceeded", err)
	}
	_ = fs.srv.Close()
	select {
	case <-ctxDone:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not cancel the in-flight request's context")
	}
}

func TestWriteFailureCancelsContext(t *testing.T) {
	canceled := make(chan error, 1)
	fs := startFast(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat("x", 32<<10))
		for {
			if _, err := w.Write(chunk); err != nil {
				break
			}
			w.(http.Flusher).Flush()
		}
		canceled <- r.Context().Err()
	}), nil)
	c := dial(t, fs.addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	buf := make([]byte, 1000)
	_, _ = io.ReadFull(c, buf)
	_ = c.Close()
	select {
	case err := <-canceled:
		if err == nil {
			t.Fatal("context not canceled after a failed write")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler never saw a write error")
	}
}

func TestPanicClosesConnection(t *testing.T) {
	fs := startFast(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/abort" {
			panic(http.ErrAbortHandler)
		}
		panic("boom")
	}), nil)
	for _, path := range []string{"/abort", "/boom"} {
		c := dial(t, fs.addr)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", path)
		if b, err := bufio.NewReader(c).ReadByte(); err == nil {
			t.Errorf("%s: read %q, want the connection closed", path, b)
		}
	}
}

// failingListener fails its first Accept calls with err, then accepts.
type failingListener struct {
	net.Listener
	failures atomic.Int32
	err      error
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, l.err
	}
	return l.Listener.Accept()
}

// TestServeRetriesAcceptErrors: an Accept failure other than a closed
// listener (here ENOBUFS, which net.Error.Temporary does not call
// temporary) is retried with backoff, and the server serves on; a closed
// listener ends Serve.
func TestServeRetriesAcceptErrors(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	failing := &failingListener{Listener: ln, err: &net.OpError{Op: "accept", Net: "tcp", Err: syscall.ENOBUFS}}
	failing.failures.Store(3)
	fs := serveFast(t, failing, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}), func(s *http.Server) { s.ErrorLog = log.New(io.Discard, "", 0) })
	// The bound only turns a Serve that gave up (the connection waits in
	// the backlog forever) into a failure; it is not a timing assertion.
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Get("http://" + fs.addr + "/")
	if err != nil {
		t.Fatalf("GET after three failed accepts: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" || failing.failures.Load() >= 0 {
		t.Fatalf("body %q, failures left %d", body, failing.failures.Load())
	}

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_ = closed.Close()
	srv := &Server{Fallback: newStdServer(http.NotFoundHandler())}
	if err := srv.Serve(closed); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve on a closed listener = %v, want net.ErrClosed", err)
	}
}
