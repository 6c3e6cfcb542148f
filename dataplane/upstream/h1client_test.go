package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshgate/meshgate/internal/testutil"
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
		resp, err := get(t, c, addr, "/x", 30*time.Second)
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
		resp, err := get(t, c, addr, "/", 30*time.Second)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "ok" {
			t.Fatalf("request %d: body %q", i, body)
		}
		// Let the endpoint's close arrive before the connection is reused.
		if pc := c.fast.pool(addr).get(time.Now()); pc != nil {
			testutil.Eventually(t, 30*time.Second, "the endpoint closes the pooled connection", func() error {
				pc.conn.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
				if _, err := pc.br.Peek(1); err == nil || isTimeout(err) {
					return fmt.Errorf("still open (%v)", err)
				}
				return nil
			})
			pc.conn.SetReadDeadline(time.Time{})
			c.fast.pool(addr).put(pc)
		}
	}
}

// TestFastPathTimeouts: the route timeout ends an exchange whose response
// does not come, or whose body stops, at exactly the timeout; a request
// whose client goes away ends at once, not at its timeout. In a
// testing/synctest bubble, with the endpoint on an in-memory network: the
// timings are virtual and exact, whatever the machine's load.
func TestFastPathTimeouts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		path    string
		timeout time.Duration
		cancel  bool // the client goes away once the endpoint has the request
		check   func(t *testing.T, resp *http.Response, err error)
		want    time.Duration // virtual time to the error
	}{
		{"before the response", "/slow", 50 * time.Millisecond, false, func(t *testing.T, _ *http.Response, err error) {
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("err = %v, want ErrTimeout", err)
			}
		}, 50 * time.Millisecond},
		{"during the body", "/mid-body", time.Second, false, func(t *testing.T, resp *http.Response, err error) {
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if _, err := io.ReadAll(resp.Body); !errors.Is(err, ErrTimeout) {
				t.Fatalf("body read err = %v, want ErrTimeout", err)
			}
		}, time.Second},
		{"client gone", "/slow", 10 * time.Second, true, func(t *testing.T, _ *http.Response, err error) {
			if err == nil || errors.Is(err, ErrTimeout) {
				t.Fatalf("err = %v, want a cancellation", err)
			}
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				release, arrived := make(chan struct{}), make(chan struct{}, 1)
				ln := testutil.NewPipeListener()
				backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/mid-body" {
						w.Header().Set("Content-Length", "100")
						io.WriteString(w, "partial")
						w.(http.Flusher).Flush()
					}
					arrived <- struct{}{}
					select {
					case <-release:
					case <-r.Context().Done():
					}
				})}
				served := make(chan struct{})
				go func() { _ = backend.Serve(ln); close(served) }()
				client := newH1Client(ln.DialContext)
				t.Cleanup(func() { close(release); _ = backend.Close(); client.closeIdle(nil); <-served })

				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				if tt.cancel {
					go func() { <-arrived; cancel() }()
				}
				req := httptest.NewRequestWithContext(ctx, http.MethodGet, "http://backend.invalid"+tt.path, nil)
				req.RequestURI, req.Body = "", nil
				start := time.Now()
				resp, err := client.roundTrip(req, tt.timeout)
				tt.check(t, resp, err)
				if d := time.Since(start); d != tt.want {
					t.Errorf("ended after %v, want %v", d, tt.want)
				}
			})
		})
	}
}

// TestFastPathClosesIdleConnections: a pooled connection idle for the
// upstream idle timeout is closed by the proxy, so the endpoint sees it
// close (not only when the pool is next used), not a moment before; the
// next request opens a new connection and is served. In a testing/synctest
// bubble: the timings are virtual and exact.
func TestFastPathClosesIdleConnections(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const idleTimeout = 10 * time.Second
		var opened, closed atomic.Int32
		ln := testutil.NewPipeListener()
		backend := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }),
			ConnState: func(_ net.Conn, s http.ConnState) {
				switch s {
				case http.StateNew:
					opened.Add(1)
				case http.StateClosed:
					closed.Add(1)
				}
			},
		}
		served := make(chan struct{})
		go func() { _ = backend.Serve(ln); close(served) }()
		client := newH1Client(ln.DialContext)
		client.idleTimeout = idleTimeout
		t.Cleanup(func() { _ = backend.Close(); client.closeIdle(nil); <-served })
		request := func() {
			t.Helper()
			req := httptest.NewRequest(http.MethodGet, "http://backend.invalid/", nil)
			req.RequestURI, req.Body = "", nil
			resp, err := client.roundTrip(req, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(body) != "ok" {
				t.Fatalf("body %q, %v", body, err)
			}
		}

		request()
		time.Sleep(idleTimeout - time.Millisecond)
		synctest.Wait()
		if n := closed.Load(); n != 0 {
			t.Fatalf("%d connections closed before the idle timeout, want 0", n)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if n := closed.Load(); n != 1 {
			t.Fatalf("%d connections closed at the idle timeout, want 1", n)
		}
		request()
		if n := opened.Load(); n != 2 {
			t.Errorf("%d connections opened, want 2 (a new one after the idle close)", n)
		}
	})
}
