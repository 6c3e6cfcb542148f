package dataplane

import (
	"cmp"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
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
//
// The hook runs twice per request and takes no lock: each connection
// keeps its state in an atomic word (connWord) that the hook changes with
// a compare-and-swap, idle ones numbered in the order they became idle
// (idleSeq: one atomic add per request, none without a limit). The listener-wide mutex is taken when a connection opens or
// closes, and at the limit to pick the victim: a scan of the connections
// keeps a batch of the oldest idle ones (candidates), each re-validated
// by a compare-and-swap from the very idle word the scan saw to connGone
// before it is closed, so a connection that became busy (or idle again,
// hence younger) since the scan is never taken.
//
// As with a lock, a connection may be reclaimed in the instant its server
// finished reading a request head and before its StateActive hook ran:
// the hook then finds it gone and the request fails on the closed
// connection. The connection was idle by the server's last report when
// the admission decided. Connections that change state while a scan runs are ordered as
// the scan saw them (by at most the scan's duration).
type connLimiter struct {
	net.Listener
	name     string
	limit    int // <= 0: no limit, connections are only counted
	counters *connCounters
	logger   *slog.Logger

	// idleSeq numbers the moves to idle (when there is a limit): the
	// words of idle connections compare in the order they became idle.
	// The ConnState hook adds to it, without lock.
	idleSeq atomic.Uint64
	// mayHaveIdle is set when a connection becomes idle (or is admitted)
	// and cleared by a scan that saw every idle connection: at the limit,
	// with every connection busy, admissions are shed without scanning
	// again until it is set.
	mayHaveIdle atomic.Bool
	_           [64]byte // off mu's cache line

	mu sync.Mutex
	// conns are the connections counted in, in no order
	// (limitedConn.index).
	conns []*limitedConn
	// candidates are the oldest idle connections found by the last scan,
	// oldest first, from nextCandidate on (limitedConn.candidate); a
	// connection released since is nil.
	candidates              []reclaimCandidate
	nextCandidate           int
	scanHeap                []scanEntry // scanLocked's, kept between scans
	lastWarn                time.Time
	unloggedShed, unloggedR int64
}

// connWord is a limitedConn's state: its kind in the low connKindBits
// and, when idle, its idle sequence number above them, so that idle words
// compare in the order the connections became idle.
type connWord = uint64

const (
	connKindBits          = 2
	connKindMask connWord = 1<<connKindBits - 1
	connBusy     connWord = 1 // in a request (or hijacked)
	connIdle     connWord = 2 // | seq<<connKindBits: reclaimable
	connGone     connWord = 3 // counted out: reclaimed or closed
)

func idleWord(seq uint64) connWord { return seq<<connKindBits | connIdle }

// Batches of candidates: about 1/16 of the connections, within bounds, so
// that a scan at the limit costs some 16 connection loads per admission
// (and, the batch taken, a few sift steps each).
const (
	minReclaimBatch = 32
	maxReclaimBatch = 4096
)

// reclaimCandidate is a connection idle when the last scan saw it, with
// the word it had.
type reclaimCandidate struct {
	conn *limitedConn
	word connWord
}

func newConnLimiter(inner net.Listener, name string, limit int, counters *connCounters, logger *slog.Logger) *connLimiter {
	l := &connLimiter{Listener: inner, name: name, limit: limit, counters: counters, logger: logger}
	l.mayHaveIdle.Store(true)
	return l
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
	if l.limit > 0 && len(l.conns) >= l.limit {
		victim = l.reclaimLocked()
		if victim == nil {
			l.counters.shed.Add(1)
			l.unloggedShed++
			l.warnLocked()
			return nil, nil
		}
		l.removeLocked(victim)
		l.counters.reclaimed.Add(1)
		l.unloggedR++
		l.warnLocked()
	}
	lc = &limitedConn{Conn: c, limiter: l, index: len(l.conns), candidate: -1}
	// StateNew: reclaimable until a request is read.
	lc.state.Store(l.nextIdleWord())
	l.conns = append(l.conns, lc)
	if !l.mayHaveIdle.Load() { // no write to the line the hooks read
		l.mayHaveIdle.Store(true)
	}
	return lc, victim
}

// reclaimLocked takes the connection idle the longest (its word is
// connGone when it returns it), nil when every connection is busy.
func (l *connLimiter) reclaimLocked() *limitedConn {
	for scans := 0; ; scans++ {
		for l.nextCandidate < len(l.candidates) {
			cand := l.candidates[l.nextCandidate]
			l.candidates[l.nextCandidate] = reclaimCandidate{}
			l.nextCandidate++
			if cand.conn == nil {
				continue // closed since the scan
			}
			cand.conn.candidate = -1
			// Fails when the connection became busy since the scan, or
			// idle again: younger than the candidates after it.
			if cand.conn.state.CompareAndSwap(cand.word, connGone) {
				return cand.conn
			}
		}
		// Two scans at most: connections that keep turning busy right
		// after each scan are taken for busy.
		if scans == 2 || !l.mayHaveIdle.Load() {
			return nil
		}
		// Every candidate was taken (limitedConn.candidate is -1 for
		// all): the slice can be refilled.
		l.scanLocked()
	}
}

// scanLocked refills the candidates with the connections idle the
// longest, oldest first.
func (l *connLimiter) scanLocked() {
	// Cleared before the words are read: a connection becoming idle
	// after its word was read sets it again (connState stores its word,
	// then reads mayHaveIdle).
	l.mayHaveIdle.Store(false)
	size := min(max(len(l.conns)/16, minReclaimBatch), maxReclaimBatch)
	// A max-heap of the size oldest idle words seen (the youngest of
	// them on top), without pointers (no write barriers while it is
	// shuffled), then sorted oldest first.
	heap := l.scanHeap[:0]
	idle := 0
	for i, c := range l.conns {
		w := c.state.Load()
		if w&connKindMask != connIdle {
			continue
		}
		idle++
		switch {
		case len(heap) < size:
			heap = append(heap, scanEntry{word: w, index: i})
			siftUp(heap, len(heap)-1)
		case w < heap[0].word:
			heap[0] = scanEntry{word: w, index: i}
			siftDown(heap, 0)
		}
	}
	if idle > len(heap) {
		l.mayHaveIdle.Store(true) // idle ones beyond this batch
	}
	slices.SortFunc(heap, func(a, b scanEntry) int { return cmp.Compare(a.word, b.word) })
	l.scanHeap = heap
	l.candidates, l.nextCandidate = l.candidates[:0], 0
	for i, e := range heap {
		c := l.conns[e.index]
		c.candidate = i
		l.candidates = append(l.candidates, reclaimCandidate{conn: c, word: e.word})
	}
}

// scanEntry is an idle connection seen by a scan: its word and its index
// in connLimiter.conns.
type scanEntry struct {
	word  connWord
	index int
}

// siftUp and siftDown keep h a max-heap by word.
func siftUp(h []scanEntry, i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if h[parent].word >= h[i].word {
			return
		}
		h[parent], h[i] = h[i], h[parent]
		i = parent
	}
}

func siftDown(h []scanEntry, i int) {
	for {
		largest := i
		for _, child := range [2]int{2*i + 1, 2*i + 2} {
			if child < len(h) && h[child].word > h[largest].word {
				largest = child
			}
		}
		if largest == i {
			return
		}
		h[i], h[largest] = h[largest], h[i]
		i = largest
	}
}

// removeLocked counts c out.
func (l *connLimiter) removeLocked(c *limitedConn) {
	last := len(l.conns) - 1
	l.conns[c.index] = l.conns[last]
	l.conns[c.index].index = c.index
	l.conns[last] = nil
	l.conns = l.conns[:last]
	c.index = -1
	if c.candidate >= 0 {
		l.candidates[c.candidate].conn = nil
		c.candidate = -1
	}
	// Give a burst's array back once it is mostly empty.
	if cap(l.conns) > 1024 && len(l.conns) < cap(l.conns)/4 {
		l.conns = append(make([]*limitedConn, 0, cap(l.conns)/2), l.conns...)
	}
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
	if c.index < 0 {
		l.mu.Unlock()
		return
	}
	c.state.Store(connGone)
	l.removeLocked(c)
	l.mu.Unlock()
	l.counters.relief.closed()
}

// connState is the servers' ConnState hook: it marks connections idle
// (reclaimable) or busy, with atomic operations alone, allocating
// nothing.
func (l *connLimiter) connState(c net.Conn, state http.ConnState) {
	lc := limitedConnOf(c)
	if lc == nil || lc.limiter != l {
		return
	}
	switch state {
	case http.StateNew:
		// Admitted idle; idle again when handed over from the fast
		// path in a request, keeping its place if it was not.
		l.markIdle(lc, false)
	case http.StateIdle:
		l.markIdle(lc, true)
	case http.StateActive, http.StateHijacked:
		for {
			w := lc.state.Load()
			if w&connKindMask != connIdle || lc.state.CompareAndSwap(w, connBusy) {
				return
			}
		}
	}
}

// markIdle makes lc reclaimable, idle from now on, or from when it
// became idle if it is and !renew; a connection counted out stays so.
func (l *connLimiter) markIdle(lc *limitedConn, renew bool) {
	var idle connWord // taken once: the loop runs again only if lc was counted out meanwhile
	for {
		w := lc.state.Load()
		if w == connGone || (!renew && w&connKindMask == connIdle) {
			return
		}
		if idle == 0 {
			idle = l.nextIdleWord()
		}
		if lc.state.CompareAndSwap(w, idle) {
			break
		}
	}
	// After the word is stored (scanLocked clears, then reads words);
	// a load alone once set: no write to a shared line per request.
	if !l.mayHaveIdle.Load() {
		l.mayHaveIdle.Store(true)
	}
}

// nextIdleWord is the word of a connection idle from now on. Without a
// limit no idle connection is ever picked, and idle ones are only counted:
// the listener-wide idleSeq is left alone.
func (l *connLimiter) nextIdleWord() connWord {
	if l.limit <= 0 {
		return connIdle
	}
	return idleWord(l.idleSeq.Add(1))
}

// Counts are the connections held, and how many of them are idle (may be
// reclaimed): a scan, for /stats.
func (l *connLimiter) Counts() (open, idle int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		if c.state.Load()&connKindMask == connIdle {
			idle++
		}
	}
	return len(l.conns), idle
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
	// state is a connWord: changed by connState without lock, by the
	// limiter under its mu (admission, reclaim, release).
	state atomic.Uint64
	// Under limiter.mu:
	index     int // in limiter.conns; -1 once counted out
	candidate int // in limiter.candidates; -1 when not there
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
