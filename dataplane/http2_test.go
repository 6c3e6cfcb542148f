package dataplane

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// withHTTP2Options sets the listener's http2_protocol_options (and
// max_request_headers_kb when kb is not zero).
func withHTTP2Options(streams, streamWindow, connWindow, kb uint32) func(*snapshot) {
	return func(s *snapshot) {
		s.hcm.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{
			MaxConcurrentStreams:        wrapperspb.UInt32(streams),
			InitialStreamWindowSize:     wrapperspb.UInt32(streamWindow),
			InitialConnectionWindowSize: wrapperspb.UInt32(connWindow),
		}
		if kb != 0 {
			s.hcm.MaxRequestHeadersKb = wrapperspb.UInt32(kb)
		}
	}
}

// h2cSettings opens an h2c prior-knowledge connection to addr and returns
// the server's first SETTINGS and the connection-level WINDOW_UPDATE it
// sends with them (0 when none): every frame before the answer to a PING
// sent after the server acknowledged our SETTINGS (the server queues its
// WINDOW_UPDATE and that acknowledgement in either order).
func h2cSettings(t *testing.T, addr string) (map[http2.SettingID]uint32, uint32) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, bufio.NewReader(c))
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	settings := map[http2.SettingID]uint32{}
	var increment uint32
	for sawSettings := false; ; {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				if sawSettings {
					if err := fr.WritePing(false, [8]byte{1}); err != nil {
						t.Fatal(err)
					}
				}
				continue
			}
			sawSettings = true
			_ = f.ForeachSetting(func(s http2.Setting) error { settings[s.ID] = s.Val; return nil })
			if err := fr.WriteSettingsAck(); err != nil {
				t.Fatal(err)
			}
		case *http2.PingFrame:
			if f.IsAck() {
				return settings, increment
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				increment += f.Increment
			}
		}
	}
}

// TestListenerAdvertisesHTTP2Options: http2_protocol_options and
// max_request_headers_kb become the SETTINGS an HTTP/2 client receives and
// the connection's receive window.
func TestListenerAdvertisesHTTP2Options(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	p := startProxy(t, cp)
	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend(t, "a"),
		mutate: withHTTP2Options(7, 70000, 200000, 10)}.build(t))
	client := &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	waitServing(t, p, client, "a")
	settings, increment := h2cSettings(t, p.ListenerAddrs()["edge"])
	want := map[http2.SettingID]uint32{
		http2.SettingMaxConcurrentStreams: 7,
		http2.SettingInitialWindowSize:    70000,
		// net/http pads the HTTP/1 header limit by 32 bytes for 10 fields.
		http2.SettingMaxHeaderListSize: 10<<10 + 320,
	}
	for id, v := range want {
		if settings[id] != v {
			t.Errorf("SETTINGS %v = %d, want %d (all: %v)", id, settings[id], v, settings)
		}
	}
	if want := uint32(200000 - 65535); increment != want {
		t.Errorf("connection WINDOW_UPDATE = %d, want %d (window 200000)", increment, want)
	}
}

// TestListenerHTTP2StreamsSurviveListenerChange: a listener whose server
// settings change is served by a new server on the same port while the
// old one drains: its HTTP/2 connections get GOAWAY, the streams in flight
// finish on them, and new streams go to a new connection: no request of a
// client looping over one h2c connection fails.
func TestListenerHTTP2StreamsSurviveListenerChange(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var slowStarted sync.Once
	slowIn := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			slowStarted.Do(func() { close(slowIn) })
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-release
		}
		_, _ = io.WriteString(w, "a")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	cp := startControlPlane(t)
	startProxy(t, cp)
	addr := "127.0.0.1:" + freeLoopbackPort(t, "127.0.0.1")
	cfg := config{version: "v1", listenAddr: addr, cluster: "default/a:80", backend: ln.Addr().String(),
		mutate: withHTTP2Options(100, 65535, 1<<20, 0)}
	cp.set(t, cfg.build(t))

	var dials atomic.Int64
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: protocols, DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, address)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	eventually(t, "the listener to serve h2c", func() bool {
		code, body, err := get(client, "http://"+addr+"/")
		return err == nil && code == http.StatusOK && body == "a"
	})

	// A stream in flight across the change, answered on the old connection.
	slowDone := make(chan string, 1)
	go func() {
		code, body, err := get(client, "http://"+addr+"/slow")
		slowDone <- fmt.Sprintf("%d %q %v", code, body, err)
	}()
	<-slowIn

	var ok, failures atomic.Int64
	var firstFailure atomic.Pointer[string]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, body, err := get(client, "http://"+addr+"/")
				if err != nil || code != http.StatusOK || body != "a" {
					failures.Add(1)
					msg := fmt.Sprintf("status %d body %q err %v", code, body, err)
					firstFailure.CompareAndSwap(nil, &msg)
					continue
				}
				ok.Add(1)
			}
		})
	}
	eventually(t, "requests before the change", func() bool { return ok.Load() > 20 })
	before := dials.Load()
	cfg.version, cfg.mutate = "v2", withHTTP2Options(50, 65535, 1<<20, 0)
	cp.set(t, cfg.build(t))
	eventually(t, "the client to move to a new connection", func() bool { return dials.Load() > before })
	mark := ok.Load()
	eventually(t, "requests on the new connection", func() bool { return ok.Load() > mark+20 })
	close(release)
	got := <-slowDone
	close(stop)
	wg.Wait()
	if got != `200 "a" <nil>` {
		t.Errorf("the stream in flight across the change: %s", got)
	}
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d requests failed across the listener change; first: %s", n, n+ok.Load(), *firstFailure.Load())
	}
	if settings, _ := h2cSettings(t, addr); settings[http2.SettingMaxConcurrentStreams] != 50 {
		t.Errorf("after the change, MAX_CONCURRENT_STREAMS = %d, want 50", settings[http2.SettingMaxConcurrentStreams])
	}
}

// TestListenerServesUpgradeH2CAsHTTP1: an HTTP/1.1 request asking to
// upgrade to h2c is served as HTTP/1.1 (as Envoy, which does not implement
// the downstream h2c upgrade) and forwarded without its Upgrade and
// HTTP2-Settings headers.
func TestListenerServesUpgradeH2CAsHTTP1(t *testing.T) {
	t.Parallel()
	forEachHTTP1Server(t, func(t *testing.T, server func(*Options)) {
		seen := make(chan http.Header, 1)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case seen <- r.Header.Clone():
			default:
			}
			_, _ = io.WriteString(w, "a")
		})}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		cp := startControlPlane(t)
		p := startProxy(t, cp, server)
		cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: ln.Addr().String()}.build(t))
		client := &http.Client{Timeout: 10 * time.Second}
		t.Cleanup(client.CloseIdleConnections)
		waitServing(t, p, client, "a")
		for len(seen) > 0 {
			<-seen
		}
		c, err := net.DialTimeout("tcp", p.ListenerAddrs()["edge"], 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		// Two requests: the connection stays HTTP/1.1 after the first.
		for i := range 2 {
			_, _ = io.WriteString(c, "GET /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/1.1" || string(body) != "a" || resp.Header.Get("Upgrade") != "" {
				t.Fatalf("request %d: %s %d %q %v", i, resp.Proto, resp.StatusCode, body, resp.Header)
			}
			h := <-seen
			for _, name := range []string{"Upgrade", "Http2-Settings", "Connection"} {
				if v := h.Get(name); v != "" && !strings.EqualFold(v, "keep-alive") {
					t.Errorf("request %d: the backend received %s: %q", i, name, v)
				}
			}
		}
	})
}

// TestProxyStopSendsGoAwayToHTTP2Clients: on stop, an HTTP/2 connection
// with a stream in flight gets GOAWAY: the stream finishes on it, and the
// client opens no new stream there.
func TestProxyStopSendsGoAwayToHTTP2Clients(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	p, stop := startProxyStoppable(t, cp)
	t.Cleanup(func() { _ = stop() })
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "a")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: ln.Addr().String()}.build(t))
	waitServing(t, p, http.DefaultClient, "a")
	addr := p.ListenerAddrs()["edge"]

	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	cc, err := (&http.Transport{Protocols: protocols}).NewClientConn(context.Background(), "http", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	roundTrip := func(path string) (string, error) {
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			return "", err
		}
		resp, err := cc.RoundTrip(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, b), err
	}
	slow := make(chan string, 1)
	go func() {
		got, err := roundTrip("/slow")
		slow <- fmt.Sprintf("%s %v", got, err)
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// GOAWAY: the connection takes no new stream (one is in flight, of 100).
	eventually(t, "the connection to get GOAWAY", func() bool { return cc.Available() == 0 && cc.InFlight() == 1 })
	if got, err := roundTrip("/"); err == nil {
		t.Errorf("a new stream after GOAWAY was served on the old connection: %s", got)
	}
	close(release)
	if got := <-slow; got != "200 a <nil>" {
		t.Errorf("the stream in flight at the stop: %s, want it to complete", got)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}
