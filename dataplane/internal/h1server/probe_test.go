package h1server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/meshgate/meshgate/internal/testutil"
)

// pollUntil polls cond until it holds (testutil.Poll), else fails the test
// with t.Errorf: it may be called from a handler's goroutine.
func pollUntil(t testing.TB, what string, cond func() bool) bool {
	if err := testutil.Poll(30*time.Second, testutil.Holds(cond)); err != nil {
		t.Errorf("%s: %v", what, err)
		return false
	}
	return true
}

// probeRunning reports whether the sweeper started the probe of the
// handler call w serves (fast path only).
func probeRunning(w http.ResponseWriter) bool {
	return w.(*response).c.probe.word.Load()&probeStarted != 0
}

// probedByte reports whether the probe of w's connection read a byte.
func probedByte(w http.ResponseWriter) bool {
	p := &w.(*response).c.probe
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n > 0
}

// waitCtxHandler blocks until the request's context ends (or 10 s), then
// reports its error on ended.
func waitCtxHandler(started chan<- struct{}, ended chan<- error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		ended <- r.Context().Err()
		_, _ = io.WriteString(w, "bye")
	})
}

func TestClientGoneCancelsContext(t *testing.T) {
	started, ended := make(chan struct{}, 1), make(chan error, 1)
	fs := startFast(t, waitCtxHandler(started, ended), nil)
	c := dial(t, fs.addr)
	_, _ = io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started
	_ = c.Close()
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("context error %v, want canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the context did not end after the client went away")
	}
	if fs.fast.Load() != 1 {
		t.Errorf("fast path served %d requests, want 1", fs.fast.Load())
	}
}

// A half-closed client (EOF) is gone as for net/http, but still gets the
// response; the connection is closed after it.
func TestClientHalfCloseCancelsContext(t *testing.T) {
	started, ended := make(chan struct{}, 1), make(chan error, 1)
	fs := startFast(t, waitCtxHandler(started, ended), nil)
	c := dial(t, fs.addr)
	_, _ = io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started
	_ = c.(*net.TCPConn).CloseWrite()
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("context not canceled after the client's EOF")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the context did not end after the client's EOF")
	}
	br := bufio.NewReader(c)
	if _, body := readResponse(t, br, "GET"); body != "bye" {
		t.Fatalf("body %q", body)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("connection not closed after the response")
	}
}

func TestClientGoneCancelsContextTLS(t *testing.T) {
	started, ended := make(chan struct{}, 1), make(chan error, 1)
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS() // only for its certificate
	cert := ts.TLS.Certificates[0]
	ts.Close()
	fastSeen := make(chan bool, 1)
	h := waitCtxHandler(started, ended)
	srv := &Server{Fallback: newStdServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, fast := w.(*response)
		fastSeen <- fast
		h.ServeHTTP(w, r)
	}))}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &handshakingListener{Listener: inner, config: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	c, err := tls.Dial("tcp", inner.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started
	if !<-fastSeen {
		t.Fatal("not served on the fast path")
	}
	_ = c.Close()
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("context not canceled")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the context did not end after the client went away")
	}
}

// A request pipelined while the previous one is slow: the probe reads its
// first byte, which must start the next request.
func TestPipelinedDuringSlowRequest(t *testing.T) {
	started := make(chan struct{}, 1)
	ctxErr := make(chan error, 1)
	fs := startFast(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			pollUntil(t, "the probe to read the pipelined byte", func() bool { return probedByte(w) })
			ctxErr <- r.Context().Err()
		}
		hello(w, r)
	}), nil)
	c := dial(t, fs.addr)
	br := bufio.NewReader(c)
	_, _ = io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started
	_, _ = io.WriteString(c, "GET /next HTTP/1.1\r\nHost: a\r\n\r\nGET /third HTTP/1.1\r\nHost: a\r\n\r\n")
	for _, path := range []string{"/slow", "/next", "/third"} {
		resp, body := readResponse(t, br, "GET")
		if resp.StatusCode != 200 || body != "hello "+path || resp.Close {
			t.Fatalf("%s: %d %q close=%v", path, resp.StatusCode, body, resp.Close)
		}
	}
	if err := <-ctxErr; err != nil {
		t.Errorf("slow request's context ended: %v", err)
	}
	// Still keep-alive, and served by the fast path throughout.
	_, _ = io.WriteString(c, "GET /last HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != "hello /last" {
		t.Fatalf("last: %d %q", resp.StatusCode, body)
	}
	if fs.fast.Load() != 4 || fs.std.Load() != 0 {
		t.Errorf("fast %d, fallback %d requests; want 4, 0", fs.fast.Load(), fs.std.Load())
	}
}

// A pipelined request the fast path hands over (a body) keeps its probed
// byte too.
func TestPipelinedHandOffDuringSlowRequest(t *testing.T) {
	started := make(chan struct{}, 1)
	fs := startFast(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			pollUntil(t, "the probe to read the pipelined byte", func() bool { return probedByte(w) })
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %q", r.Method, r.URL.Path, body)
	}), nil)
	c := dial(t, fs.addr)
	br := bufio.NewReader(c)
	_, _ = io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started
	_, _ = io.WriteString(c, "POST /post HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
	for _, want := range []string{`GET /slow ""`, `POST /post "hi"`} {
		if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != want {
			t.Fatalf("got %d %q, want %q", resp.StatusCode, body, want)
		}
	}
	if fs.fast.Load() != 1 || fs.std.Load() != 1 {
		t.Errorf("fast %d, fallback %d requests; want 1, 1", fs.fast.Load(), fs.std.Load())
	}
}

// A handler that panics while its probe runs closes the connection.
func TestPanicDuringProbe(t *testing.T) {
	fs := startFast(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pollUntil(t, "the probe to start", func() bool { return probeRunning(w) })
		panic(http.ErrAbortHandler)
	}), nil)
	c := dial(t, fs.addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if b, err := bufio.NewReader(c).ReadByte(); err == nil {
		t.Fatalf("read %q, want the connection closed", b)
	}
}
