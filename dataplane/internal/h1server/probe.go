package h1server

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// probeDelay is how long a request may stay in its handler before its
// connection is probed for a client that went away: a background read then
// waits on the connection until the handler returns. A read that fails or
// ends (EOF) cancels the request's context (and the connection is closed
// once the response is written); bytes it returns (a pipelined request) are
// kept for the next request. net/http starts such a read for every request;
// starting it only for the requests still in their handler after
// probeDelay (nearly none) spares the others its cost. A client that leaves
// a faster request is noticed when the response is written, as before.
//
// One goroutine per Server, running while it has connections on the fast
// path, looks at them every probeDelay and starts the probe of a request it
// finds in its handler twice: a probe starts between one and two
// probeDelays into the handler. A per-request timer would cost more than
// the probe saves: arming it wakes the network poller (about 1.5 µs per
// request in BenchmarkServer); marking a request costs two atomic
// operations.
const probeDelay = 50 * time.Millisecond

// aLongTimeAgo is a read deadline in the past, which aborts a pending read.
var aLongTimeAgo = time.Unix(1, 0)

// Bits of prober.word, which is seq<<2 | probeStarted | inHandler: seq
// numbers the probed handler calls of the connection.
const (
	inHandler    = 1 << 0 // a handler runs that may be probed
	probeStarted = 1 << 1 // the sweeper started a probe for it
)

// prober is the per-connection state of the probe.
type prober struct {
	// word is set by the conn goroutine around each probed handler call
	// and claimed (probeStarted) by the sweeper with a compare-and-swap:
	// the handler's end and the probe's start are ordered by it.
	word atomic.Uint64
	seq  uint64 // conn goroutine: the last handler call's sequence number
	seen uint64 // sweeper: word at its previous look

	done chan struct{} // a probe ended (cap 1); made by the sweeper

	mu      sync.Mutex
	aborted bool // the handler returned: a past read deadline ends the probe
	gone    bool // the probe's read failed: the client is gone
	// n bytes of buf were read by the probe and are not yet given to the
	// request reader (connReader). Set by the probe, then owned by the
	// conn goroutine once it received from done.
	n   int
	buf [1]byte
}

// handlerStarts marks the start of a handler call that may be probed.
func (c *conn) handlerStarts() {
	p := &c.probe
	p.seq++
	p.word.Store(p.seq<<2 | inHandler)
}

// handlerEnds marks the end of the handler call (or of the connection,
// after a panic); when a probe was started, it ends it, waits for it and
// sets the read deadline for what follows: none before the idle deadline
// (readHead sets it), the header deadline when the probe read the start of
// the next request (the deadline set before the handler may have passed).
// It reports whether the client is gone.
func (c *conn) handlerEnds() bool {
	p := &c.probe
	if p.word.Swap(p.seq<<2)&probeStarted == 0 {
		return false
	}
	p.mu.Lock()
	p.aborted = true
	_ = c.rwc.SetReadDeadline(aLongTimeAgo)
	p.mu.Unlock()
	<-p.done
	p.mu.Lock()
	p.aborted = false
	gone := p.gone
	p.mu.Unlock()
	if d := c.srv.readHeaderTimeout(); p.n > 0 && d > 0 {
		c.setReadDeadline(time.Now().Add(d))
	} else {
		c.setReadDeadline(time.Time{})
	}
	return gone
}

// sweep starts the probes (see probeDelay) until the Server has no
// connection left on the fast path.
func (s *Server) sweep() {
	t := time.NewTicker(probeDelay)
	defer t.Stop()
	for range t.C {
		s.mu.Lock()
		if len(s.conns) == 0 {
			s.sweeping = false
			s.mu.Unlock()
			return
		}
		for c := range s.conns {
			c.maybeProbe()
		}
		s.mu.Unlock()
	}
}

// maybeProbe starts the probe of c when the sweeper finds the same handler
// call running as at its previous look. Sweeper only (under s.mu).
func (c *conn) maybeProbe() {
	p := &c.probe
	w := p.word.Load()
	if w&(inHandler|probeStarted) != inHandler || w != p.seen {
		p.seen = w
		return
	}
	if p.done == nil {
		p.done = make(chan struct{}, 1)
	}
	if p.word.CompareAndSwap(w, w|probeStarted) {
		go c.runProbe()
	}
}

// runProbe is the background read. It reads at most one byte, from the
// connection itself: the conn goroutine does not read while its handler
// runs, and connReader gives the byte to the request reader afterwards.
func (c *conn) runProbe() {
	p := &c.probe
	p.mu.Lock()
	if !p.aborted {
		// The header and idle deadlines are for reading a head; the probe
		// waits until the handler returns.
		_ = c.rwc.SetReadDeadline(time.Time{})
	}
	p.mu.Unlock()

	n, err := c.rwc.Read(p.buf[:])

	p.mu.Lock()
	p.n = n
	if err != nil {
		var ne net.Error
		if !p.aborted || !errors.As(err, &ne) || !ne.Timeout() {
			p.gone = true
		}
	}
	gone := p.gone
	p.mu.Unlock()
	if gone {
		c.cancel()
	}
	p.done <- struct{}{}
}

// connReader is what the request reader reads from: the byte a probe (or
// awaitBytes) read first, then what awaitBytes read, then the connection.
type connReader struct{ c *conn }

func (r connReader) Read(b []byte) (int, error) {
	c := r.c
	p := &c.probe
	if p.n > 0 && len(b) > 0 {
		b[0] = p.buf[0]
		p.n = 0
		return 1, nil
	}
	if len(c.arrived) > 0 {
		n := copy(b, c.arrived)
		c.arrived = c.arrived[n:]
		if len(c.arrived) == 0 {
			c.releaseArrived()
		}
		return n, nil
	}
	return c.rwc.Read(b)
}
