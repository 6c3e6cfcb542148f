package dataplane

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// connStats is the connection part of /stats.
type connStats struct {
	Active    map[string]int `json:"downstream_cx_active"`
	Limit     int            `json:"downstream_cx_limit"`
	Overflow  int64          `json:"downstream_cx_overflow"`
	Reclaimed int64          `json:"downstream_cx_reclaimed"`
}

func readConnStats(t *testing.T, p *Proxy) connStats {
	t.Helper()
	_, body := adminGet(t, p, "/stats")
	var s connStats
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("/stats: %v: %s", err, body)
	}
	return s
}

// waitOpen waits until the edge listener holds n connections.
func waitOpen(t *testing.T, p *Proxy, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d connections open", n), func() bool { return readConnStats(t, p).Active["edge"] == n })
}

// closedByServer reports whether the server closed c (a read returns EOF
// or a reset rather than data; the deadline only bounds a hung test).
func closedByServer(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	return n == 0 && err != nil && !isTimeout(err)
}

// shedOnArrival reports whether a new connection to addr is closed by the
// server as soon as accepted: the reset may even reach the client before
// its connect returns.
func shedOnArrival(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return errors.Is(err, syscall.ECONNRESET)
	}
	defer c.Close()
	return closedByServer(c)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func withMaxConnections(n int) func(*Options) { return func(o *Options) { o.MaxConnections = n } }

// TestConnectionLimitShedsWhenAllBusy: at the limit, with every connection
// in a request, a new connection is shed (closed at once) and counted; once
// the requests end, new connections are served again.
func TestConnectionLimitShedsWhenAllBusy(t *testing.T) {
	t.Parallel()
	forEachHTTP1Server(t, func(t *testing.T, server func(*Options)) {
		entered, release := make(chan struct{}, 2), make(chan struct{})
		var releaseOnce sync.Once
		releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				entered <- struct{}{}
				<-release
			}
			_, _ = io.WriteString(w, "a")
		}))
		t.Cleanup(slow.Close)
		t.Cleanup(releaseAll) // before slow.Close, which waits for its handlers
		cp := startControlPlane(t)
		p := startProxy(t, cp, server, withMaxConnections(2))
		cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: slow.Listener.Addr().String()}.build(t))
		waitServing(t, p, &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}, "a")
		addr := p.ListenerAddrs()["edge"]
		waitOpen(t, p, 0)

		busy := make([]*keepAliveConn, 2)
		results := make(chan error, 2)
		for i := range busy {
			busy[i] = dialKeepAlive(t, addr)
			go func() {
				code, _, err := busy[i].get("/slow")
				if err == nil && code != http.StatusOK {
					err = fmt.Errorf("status %d", code)
				}
				results <- err
			}()
		}
		<-entered
		<-entered
		if !shedOnArrival(addr) {
			t.Error("a connection over the limit, all busy, was not shed")
		}
		if s := readConnStats(t, p); s.Overflow != 1 || s.Reclaimed != 0 || s.Active["edge"] != 2 || s.Limit != 2 {
			t.Errorf("stats %+v: want 1 overflow, 0 reclaimed, 2 open of 2", s)
		}
		releaseAll()
		for range busy {
			if err := <-results; err != nil {
				t.Errorf("busy request: %v", err)
			}
		}
		// The two are idle now: a new connection takes the place of one.
		if code, _, err := dialKeepAlive(t, addr).get("/after"); err != nil || code != http.StatusOK {
			t.Errorf("after the busy requests: %d %v", code, err)
		}
		if s := readConnStats(t, p); s.Overflow != 1 || s.Reclaimed != 1 {
			t.Errorf("stats %+v: want 1 overflow, 1 reclaimed", s)
		}
	})
}

// TestConnectionLimitReclaimsIdle: at the limit, a new connection takes the
// place of the one idle the longest (one that never sent a request first),
// so idle connections cannot lock clients out; nothing is shed.
func TestConnectionLimitReclaimsIdle(t *testing.T) {
	t.Parallel()
	forEachHTTP1Server(t, func(t *testing.T, server func(*Options)) {
		cp := startControlPlane(t)
		p := startProxy(t, cp, server, withMaxConnections(3))
		cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend(t, "a")}.build(t))
		waitServing(t, p, &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}, "a")
		addr := p.ListenerAddrs()["edge"]
		waitOpen(t, p, 0)

		silent := dialKeepAlive(t, addr) // never sends
		waitOpen(t, p, 1)
		kept := dialKeepAlive(t, addr) // one request, then idle
		if code, _, err := kept.get("/one"); err != nil || code != http.StatusOK {
			t.Fatalf("kept: %d %v", code, err)
		}
		partial := dialKeepAlive(t, addr) // a head never finished (slowloris)
		if _, err := io.WriteString(partial.c, "GET /slow HTTP/1.1\r\nHost: a\r\n"); err != nil {
			t.Fatal(err)
		}
		waitOpen(t, p, 3)

		if code, _, err := dialKeepAlive(t, addr).get("/new"); err != nil || code != http.StatusOK {
			t.Fatalf("a client at the limit: %d %v; want served", code, err)
		}
		if !closedByServer(silent.c) {
			t.Error("the connection idle the longest was not the one closed")
		}
		if code, _, err := dialKeepAlive(t, addr).get("/newer"); err != nil || code != http.StatusOK {
			t.Fatalf("a second client at the limit: %d %v; want served", code, err)
		}
		s := readConnStats(t, p)
		if s.Overflow != 0 || s.Reclaimed != 2 || s.Active["edge"] != 3 {
			t.Errorf("stats %+v: want 0 overflow, 2 reclaimed, 3 open", s)
		}
	})
}

// TestIdleConnectionHeapUse opens 2000 connections to a listener on the
// HTTP/1.1 fast path, idle before their first request and idle between two
// requests, and measures the heap they hold (runtime.MemStats.HeapInuse,
// after collections, per connection, the client's side included): the
// connections hold no read or write buffer (8 KiB) while they wait. Stacks
// are reported, not bounded (they depend on the runtime and -race).
func TestIdleConnectionHeapUse(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("opens 2000 connections")
	}
	const n = 2000
	const maxHeapPerConn = 4 << 10 // 9.5 KiB new and 12.8 KiB idle with buffers held
	for _, tt := range []struct {
		name    string
		request bool
	}{{"new", false}, {"between requests", true}} {
		t.Run(tt.name, func(t *testing.T) {
			cp := startControlPlane(t)
			p := startProxy(t, cp, withHTTP1(true), withMaxConnections(-1))
			cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend(t, "a")}.build(t))
			waitServing(t, p, &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}, "a")
			addr := p.ListenerAddrs()["edge"]
			waitOpen(t, p, 0)

			before := heapAndStacks()
			conns := make([]net.Conn, 0, n)
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for range n {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
				if tt.request {
					if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
						t.Fatal(err)
					}
					resp, err := http.ReadResponse(bufio.NewReader(c), nil)
					if err != nil {
						t.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
			waitOpen(t, p, n)
			after := heapAndStacks()
			heap := (int64(after.heap) - int64(before.heap)) / n
			stack := (int64(after.stack) - int64(before.stack)) / n
			t.Logf("per idle connection (%s): heap %d B, stack %d B", tt.name, heap, stack)
			if heap > maxHeapPerConn {
				t.Errorf("%d B of heap per idle connection; want at most %d", heap, maxHeapPerConn)
			}
		})
	}
}

type memUse struct{ heap, stack uint64 }

func heapAndStacks() memUse {
	runtime.GC()
	runtime.GC() // and the pools' victim caches
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memUse{heap: ms.HeapInuse, stack: ms.StackInuse}
}

// TestMemoryRelief: memory is given back once when the open connections
// fall to half a peak of at least reliefMinPeak, a delay later, then not
// before reliefMinInterval has passed, and not for smaller peaks.
func TestMemoryRelief(t *testing.T) {
	t.Parallel()
	const peak = 8 * reliefMinPeak
	tests := []struct {
		name          string
		open, close   int
		closeMore     int // after the first release
		wantReleases  int64
		wantAfterMore int64 // reliefDelay after closeMore
		wantLater     int64 // reliefMinInterval later
	}{
		{name: "small peak", open: reliefMinPeak - 1, close: reliefMinPeak - 1},
		{name: "less than half closed", open: peak, close: peak/2 - 1},
		{name: "half closed, then half again", open: peak, close: peak / 2, wantReleases: 1, closeMore: peak / 4, wantAfterMore: 1, wantLater: 2},
		{name: "all closed, once", open: peak, close: peak, wantReleases: 1, wantAfterMore: 1, wantLater: 1},
		{name: "new peak under the minimum", open: 3 * reliefMinPeak / 2, close: 3 * reliefMinPeak / 4, wantReleases: 1,
			closeMore: 3 * reliefMinPeak / 4, wantAfterMore: 1, wantLater: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				var released atomic.Int64
				m := &memoryRelief{release: func() { released.Add(1) }, delay: reliefDelay, minInterval: reliefMinInterval}
				check := func(when string, want int64) {
					t.Helper()
					synctest.Wait()
					if got := released.Load(); got != want || m.Releases() != got {
						t.Fatalf("%s: releases = %d (%d counted); want %d", when, got, m.Releases(), want)
					}
				}
				for range tt.open {
					m.opened()
				}
				for range tt.close {
					m.closed()
				}
				check("at once", 0)
				time.Sleep(reliefDelay)
				check("after the delay", tt.wantReleases)
				for range tt.closeMore {
					m.closed()
				}
				time.Sleep(reliefDelay)
				check("soon after closing more", tt.wantAfterMore)
				time.Sleep(reliefMinInterval)
				check("after the least interval", tt.wantLater)
			})
		})
	}
}

// TestMemoryReliefWaitsForTheFallToSettle: connections still closing
// postpone the release, up to reliefMaxWait.
func TestMemoryReliefWaitsForTheFallToSettle(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var released atomic.Int64
		m := &memoryRelief{release: func() { released.Add(1) }, delay: reliefDelay, minInterval: reliefMinInterval}
		const peak = 4 * reliefMinPeak
		for range peak {
			m.opened()
		}
		for range peak / 2 {
			m.closed()
		}
		// One close every half delay: never quiet for a whole delay.
		start := time.Now()
		for time.Since(start) < reliefMaxWait-reliefDelay {
			time.Sleep(reliefDelay / 2)
			m.closed()
			synctest.Wait()
			if released.Load() != 0 {
				t.Fatalf("released %s after the fall, connections still closing", time.Since(start))
			}
		}
		time.Sleep(reliefDelay)
		synctest.Wait()
		if released.Load() != 1 {
			t.Fatalf("releases = %d %s after the fall; want 1 (at most reliefMaxWait)", released.Load(), time.Since(start))
		}
	})
}
