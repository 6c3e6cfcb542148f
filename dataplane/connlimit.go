package dataplane

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// DefaultMaxConnections is the number of downstream connections a
	// listener holds at most when Options.MaxConnections is zero
	// (docs/operations.md, "Connection limits"): about 16k, well under
	// the usual open-file limits, and some tens of MB of connection state
	// at most (an idle connection costs a few KB: its goroutine and a few
	// hundred bytes; buffers are held only while a request is read or
	// answered).
	DefaultMaxConnections = 16384
	// overLimitLogInterval is the least time between two warnings of a
	// listener at its connection limit.
	overLimitLogInterval = 10 * time.Second
	// reliefMinPeak is the number of open downstream connections (over
	// every listener) below which their fall never triggers a memory
	// relief: some MB.
	reliefMinPeak = 512
	// reliefDelay lets a falling number of connections settle before the
	// memory relief runs: it runs once none closed for that long, or
	// reliefMaxWait after the fall.
	reliefDelay   = time.Second
	reliefMaxWait = 10 * time.Second
	// reliefMinInterval is the least time between two memory reliefs (a
	// full garbage collection each).
	reliefMinInterval = 30 * time.Second
)

// connCounters are the proxy-wide downstream connection counters (/stats).
type connCounters struct {
	// shed: connections closed as soon as accepted, the listener being at
	// its limit with every connection busy.
	shed atomic.Int64
	// reclaimed: idle connections closed to admit a new one at the limit.
	reclaimed atomic.Int64
	relief    *memoryRelief
}

// connLimiter is a listener that holds at most limit connections at a
// time. At the limit, a new connection takes the place of the connection
// idle the longest (one that has sent nothing yet, or is between two
// requests: what http.Server.ConnState reports as StateNew or StateIdle,
// which includes one still sending its request head), which is closed;
// when every connection is busy with a request, the new connection is
// shed: closed at once (with a reset, no TIME_WAIT). Both are counted and
// logged as a warning at most every overLimitLogInterval. The connection
// states come from the servers' ConnState hook (connState).
type connLimiter struct {
	net.Listener
	name     string
	limit    int // <= 0: no limit, connections are only counted
	counters *connCounters
	logger   *slog.Logger

	mu   sync.Mutex
	open int
	// idle lists the connections that may be reclaimed, longest idle
	// first.
	idle                    connList
	lastWarn                time.Time
	unloggedShed, unloggedR int64
}

func newConnLimiter(inner net.Listener, name string, limit int, counters *connCounters, logger *slog.Logger) *connLimiter {
	return &connLimiter{Listener: inner, name: name, limit: limit, counters: counters, logger: logger}
}

// Accept returns the next connection admitted, shedding those that are
// not.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		lc, victim := l.admit(c)
		if victim != nil {
			l.counters.relief.closed()
			_ = victim.Conn.Close()
		}
		if lc != nil {
			l.counters.relief.opened()
			return lc, nil
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // reset: no TIME_WAIT left by a flood
		}
		_ = c.Close()
	}
}

// admit counts c in, reclaiming the longest idle connection at the limit
// (victim: the caller closes it); lc is nil when c is shed.
func (l *connLimiter) admit(c net.Conn) (lc, victim *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.limit > 0 && l.open >= l.limit {
		victim = l.idle.front()
		if victim == nil {
			l.counters.shed.Add(1)
			l.unloggedShed++
			l.warnLocked()
			return nil, nil
		}
		l.idle.remove(victim)
		victim.counted = false
		l.open--
		l.counters.reclaimed.Add(1)
		l.unloggedR++
		l.warnLocked()
	}
	lc = &limitedConn{Conn: c, limiter: l, counted: true}
	l.open++
	l.idle.pushBack(lc) // StateNew: reclaimable until a request is read
	return lc, victim
}

// warnLocked logs that the listener is at its limit, at most every
// overLimitLogInterval, with what was shed and reclaimed since the last
// warning.
func (l *connLimiter) warnLocked() {
	now := time.Now()
	if !l.lastWarn.IsZero() && now.Sub(l.lastWarn) < overLimitLogInterval {
		return
	}
	l.lastWarn = now
	l.logger.Warn("listener at its connection limit: idle connections closed to admit new ones, new ones shed when all are busy",
		"listener", l.name, "limit", l.limit, "reclaimed", l.unloggedR, "shed", l.unloggedShed)
	l.unloggedR, l.unloggedShed = 0, 0
}

// release counts c out (once); the caller closes it.
func (l *connLimiter) release(c *limitedConn) {
	l.mu.Lock()
	if !c.counted {
		l.mu.Unlock()
		return
	}
	c.counted = false
	l.idle.remove(c)
	l.open--
	l.mu.Unlock()
	l.counters.relief.closed()
}

// connState is the servers' ConnState hook: it keeps the list of
// reclaimable connections.
func (l *connLimiter) connState(c net.Conn, state http.ConnState) {
	lc := limitedConnOf(c)
	if lc == nil || lc.limiter != l {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !lc.counted {
		return
	}
	switch state {
	case http.StateNew:
		if !lc.inIdle {
			l.idle.pushBack(lc)
		}
	case http.StateIdle:
		l.idle.remove(lc)
		l.idle.pushBack(lc)
	case http.StateActive, http.StateHijacked:
		l.idle.remove(lc)
	}
}

// Counts are the connections held, and how many of them are idle (may be
// reclaimed).
func (l *connLimiter) Counts() (open, idle int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open, l.idle.n
}

// limitedConnOf finds the *limitedConn under c (under a TLS connection, the
// fast path's replaying and guarding wrappers...: each has NetConn), nil
// when there is none.
func limitedConnOf(c net.Conn) *limitedConn {
	for range 8 {
		switch v := c.(type) {
		case *limitedConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// limitedConn is a connection counted by its connLimiter until closed.
type limitedConn struct {
	net.Conn
	limiter *connLimiter
	// Under limiter.mu:
	counted    bool
	inIdle     bool
	prev, next *limitedConn
}

// Close counts the connection out and closes it.
func (c *limitedConn) Close() error {
	c.limiter.release(c)
	return c.Conn.Close()
}

// CloseWrite half-closes the connection (net/http does before closing
// after an error answer, so that the client reads it).
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ReadFrom is the connection's own (net/http copies response bodies with
// it).
func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// SyscallConn gives the servers the raw connection (the HTTP/1.1 fast path
// waits for a request without a buffer with it).
func (c *limitedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("not a system connection")
}

// connList is an intrusive doubly linked list of connections.
type connList struct {
	head, tail *limitedConn
	n          int
}

func (l *connList) front() *limitedConn { return l.head }

func (l *connList) pushBack(c *limitedConn) {
	l.n++
	c.inIdle = true
	c.prev, c.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = c
	} else {
		l.head = c
	}
	l.tail = c
}

func (l *connList) remove(c *limitedConn) {
	if !c.inIdle {
		return
	}
	l.n--
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		l.tail = c.prev
	}
	c.prev, c.next, c.inIdle = nil, nil, false
}

// memoryRelief gives memory back to the operating system after a burst of
// connections: when the number of open downstream connections falls to
// half a peak of at least reliefMinPeak, it runs release (two garbage
// collections, so that the pools' victim caches go too, and
// debug.FreeOSMemory) once no connection closed for reliefDelay (at most
// reliefMaxWait after the fall, and reliefMinInterval after the previous
// release at the soonest), and starts a new peak from there.
// Without it the runtime returns that memory slowly, and not before a
// garbage collection, which an idle proxy may not run for minutes.
type memoryRelief struct {
	release     func() // freeMemory; a test hook
	delay       time.Duration
	minInterval time.Duration

	mu          sync.Mutex
	open        int
	peak        int
	scheduled   time.Time // when the pending release was scheduled; zero: none
	lastClose   time.Time
	lastRelease time.Time
	releases    int64
}

func newMemoryRelief() *memoryRelief {
	return &memoryRelief{release: freeMemory, delay: reliefDelay, minInterval: reliefMinInterval}
}

func (m *memoryRelief) opened() {
	m.mu.Lock()
	m.open++
	m.peak = max(m.peak, m.open)
	m.mu.Unlock()
}

func (m *memoryRelief) closed() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.open--
	now := time.Now()
	m.lastClose = now
	if m.scheduled.IsZero() && m.peak >= reliefMinPeak && m.open <= m.peak/2 {
		m.scheduled = now
		wait := m.delay
		if !m.lastRelease.IsZero() {
			wait = max(wait, time.Until(m.lastRelease.Add(m.minInterval)))
		}
		time.AfterFunc(wait, m.fire)
	}
}

// fire releases memory once the connections stopped closing for the delay
// (or reliefMaxWait after the release was scheduled).
func (m *memoryRelief) fire() {
	m.mu.Lock()
	if quiet := time.Since(m.lastClose); quiet < m.delay && time.Since(m.scheduled) < reliefMaxWait {
		time.AfterFunc(m.delay-quiet, m.fire)
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	m.release()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.scheduled = time.Time{}
	m.peak = m.open
	m.lastRelease = time.Now()
	m.releases++
}

// Releases is how many times memory was given back.
func (m *memoryRelief) Releases() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.releases
}

func freeMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}
