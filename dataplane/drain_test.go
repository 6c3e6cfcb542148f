package dataplane

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// stopEvent is one step of a stopSequence as a test saw it.
type stopEvent struct {
	step    string
	at      time.Duration // since the stop began (virtual time)
	timeout time.Duration // closeListeners: time left until its context ends
	aborted bool          // closeListeners: its context had already ended
}

// TestStopSequence checks the order and timing of a graceful stop in
// virtual time: readiness fails and the proxy leaves service discovery
// first, the listeners close a drain delay after the leave completed (not
// when it started), in-flight requests get the drain timeout, and an abort
// (a second signal) skips what is left.
func TestStopSequence(t *testing.T) {
	t.Parallel()
	const delay, timeout = 5 * time.Second, 20 * time.Second
	tests := []struct {
		name      string
		delay     time.Duration
		leaveTook time.Duration // -1: no leave hook; 0: returns at once
		leaveHang bool          // leave returns only on abort
		serving   bool
		abortAt   time.Duration // 0: no abort
		want      []stopEvent
	}{
		{
			name: "deregistration, then the delay, then the listeners close", delay: delay, leaveTook: 2 * time.Second, serving: true,
			want: []stopEvent{{step: "fail readiness"}, {step: "leave"}, {step: "left", at: 2 * time.Second},
				{step: "close listeners", at: 7 * time.Second, timeout: timeout}},
		},
		{
			name: "no delay", leaveTook: 2 * time.Second, serving: true,
			want: []stopEvent{{step: "fail readiness"}, {step: "leave"}, {step: "left", at: 2 * time.Second},
				{step: "close listeners", at: 2 * time.Second, timeout: timeout}},
		},
		{
			name: "no service discovery", delay: delay, leaveTook: -1, serving: true,
			want: []stopEvent{{step: "fail readiness"}, {step: "close listeners", at: delay, timeout: timeout}},
		},
		{
			name: "no listener bound: nobody to wait for", delay: delay, leaveTook: 0, serving: false,
			want: []stopEvent{{step: "fail readiness"}, {step: "leave"}, {step: "left"}, {step: "close listeners", timeout: timeout}},
		},
		{
			name: "second signal during the delay", delay: delay, leaveTook: time.Second, serving: true, abortAt: 3 * time.Second,
			want: []stopEvent{{step: "fail readiness"}, {step: "leave"}, {step: "left", at: time.Second},
				{step: "close listeners", at: 3 * time.Second, aborted: true}},
		},
		{
			name: "second signal while leaving", delay: delay, leaveHang: true, serving: true, abortAt: time.Second,
			want: []stopEvent{{step: "fail readiness"}, {step: "leave"}, {step: "left", at: time.Second},
				{step: "close listeners", at: time.Second, aborted: true}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				var got []stopEvent
				record := func(e stopEvent) {
					e.at = time.Since(start)
					got = append(got, e)
				}
				abort, stopNow := context.WithCancel(context.Background())
				defer stopNow()
				if tt.abortAt > 0 {
					time.AfterFunc(tt.abortAt, stopNow)
				}
				seq := stopSequence{
					delay: tt.delay, timeout: timeout, abort: abort, logger: slog.New(slog.DiscardHandler),
					failReadiness: func() { record(stopEvent{step: "fail readiness"}) },
					serving:       func() bool { return tt.serving },
					closeListeners: func(ctx context.Context) {
						e := stopEvent{step: "close listeners", aborted: ctx.Err() != nil}
						if d, ok := ctx.Deadline(); ok && !e.aborted {
							e.timeout = time.Until(d)
						}
						record(e)
					},
				}
				if tt.leaveTook >= 0 {
					seq.leave = func(ctx context.Context) {
						record(stopEvent{step: "leave"})
						if tt.leaveHang {
							<-ctx.Done()
						} else {
							time.Sleep(tt.leaveTook)
						}
						record(stopEvent{step: "left"})
					}
				}
				seq.run()
				if !slices.Equal(got, tt.want) {
					t.Errorf("stop steps:\n got %+v\nwant %+v", got, tt.want)
				}
			})
		})
	}
}

// runProxyForStop runs a proxy (through a Role, whose beside runs for as
// long as it serves) with opts applied, configured with one listener in
// front of the answer "a"; the test stops it with cancel.
func runProxyForStop(t *testing.T, server func(*Options), beside func(context.Context), opts ...func(*Options)) (p *Proxy, cancel func(), done <-chan error) {
	t.Helper()
	cp := startControlPlane(t)
	o := Options{
		Node:         &corev3.Node{Id: testNode, Cluster: "edge"},
		XDSAddresses: []string{cp.addr},
		Logger:       slog.New(slog.DiscardHandler),
	}
	server(&o)
	for _, opt := range opts {
		opt(&o)
	}
	role, err := NewRole(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancelRun := context.WithCancel(context.Background())
	errc, finished := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(finished)
		errc <- role.Run(ctx, beside)
	}()
	t.Cleanup(func() {
		cancelRun()
		role.Proxy.StopNow()
		<-finished
	})
	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend(t, "a")}.build(t))
	waitServing(t, role.Proxy, http.DefaultClient, "a")
	return role.Proxy, cancelRun, errc
}

// keepAliveConn is one client connection sending requests one at a time.
type keepAliveConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialKeepAlive(t *testing.T, addr string) *keepAliveConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAliveConn{c: c, br: bufio.NewReader(c)}
}

// get sends GET path and returns the status and the Connection header.
func (k *keepAliveConn) get(path string) (int, string, error) {
	_ = k.c.SetDeadline(time.Now().Add(10 * time.Second)) // a hung proxy fails the test, not a bound
	if _, err := fmt.Fprintf(k.c, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", path); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	_, _ = bufio.NewReader(resp.Body).WriteTo(discard{})
	return resp.StatusCode, resp.Header.Get("Connection"), nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// adminGet returns the status and body of an admin endpoint.
func adminGet(t *testing.T, p *Proxy, path string) (int, string) {
	t.Helper()
	code, body, err := get(http.DefaultClient, "http://"+p.AdminAddr()+path)
	if err != nil {
		t.Fatalf("admin %s: %v", path, err)
	}
	return code, body
}

// TestProxyServesDuringDrainDelay: once a stop began, /ready answers 503
// "draining" while the listener keeps serving new and kept-alive
// connections for the drain delay; StopNow (a second signal) ends the
// delay at once and the listener closes.
func TestProxyServesDuringDrainDelay(t *testing.T) {
	t.Parallel()
	forEachHTTP1Server(t, func(t *testing.T, server func(*Options)) {
		p, cancel, done := runProxyForStop(t, server, nil, func(o *Options) { o.DrainDelay = time.Hour })
		addr := p.ListenerAddrs()["edge"]
		kept := dialKeepAlive(t, addr)
		if code, _, err := kept.get("/before"); err != nil || code != http.StatusOK {
			t.Fatalf("before the stop: %d %v", code, err)
		}
		cancel()
		eventually(t, "/ready to answer 503 draining", func() bool {
			code, body := adminGet(t, p, "/ready")
			return code == http.StatusServiceUnavailable && body == "draining\n"
		})
		if code, conn, err := kept.get("/during"); err != nil || code != http.StatusOK || conn == "close" {
			t.Errorf("kept-alive connection during the delay: %d %q %v; want 200, kept alive", code, conn, err)
		}
		if code, body, err := get(&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}, "http://"+addr+"/new"); err != nil || code != http.StatusOK || body != "a" {
			t.Errorf("new connection during the delay: %d %q %v; want 200", code, body, err)
		}
		p.StopNow()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			t.Error("the listener still accepts after the stop")
		}
	})
}

// TestRoleLeavesBeforeListenersClose: with no drain delay, the listeners
// still serve until the registration (beside) has returned, and close
// after; an idle kept-alive connection is closed with them.
func TestRoleLeavesBeforeListenersClose(t *testing.T) {
	t.Parallel()
	forEachHTTP1Server(t, func(t *testing.T, server func(*Options)) {
		leaving, release := make(chan struct{}), make(chan struct{})
		beside := func(ctx context.Context) {
			<-ctx.Done()
			close(leaving)
			<-release // deregistering
		}
		p, cancel, done := runProxyForStop(t, server, beside)
		addr := p.ListenerAddrs()["edge"]
		kept := dialKeepAlive(t, addr)
		if code, _, err := kept.get("/before"); err != nil || code != http.StatusOK {
			t.Fatalf("before the stop: %d %v", code, err)
		}
		cancel()
		<-leaving
		if code, body := adminGet(t, p, "/ready"); code != http.StatusServiceUnavailable || body != "draining\n" {
			t.Errorf("/ready while leaving = %d %q; want 503 draining", code, body)
		}
		if code, _, err := kept.get("/while-leaving"); err != nil || code != http.StatusOK {
			t.Errorf("while the registration is removed: %d %v; want 200", code, err)
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		if _, _, err := kept.get("/after"); err == nil {
			t.Error("the idle kept-alive connection was not closed with the listener")
		}
	})
}

// TestRoleStopNowDoesNotWaitForLeaving: a second signal while the
// registration is being removed stops at once.
func TestRoleStopNowDoesNotWaitForLeaving(t *testing.T) {
	t.Parallel()
	var once sync.Once
	hang := make(chan struct{})
	t.Cleanup(func() { once.Do(func() { close(hang) }) })
	leaving := make(chan struct{})
	beside := func(ctx context.Context) {
		<-ctx.Done()
		close(leaving)
		<-hang
	}
	p, cancel, done := runProxyForStop(t, withHTTP1(true), beside, func(o *Options) { o.DrainDelay = time.Hour })
	cancel()
	<-leaving
	p.StopNow()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
