package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// clusterTo returns a plaintext HTTP/1.1 cluster whose one endpoint is addr.
func clusterTo(t *testing.T, addr string) *Cluster {
	t.Helper()
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(portText)
	return mustCluster(t, staticCluster("c", testEndpoint{addr: host, port: uint32(port)}))
}

func get(t *testing.T, c *Cluster, addr, path string, timeout time.Duration) (*http.Response, error) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	req.RequestURI = ""
	req.Body = nil
	return c.RoundTrip(req, timeout)
}

func TestFastPathReusesConnections(t *testing.T) {
	t.Parallel()
	var conns atomic.Int32
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.URL.Path)
	}))
	backend.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	backend.Start()
	t.Cleanup(backend.Close)
	addr := backend.Listener.Addr().String()
	c := clusterTo(t, addr)
	for i := range 5 {
		resp, err := get(t, c, addr, "/x", time.Second)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != "hello /x" {
			t.Fatalf("request %d: body %q, %v", i, body, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("backend saw %d connections for 5 sequential requests, want 1 (pooled)", n)
	}
}

// TestFastPathRetriesStalePooledConnection: an endpoint that closes a
// keep-alive connection after each response must not make the next request
// fail: the pooled connection is found dead and the request goes out again.
func TestFastPathRetriesStalePooledConnection(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				if _, err := http.ReadRequest(bufio.NewReader(conn)); err != nil {
					return
				}
				// Promises keep-alive, then closes anyway.
				io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()
	addr := ln.Addr().String()
	c := clusterTo(t, addr)
	for i := range 3 {
		resp, err := get(t, c, addr, "/", time.Second)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "ok" {
			t.Fatalf("request %d: body %q", i, body)
		}
		// Let the endpoint's close arrive before the connection is reused.
		deadline := time.Now().Add(2 * time.Second)
		for pc := c.fast.pool(addr).get(time.Now()); pc != nil; pc = nil {
			for time.Now().Before(deadline) {
				pc.conn.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
				if _, err := pc.br.Peek(1); err != nil && !isTimeout(err) {
					break // closed by the endpoint
				}
			}
			pc.conn.SetReadDeadline(time.Time{})
			c.fast.pool(addr).put(pc)
		}
	}
}

func TestFastPathTimeouts(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/mid-body" {
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(backend.Close)
	addr := backend.Listener.Addr().String()
	c := clusterTo(t, addr)

	t.Run("before the response", func(t *testing.T) {
		_, err := get(t, c, addr, "/slow", 50*time.Millisecond)
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("err = %v, want ErrTimeout", err)
		}
	})
	t.Run("during the body", func(t *testing.T) {
		// Long enough for the response head to arrive on a loaded machine;
		// the body never completes, so the read must end in ErrTimeout.
		resp, err := get(t, c, addr, "/mid-body", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if _, err := io.ReadAll(resp.Body); !errors.Is(err, ErrTimeout) {
			t.Fatalf("body read err = %v, want ErrTimeout", err)
		}
	})
	t.Run("client gone", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/slow", nil)
		req.RequestURI, req.Body = "", nil
		time.AfterFunc(20*time.Millisecond, cancel)
		start := time.Now()
		_, err := c.RoundTrip(req, 10*time.Second)
		if err == nil || errors.Is(err, ErrTimeout) {
			t.Fatalf("err = %v, want a cancellation", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("canceled request returned after %v", d)
		}
	})
}
