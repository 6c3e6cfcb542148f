package dataplane

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
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
// It is not parallel: the heap it measures is the process's, and tests
// running beside it would add theirs.
func TestIdleConnectionHeapUse(t *testing.T) {
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

// idleListModel is the reference for the connection limiter's choices: the
// connections idle in the order they became so (a list, as a lock would
// keep it), the busy ones apart.
type idleListModel struct {
	limit int
	open  map[int]bool
	idle  []int // oldest first
}

func (m *idleListModel) removeIdle(id int) {
	for i, v := range m.idle {
		if v == id {
			m.idle = append(m.idle[:i], m.idle[i+1:]...)
			return
		}
	}
}

func (m *idleListModel) isIdle(id int) bool {
	for _, v := range m.idle {
		if v == id {
			return true
		}
	}
	return false
}

// admit is the outcome of admitting id: the victim, -1 when none, or
// shed.
func (m *idleListModel) admit(id int) (victim int, shed bool) {
	victim = -1
	if m.limit > 0 && len(m.open) >= m.limit {
		if len(m.idle) == 0 {
			return -1, true
		}
		victim = m.idle[0]
		m.idle = m.idle[1:]
		delete(m.open, victim)
	}
	m.open[id] = true
	m.idle = append(m.idle, id)
	return victim, false
}

func (m *idleListModel) connState(id int, state http.ConnState) {
	if !m.open[id] {
		return
	}
	switch state {
	case http.StateNew:
		if !m.isIdle(id) {
			m.idle = append(m.idle, id)
		}
	case http.StateIdle:
		m.removeIdle(id)
		m.idle = append(m.idle, id)
	case http.StateActive, http.StateHijacked:
		m.removeIdle(id)
	}
}

func (m *idleListModel) close(id int) {
	delete(m.open, id)
	m.removeIdle(id)
}

// TestConnLimiterReclaimsInIdleOrder: whatever the ConnState hook calls,
// admissions and closes, the limiter reclaims exactly the connection a
// list of idle connections in the order they became idle would give, and
// sheds exactly when it would be empty; its counts are the list's. Limits
// under and over a batch of candidates (minReclaimBatch), so that
// candidates go stale and scans repeat, and none (counts only).
func TestConnLimiterReclaimsInIdleOrder(t *testing.T) {
	t.Parallel()
	states := []http.ConnState{http.StateNew, http.StateActive, http.StateActive, http.StateIdle, http.StateIdle, http.StateHijacked, http.StateClosed}
	for _, tt := range []struct {
		limit, ops int
	}{{limit: -1, ops: 2000}, {limit: 1, ops: 2000}, {limit: 5, ops: 5000}, {limit: 100, ops: 20000}, {limit: 3000, ops: 30000}} {
		t.Run(fmt.Sprint(tt.limit), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(uint64(tt.limit), 8))
			l := newTestLimiter(tt.limit)
			model := &idleListModel{limit: tt.limit, open: map[int]bool{}}
			conns := map[int]*limitedConn{}
			var ids []int // open ones, in the model
			nextID := 0
			pick := func() int { return ids[rng.IntN(len(ids))] }
			forget := func(id int) {
				delete(conns, id)
				ids = slices.DeleteFunc(ids, func(v int) bool { return v == id })
			}
			var reclaimed, shed int
			arrive := func(op int) {
				id := nextID
				nextID++
				wantVictim, wantShed := model.admit(id)
				lc, victim := l.admit(stubConn{})
				if (lc == nil) != wantShed {
					t.Fatalf("op %d: admission shed = %v; want %v", op, lc == nil, wantShed)
				}
				gotVictim := -1
				for vid, c := range conns {
					if c == victim {
						gotVictim = vid
					}
				}
				if victim != nil && gotVictim < 0 {
					t.Fatalf("op %d: victim is no connection of the test", op)
				}
				if gotVictim != wantVictim {
					t.Fatalf("op %d: reclaimed %d; want %d (idle, oldest first: %v)", op, gotVictim, wantVictim, model.idle)
				}
				if victim != nil {
					reclaimed++
					forget(gotVictim)
				}
				if lc != nil {
					conns[id] = lc
					ids = append(ids, id)
				} else {
					shed++
				}
			}
			setState := func(id int, state http.ConnState) {
				model.connState(id, state)
				l.connState(conns[id], state)
			}
			for op := range tt.ops {
				switch r := rng.IntN(100); {
				case op%(tt.ops/4) == tt.ops/8:
					// Every connection busy at the limit: shed, until
					// some are idle again.
					for len(ids) < tt.limit {
						arrive(op)
					}
					for _, id := range ids {
						setState(id, http.StateActive)
					}
					arrive(op)
					arrive(op)
					setState(pick(), http.StateIdle)
					arrive(op)
				case r < 30 || len(ids) == 0: // a connection arrives
					arrive(op)
				case r < 40: // one closes
					id := pick()
					model.close(id)
					l.release(conns[id])
					forget(id)
				default: // one changes state
					setState(pick(), states[rng.IntN(len(states))])
				}
				if op%97 == 0 || tt.limit < 100 {
					if open, idle := l.Counts(); open != len(model.open) || idle != len(model.idle) {
						t.Fatalf("op %d: counts %d open, %d idle; want %d, %d", op, open, idle, len(model.open), len(model.idle))
					}
				}
			}
			t.Logf("%d reclaimed, %d shed", reclaimed, shed)
			if tt.limit > 0 && (reclaimed == 0 || shed == 0) {
				t.Errorf("%d reclaimed, %d shed: the test did not reach both", reclaimed, shed)
			}
		})
	}
}

// TestConnStateHookTakesNoLockAndAllocatesNothing: the per-request hook
// calls (Active, Idle; New and Hijacked too) run while the listener's
// mutex is held by someone else, and allocate nothing, on a connection
// and under a wrapper (TLS, the fast path's).
func TestConnStateHookTakesNoLockAndAllocatesNothing(t *testing.T) {
	// Not parallel: testing.AllocsPerRun.
	l := newTestLimiter(4)
	conns := admitN(t, l, 2)
	wrapped := netConnWrapper{Conn: conns[1]}

	l.mu.Lock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, state := range []http.ConnState{http.StateNew, http.StateActive, http.StateIdle, http.StateHijacked, http.StateClosed} {
			l.connState(conns[0], state)
			l.connState(wrapped, state)
		}
	}()
	select {
	case <-done:
	case <-time.After(time.Minute): // only bounds a hung test
		t.Fatal("the ConnState hook waits for the listener's mutex")
	}
	l.mu.Unlock()

	l.connState(conns[0], http.StateIdle)
	l.connState(wrapped, http.StateIdle)
	for _, c := range []net.Conn{conns[0], wrapped} {
		if allocs := testing.AllocsPerRun(1000, func() {
			l.connState(c, http.StateActive)
			l.connState(c, http.StateIdle)
		}); allocs != 0 {
			t.Errorf("%T: %v allocations per request's hook calls; want 0", c, allocs)
		}
	}
	if open, idle := l.Counts(); open != 2 || idle != 2 {
		t.Errorf("counts %d open, %d idle; want 2, 2", open, idle)
	}
}

// netConnWrapper is a connection over another, as tls.Conn is.
type netConnWrapper struct{ net.Conn }

func (w netConnWrapper) NetConn() net.Conn { return w.Conn }

// TestConnLimiterConcurrentStress: clients flip their connections between
// busy and idle with the ConnState hook, close them and connect again,
// while the listener is at its limit: a connection is never reclaimed
// while its hook has made it busy, the counts never go negative nor over
// the limit, and every connection is accounted for at the end.
func TestConnLimiterConcurrentStress(t *testing.T) {
	t.Parallel()
	const limit, clients, rounds = 16, 32, 2000
	l := newTestLimiter(limit)
	type client struct {
		conn      atomic.Pointer[limitedConn]
		inRequest atomic.Bool // set while the hook says busy
	}
	var (
		owners                          sync.Map // *limitedConn -> *client
		admitted, reclaimed, shed, rels atomic.Int64
		wg                              sync.WaitGroup
	)
	var failed atomic.Bool
	fail := func(format string, args ...any) {
		failed.Store(true)
		t.Errorf(format, args...)
	}
	connect := func(cl *client) {
		lc, victim := l.admit(stubConn{})
		if victim != nil {
			reclaimed.Add(1)
			// Not owned yet: admitted a moment ago, idle.
			if owner, ok := owners.Load(victim); ok && owner.(*client).inRequest.Load() && owner.(*client).conn.Load() == victim {
				fail("a connection busy in a request was reclaimed")
			}
		}
		if lc == nil {
			shed.Add(1)
			return
		}
		admitted.Add(1)
		owners.Store(lc, cl)
		cl.conn.Store(lc)
		if open, idle := l.Counts(); open < 0 || idle < 0 || idle > open || open > limit {
			fail("counts %d open, %d idle, limit %d", open, idle, limit)
		}
	}
	// Admissions from outside too, so that the limit is reached even
	// while every client is in a request.
	stop := make(chan struct{})
	var extra sync.WaitGroup
	extra.Go(func() {
		var mine client
		for {
			select {
			case <-stop:
				if c := mine.conn.Load(); c != nil {
					l.release(c)
					rels.Add(1)
				}
				return
			default:
			}
			if c := mine.conn.Swap(nil); c != nil && c.state.Load() != connGone {
				l.release(c)
				rels.Add(1)
			}
			connect(&mine)
			runtime.Gosched()
		}
	})
	for i := range clients {
		wg.Go(func() {
			cl := &client{}
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			for range rounds {
				if failed.Load() {
					break
				}
				c := cl.conn.Load()
				if c == nil || c.state.Load() == connGone || rng.IntN(10) == 0 {
					if c != nil {
						l.release(c) // closed, or closing after being reclaimed
						rels.Add(1)
						cl.conn.Store(nil)
					}
					connect(cl)
					continue
				}
				l.connState(c, http.StateActive)
				if c.state.Load() == connBusy {
					cl.inRequest.Store(true)
					for range rng.IntN(20) {
						runtime.Gosched()
						if w := c.state.Load(); w != connBusy {
							fail("a connection in a request went from busy to %#x", w)
						}
					}
					cl.inRequest.Store(false)
				}
				l.connState(c, []http.ConnState{http.StateIdle, http.StateNew}[rng.IntN(2)])
				for range rng.IntN(20) { // idle between requests
					runtime.Gosched()
				}
			}
			if c := cl.conn.Load(); c != nil {
				l.release(c)
				rels.Add(1)
			}
		})
	}
	wg.Wait()
	close(stop)
	extra.Wait()
	if open, idle := l.Counts(); open != 0 || idle != 0 {
		t.Errorf("at the end: counts %d open, %d idle; want 0, 0", open, idle)
	}
	t.Logf("%d admitted, %d reclaimed, %d shed, %d closes", admitted.Load(), reclaimed.Load(), shed.Load(), rels.Load())
	if reclaimed.Load() == 0 {
		t.Error("nothing reclaimed: the limit was not reached")
	}
	if got := l.counters.reclaimed.Load(); got != reclaimed.Load() {
		t.Errorf("counted %d reclaimed; the admissions returned %d victims", got, reclaimed.Load())
	}
}
