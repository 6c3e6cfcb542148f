package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/meshgate/meshgate/dataplane/upstream"
)

// failingBody returns prefix, then err.
type failingBody struct {
	prefix io.Reader
	err    error
}

func (b *failingBody) Read(p []byte) (int, error) {
	if n, _ := b.prefix.Read(p); n > 0 {
		return n, nil
	}
	return 0, b.err
}

func (b *failingBody) Close() error { return nil }

// TestClientBodyErrorIs400: a request body that cannot be read (a malformed
// chunked encoding, a body shorter than its Content-Length) is the client's
// fault: 400, and the connection is closed after it, whatever the upstream
// protocol. A client that went away gets no answer.
func TestClientBodyErrorIs400(t *testing.T) {
	t.Parallel()
	h1, h2 := newEcho(t, "h1", false), newEcho(t, "h2", true)
	h := NewHandler(nil)
	h.Store(&Config{
		Routes: table(t,
			&routev3.Route{Match: prefix("/h2"), Action: forwardTo("H2")},
			&routev3.Route{Match: prefix("/"), Action: forwardTo("H1")}),
		Clusters: map[string]*upstream.Cluster{
			"H1": clusterFor(t, "H1", false, addrOf(h1)),
			"H2": clusterFor(t, "H2", true, addrOf(h2)),
		},
	})
	malformed := errors.New("malformed chunked encoding")
	tests := []struct {
		name          string
		path          string
		body          io.ReadCloser
		contentLength int64
		clientGone    bool
		wantStatus    int
		wantClose     bool
	}{
		{"bad chunk", "/up", &failingBody{strings.NewReader("hello"), malformed}, -1, false, http.StatusBadRequest, true},
		{"bad chunk at once", "/up", &failingBody{strings.NewReader(""), malformed}, -1, false, http.StatusBadRequest, true},
		{"short CL body", "/up", &failingBody{strings.NewReader("hello"), io.ErrUnexpectedEOF}, 10, false, http.StatusBadRequest, true},
		{"bad chunk to h2c", "/h2", &failingBody{strings.NewReader("hello"), malformed}, -1, false, http.StatusBadRequest, true},
		{"short CL body to h2c", "/h2", &failingBody{strings.NewReader("hello"), io.ErrUnexpectedEOF}, 10, false, http.StatusBadRequest, true},
		{"good body", "/up", io.NopCloser(strings.NewReader("hello")), -1, false, http.StatusOK, false},
		{"client gone", "/up", &failingBody{strings.NewReader("hello"), io.ErrUnexpectedEOF}, -1, true, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.clientGone {
				cancel()
			}
			req := httptest.NewRequestWithContext(ctx, "POST", "http://proxy.test"+tt.path, nil)
			req.Body, req.ContentLength = tt.body, tt.contentLength
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if tt.wantStatus == 0 {
				if rec.Body.Len() != 0 || rec.Header().Get("Content-Type") != "" {
					t.Fatalf("answered %d %q to a client that went away", rec.Code, rec.Body)
				}
				return
			}
			if rec.Code != tt.wantStatus {
				t.Errorf("status %d %q, want %d", rec.Code, rec.Body, tt.wantStatus)
			}
			if tt.wantStatus == http.StatusBadRequest && rec.Body.String() != bodyBadBody {
				t.Errorf("body %q, want %q", rec.Body, bodyBadBody)
			}
			if got := rec.Header().Get("Connection") == "close"; got != tt.wantClose {
				t.Errorf("Connection: close %v, want %v", got, tt.wantClose)
			}
		})
	}
}

// TestMalformedChunkClosesConnection: through net/http's server, a request
// with a malformed chunked body gets 400 and the connection is closed:
// what follows it is never read as a request.
func TestMalformedChunkClosesConnection(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var paths []string
	backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
	})
	_, base := startProxy(t, &Config{
		Routes:   table(t, &routev3.Route{Match: prefix("/"), Action: forwardTo("A")}),
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(backend))},
	}, false)
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.WriteString(c, "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"+
		"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || string(body) != bodyBadBody || !resp.Close {
		t.Fatalf("got %d %q close=%v, want 400 %q and Connection: close", resp.StatusCode, body, resp.Close, bodyBadBody)
	}
	if rest, err := io.ReadAll(br); len(rest) > 0 || err != nil {
		t.Fatalf("after the 400: %q, %v; want the end of the connection", rest, err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range paths {
		if p == "/smuggled" {
			t.Fatalf("backend served %q", paths)
		}
	}
}

// headRecorder is a raw HTTP/1.1 backend that records the head of every
// request (fields as sent, duplicates kept) and answers 204.
type headRecorder struct {
	mu    sync.Mutex
	heads []textproto.MIMEHeader
}

func startHeadRecorder(t *testing.T) (*headRecorder, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	hr := &headRecorder{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go hr.serve(c)
		}
	}()
	return hr, ln.Addr().String()
}

func (hr *headRecorder) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	tp := textproto.NewReader(br)
	for {
		if _, err := tp.ReadLine(); err != nil {
			return
		}
		head, err := tp.ReadMIMEHeader()
		if err != nil {
			return
		}
		hr.mu.Lock()
		hr.heads = append(hr.heads, head)
		hr.mu.Unlock()
		// Read a chunked body; the requests here have no other.
		if head.Get("Transfer-Encoding") != "" {
			for {
				line, err := tp.ReadLine()
				if err != nil {
					return
				}
				if line == "0" {
					if _, err := tp.ReadMIMEHeader(); err != nil {
						return
					}
					break
				}
				if _, err := tp.ReadLine(); err != nil { // chunk data (short, no CRLF inside)
					return
				}
			}
		}
		if _, err := io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n"); err != nil {
			return
		}
	}
}

func (hr *headRecorder) last() textproto.MIMEHeader {
	hr.mu.Lock()
	defer hr.mu.Unlock()
	if len(hr.heads) == 0 {
		return nil
	}
	return hr.heads[len(hr.heads)-1]
}

// TestSingleFramingUpstream: whatever framing fields the request's header
// map holds, the upstream request carries one framing, the one of the body
// the proxy forwards (net/http's server has already removed Content-Length
// from a chunked request; this is the client side's half).
func TestSingleFramingUpstream(t *testing.T) {
	t.Parallel()
	hr, addr := startHeadRecorder(t)
	h := NewHandler(nil)
	h.Store(&Config{
		Routes:   table(t, &routev3.Route{Match: prefix("/"), Action: forwardTo("A")}),
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addr)},
	})
	tests := []struct {
		name          string
		body          string
		contentLength int64
		header        map[string]string
		wantCL        string // "" none
		wantChunked   bool
	}{
		{"chunked body, stray CL field", "hello", -1, map[string]string{"Content-Length": "99"}, "", true},
		{"chunked body, stray TE field", "hello", -1, map[string]string{"Transfer-Encoding": "gzip"}, "", true},
		{"CL body, stray TE field", "hello", 5, map[string]string{"Transfer-Encoding": "chunked"}, "5", false},
		{"no body, stray fields", "", 0, map[string]string{"Transfer-Encoding": "chunked", "Content-Length": "7"}, "0", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", "http://proxy.test/up", nil)
			if tt.body != "" {
				req.Body = io.NopCloser(io.MultiReader(strings.NewReader(tt.body)))
			}
			req.ContentLength = tt.contentLength
			if tt.contentLength < 0 {
				req.TransferEncoding = []string{"chunked"}
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusNoContent {
				t.Fatalf("status %d %q", rec.Code, rec.Body)
			}
			head := hr.last()
			cl, te := head.Values("Content-Length"), head.Values("Transfer-Encoding")
			if (tt.wantCL == "" && len(cl) != 0) || (tt.wantCL != "" && (len(cl) != 1 || cl[0] != tt.wantCL)) {
				t.Errorf("upstream Content-Length %q, want %q", cl, tt.wantCL)
			}
			if chunked := len(te) == 1 && te[0] == "chunked"; chunked != tt.wantChunked || len(te) > 1 {
				t.Errorf("upstream Transfer-Encoding %q, want chunked %v", te, tt.wantChunked)
			}
		})
	}
}
