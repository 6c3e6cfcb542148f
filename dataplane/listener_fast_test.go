package dataplane

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestListenerHTTP1Servers runs a gateway listener on net/http's server and
// on the fast path: the same answers to requests the fast path serves
// (body-less) and to those it hands to net/http (bodies, h2c, malformed).
func TestListenerHTTP1Servers(t *testing.T) {
	t.Parallel()
	forEachHTTP1Server(t, testListenerHTTP1Servers)
}

func testListenerHTTP1Servers(t *testing.T, server func(*Options)) {
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/stream": // no Content-Length, flushed: streamed through
			w.Header().Set("Content-Type", "text/plain")
			for i := range 3 {
				fmt.Fprintf(w, "part%d;", i)
				w.(http.Flusher).Flush()
			}
			return
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("X-Echo-Method", r.Method)
		fmt.Fprintf(w, "%s %s %s xff=%s body=%q", r.Method, r.URL.RequestURI(), r.Proto, r.Header.Get("X-Forwarded-For"), body)
	}))
	t.Cleanup(echo.Close)
	cp := startControlPlane(t)
	p := startProxy(t, cp, server)
	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: echo.Listener.Addr().String()}.build(t))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	var addr string
	eventually(t, "the listener to serve", func() bool {
		addr = p.ListenerAddrs()["edge"]
		if addr == "" {
			return false
		}
		code, _, err := get(client, "http://"+addr+"/ready")
		return err == nil && code == http.StatusOK
	})
	base := "http://" + addr

	do := func(t *testing.T, client *http.Client, method, path, body string) (*http.Response, string) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, base+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}
	t.Run("keep-alive GETs, a POST, HEAD, 204, a stream", func(t *testing.T) {
		for i := range 3 {
			resp, body := do(t, client, "GET", fmt.Sprintf("/get/%d?q=1", i), "")
			if want := fmt.Sprintf(`GET /get/%d?q=1 HTTP/1.1 xff=127.0.0.1 body=""`, i); resp.StatusCode != 200 || body != want {
				t.Fatalf("got %d %q, want %q", resp.StatusCode, body, want)
			}
		}
		if resp, body := do(t, client, "POST", "/post", "payload"); resp.StatusCode != 200 || body != `POST /post HTTP/1.1 xff=127.0.0.1 body="payload"` {
			t.Fatalf("POST: %d %q", resp.StatusCode, body)
		}
		if resp, body := do(t, client, "GET", "/after-post", ""); resp.StatusCode != 200 || !strings.HasPrefix(body, "GET /after-post") {
			t.Fatalf("GET after POST: %d %q", resp.StatusCode, body)
		}
		if resp, body := do(t, client, "HEAD", "/head", ""); resp.StatusCode != 200 || body != "" || resp.Header.Get("X-Echo-Method") != "HEAD" {
			t.Fatalf("HEAD: %d %q %v", resp.StatusCode, body, resp.Header)
		}
		if resp, body := do(t, client, "GET", "/empty", ""); resp.StatusCode != 204 || body != "" {
			t.Fatalf("204: %d %q", resp.StatusCode, body)
		}
		if resp, body := do(t, client, "GET", "/stream", ""); resp.StatusCode != 200 || body != "part0;part1;part2;" || resp.ContentLength != -1 {
			t.Fatalf("stream: %d %q length %d", resp.StatusCode, body, resp.ContentLength)
		}
	})
	t.Run("h2c prior knowledge", func(t *testing.T) {
		protocols := new(http.Protocols)
		protocols.SetUnencryptedHTTP2(true)
		tr := &http.Transport{Protocols: protocols}
		t.Cleanup(tr.CloseIdleConnections)
		h2 := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		if resp, body := do(t, h2, "GET", "/h2", ""); resp.ProtoMajor != 2 || !strings.HasPrefix(body, "GET /h2 HTTP/1.1") {
			t.Fatalf("h2c: %s %q", resp.Proto, body)
		}
	})
	t.Run("bad request bytes get 400 and the listener keeps serving", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, "GET /exact HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
		status, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(status, "HTTP/1.1 400") {
			t.Fatalf("malformed request answered %q, %v", status, err)
		}
		if resp, body := do(t, client, "GET", "/after", ""); resp.StatusCode != 200 || !strings.HasPrefix(body, "GET /after") {
			t.Fatalf("after a bad request: %d %q", resp.StatusCode, body)
		}
	})
}

// TestListenerClientGoneAbortsUpstream: a client that goes away while the
// backend is slow aborts the upstream exchange (the backend's request
// context ends), on net/http's server and on the fast path alike.
func TestListenerClientGoneAbortsUpstream(t *testing.T) {
	t.Parallel()
	forEachHTTP1Server(t, testListenerClientGoneAbortsUpstream)
}

func testListenerClientGoneAbortsUpstream(t *testing.T, server func(*Options)) {
	started := make(chan struct{}, 1)
	ended := make(chan error, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow" {
			_, _ = io.WriteString(w, "ok")
			return
		}
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			ended <- r.Context().Err()
		case <-time.After(10 * time.Second):
			ended <- nil
		}
	}))
	t.Cleanup(backend.Close)
	cp := startControlPlane(t)
	p := startProxy(t, cp, server)
	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend.Listener.Addr().String()}.build(t))
	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	var addr string
	eventually(t, "the listener to serve", func() bool {
		addr = p.ListenerAddrs()["edge"]
		if addr == "" {
			return false
		}
		code, _, err := get(client, "http://"+addr+"/ready")
		return err == nil && code == http.StatusOK
	})
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach the backend")
	}
	_ = c.Close()
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the backend's request was not aborted")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the backend's request context did not end after the client went away")
	}
}
