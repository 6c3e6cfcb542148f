package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// The HTTP/1.1 fast path. net/http's Transport runs two goroutines per
// connection (a read loop and a write loop) and hands every request and
// response between them and the caller over channels; on a loaded proxy
// those hand-offs, and the background read that looks for the next
// response, cost more CPU than the parsing. h1Client instead writes a
// body-less request and reads its response on the caller's goroutine, over
// connections pooled per endpoint. Framing (chunked, Content-Length,
// close-delimited, HEAD, 1xx) is net/http's own: Request.Write and
// ReadResponse. Requests with a body keep going through the Transport, which
// streams the body while it reads an early response.

// Buffer sizes of a pooled upstream connection: a response head fits the
// reader, and a 16 KiB body is read in one system call.
const (
	h1ReadBufferSize  = 16 << 10
	h1WriteBufferSize = 4 << 10
)

// ErrTimeout is the error (wrapped) of a request that exceeded its route
// timeout, before the response or while its body was read.
var ErrTimeout = errors.New("upstream request timeout")

// errConnCanceled is the error of an exchange aborted because the
// downstream request's context ended (the client went away).
var errConnCanceled = errors.New("upstream request canceled: client went away")

// aLongTimeAgo is a deadline in the past: setting it aborts blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// dialFunc opens a connection to an endpoint (plaintext or mTLS).
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// h1Client is a pool of HTTP/1.1 keep-alive connections per endpoint.
type h1Client struct {
	dial  dialFunc
	pools sync.Map // endpoint address → *h1Pool
	// idleTimeout closes a pooled connection idle this long.
	idleTimeout time.Duration
}

func newH1Client(dial dialFunc) *h1Client { return &h1Client{dial: dial, idleTimeout: idleConnTimeout} }

// h1Pool holds the idle connections to one endpoint.
type h1Pool struct {
	idle        chan *h1Conn
	idleTimeout time.Duration
}

// h1Conn is one upstream connection.
type h1Conn struct {
	conn     net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	pool     *h1Pool
	idleAt   time.Time
	deadline bool // a deadline is set on conn
	// retireAt, when set, is when the connection stops being reused: a
	// certificate of its mesh TLS session is about to expire.
	retireAt time.Time
	// aborted is set when the exchange was aborted (client gone): the
	// connection is closed, never pooled.
	aborted atomic.Bool
	// pooled is set while the connection waits in its pool; whoever clears
	// it owns the connection: get to use it, its idle timer to close it.
	pooled atomic.Bool
	// idleTimer closes the connection once idle for the pool's
	// idleTimeout (as Envoy's idle_timeout does), so the endpoint sees it
	// close; armed on each return to the pool, made once per connection.
	idleTimer *time.Timer
}

// closeIfIdle closes the connection if it is still waiting in its pool:
// its idle timeout has passed. A connection taken from the pool meanwhile
// is left alone.
func (pc *h1Conn) closeIfIdle() {
	if pc.pooled.CompareAndSwap(true, false) {
		_ = pc.conn.Close()
	}
}

func (c *h1Client) pool(addr string) *h1Pool {
	if p, ok := c.pools.Load(addr); ok {
		return p.(*h1Pool)
	}
	p, _ := c.pools.LoadOrStore(addr, &h1Pool{idle: make(chan *h1Conn, maxIdleConnsPerHost), idleTimeout: c.idleTimeout})
	return p.(*h1Pool)
}

// get returns an idle connection to addr, or nil.
func (p *h1Pool) get(now time.Time) *h1Conn {
	for {
		select {
		case pc := <-p.idle:
			if !pc.pooled.CompareAndSwap(true, false) {
				continue // closed by its idle timer
			}
			pc.idleTimer.Stop()
			if now.Sub(pc.idleAt) < p.idleTimeout && (pc.retireAt.IsZero() || now.Before(pc.retireAt)) {
				return pc
			}
			_ = pc.conn.Close()
		default:
			return nil
		}
	}
}

// put pools pc, with its idle timer armed, or closes it when the pool is
// full.
func (p *h1Pool) put(pc *h1Conn) {
	pc.idleAt = time.Now()
	pc.pooled.Store(true)
	if pc.idleTimer == nil {
		pc.idleTimer = time.AfterFunc(p.idleTimeout, pc.closeIfIdle)
	} else {
		pc.idleTimer.Reset(p.idleTimeout)
	}
	select {
	case p.idle <- pc:
	default:
		pc.idleTimer.Stop()
		pc.closeIfIdle()
	}
}

// closeIdle closes every idle connection of the pool.
func (p *h1Pool) closeIdle() {
	for {
		select {
		case pc := <-p.idle:
			pc.idleTimer.Stop()
			pc.closeIfIdle()
		default:
			return
		}
	}
}

// closeIdle closes the idle connections of every endpoint; keep, when not
// nil, lists the endpoints whose pools stay (the others are forgotten).
func (c *h1Client) closeIdle(keep map[string]bool) {
	c.pools.Range(func(k, v any) bool {
		if keep == nil || !keep[k.(string)] {
			if keep != nil {
				c.pools.Delete(k)
			}
			v.(*h1Pool).closeIdle()
		}
		return true
	})
}

func (c *h1Client) connect(ctx context.Context, p *h1Pool, addr string) (*h1Conn, error) {
	conn, err := c.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &h1Conn{
		conn:     conn,
		br:       bufio.NewReaderSize(conn, h1ReadBufferSize),
		bw:       bufio.NewWriterSize(conn, h1WriteBufferSize),
		pool:     p,
		retireAt: connRetireAt(conn),
	}, nil
}

// roundTrip sends the body-less request r to r.URL.Host and reads the
// response head; the caller reads the body and closes it, which returns the
// connection to the pool. timeout > 0 bounds the exchange up to the end of
// the body. The exchange is aborted when r's context ends.
func (c *h1Client) roundTrip(r *http.Request, timeout time.Duration) (*http.Response, error) {
	addr := r.URL.Host
	p := c.pool(addr)
	ctx := r.Context()
	now := time.Now()
	var deadline time.Time
	if timeout > 0 {
		deadline = now.Add(timeout)
	}
	pc := p.get(now)
	reused := pc != nil
	for {
		if pc == nil {
			dialCtx := ctx
			if timeout > 0 {
				var cancel context.CancelFunc
				dialCtx, cancel = context.WithDeadline(ctx, deadline)
				defer cancel()
			}
			var err error
			if pc, err = c.connect(dialCtx, p, addr); err != nil {
				if timeout > 0 && dialCtx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
					return nil, fmt.Errorf("%w: %w", ErrTimeout, err)
				}
				return nil, err
			}
		}
		resp, err := pc.exchange(r, deadline)
		if err == nil {
			return resp, nil
		}
		_ = pc.conn.Close()
		switch {
		case pc.aborted.Load() || ctx.Err() != nil:
			return nil, errConnCanceled
		case errors.Is(err, errStaleConn) && reused:
			pc, reused = nil, false // the pooled connection was closed by the endpoint: once more on a new one
			continue
		case isTimeout(err):
			return nil, fmt.Errorf("%w: %w", ErrTimeout, err)
		}
		return nil, err
	}
}

// errStaleConn marks a pooled connection that failed before any byte of a
// response arrived: the request can be sent again on a new connection.
var errStaleConn = errors.New("upstream connection closed before the response")

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// exchange writes r and reads the response head on pc.
func (pc *h1Conn) exchange(r *http.Request, deadline time.Time) (*http.Response, error) {
	if !deadline.IsZero() || pc.deadline {
		if err := pc.conn.SetDeadline(deadline); err != nil {
			return nil, fmt.Errorf("%w: %w", errStaleConn, err)
		}
		pc.deadline = !deadline.IsZero()
	}
	stop := context.AfterFunc(r.Context(), pc.abort)
	if err := r.Write(pc.bw); err != nil {
		stop()
		return nil, fmt.Errorf("%w: write request: %w", errStaleConn, err)
	}
	if err := pc.bw.Flush(); err != nil {
		stop()
		return nil, fmt.Errorf("%w: write request: %w", errStaleConn, err)
	}
	if _, err := pc.br.Peek(1); err != nil {
		stop()
		if isTimeout(err) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", errStaleConn, err)
	}
	for {
		resp, err := http.ReadResponse(pc.br, r)
		if err != nil {
			stop()
			return nil, fmt.Errorf("read response: %w", err)
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			stop()
			resp.Body.Close()
			return nil, errors.New("read response: unexpected 101 Switching Protocols")
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 {
			continue // informational: the final response follows
		}
		keepAlive := !resp.Close && !r.Close
		if resp.Body == http.NoBody {
			pc.release(stop, keepAlive)
			return resp, nil
		}
		resp.Body = &h1Body{body: resp.Body, pc: pc, stop: stop, keepAlive: keepAlive}
		return resp, nil
	}
}

// abort unblocks the connection's I/O: the downstream request ended.
func (pc *h1Conn) abort() {
	pc.aborted.Store(true)
	_ = pc.conn.SetDeadline(aLongTimeAgo)
}

// release ends an exchange whose response was read completely: the
// connection goes back to the pool when it is clean and keep-alive.
func (pc *h1Conn) release(stop func() bool, keepAlive bool) {
	if !stop() || pc.aborted.Load() || !keepAlive || pc.br.Buffered() > 0 {
		_ = pc.conn.Close()
		return
	}
	pc.pool.put(pc)
}

// h1Body is a response body on a pooled connection: at its end the
// connection returns to the pool; closed early, the connection is closed.
type h1Body struct {
	body      io.ReadCloser
	pc        *h1Conn
	stop      func() bool
	keepAlive bool
	done      bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.body.Read(p)
	switch {
	case err == io.EOF:
		b.done = true
		b.pc.release(b.stop, b.keepAlive)
	case err != nil:
		b.done = true
		b.stop()
		_ = b.pc.conn.Close()
		if isTimeout(err) && !b.pc.aborted.Load() {
			err = fmt.Errorf("%w: %w", ErrTimeout, err)
		}
	}
	return n, err
}

func (b *h1Body) Close() error {
	if !b.done {
		b.done = true
		b.stop()
		_ = b.pc.conn.Close()
	}
	return nil
}
