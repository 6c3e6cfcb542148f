package h1server

import (
	"crypto/tls"
	"net"
	"sync"
)

// handoffListener is the listener Fallback serves: Accept returns the
// connections the fast path hands over.
type handoffListener struct {
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newHandoffListener() *handoffListener {
	return &handoffListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

// hand passes c to Accept; false when the listener is closed (the caller
// still owns c).
func (l *handoffListener) hand(c net.Conn) bool {
	select {
	case <-l.done:
		return false
	default:
	}
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return handoffAddr{} }

type handoffAddr struct{}

func (handoffAddr) Network() string { return "h1server" }
func (handoffAddr) String() string  { return "h1server-handoff" }

// replayConn is a handed-over connection whose first reads return the bytes
// the fast path had already read.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the connection when it supports it (net/http uses
// it to answer 431 before closing).
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// acceptedConn is the connection as the listener accepted it, for
// Fallback.ConnContext.
func (c *replayConn) acceptedConn() net.Conn { return c.Conn }

// NetConn is the connection as the listener accepted it (as
// tls.Conn.NetConn), for Fallback.ConnState hooks.
func (c *replayConn) NetConn() net.Conn { return c.Conn }

// tlsReplayConn is a replayConn over a *tls.Conn: net/http takes the
// request's TLS state from ConnectionState.
type tlsReplayConn struct {
	replayConn
	tc *tls.Conn
}

func (c *tlsReplayConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// newReplayConn wraps c so that its first reads return pending.
func newReplayConn(c net.Conn, pending []byte) net.Conn {
	if tc, ok := c.(*tls.Conn); ok {
		return &tlsReplayConn{replayConn: replayConn{Conn: c, pending: pending}, tc: tc}
	}
	return &replayConn{Conn: c, pending: pending}
}
