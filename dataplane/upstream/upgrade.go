package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// ErrUpgradeUnsupported is Upgrade's error for an endpoint spoken to over
// HTTP/2 (h2c, or mTLS with ALPN h2): an HTTP/1.1 upgrade cannot be sent on
// such a connection.
var ErrUpgradeUnsupported = errors.New("upstream speaks HTTP/2: an HTTP/1.1 upgrade cannot be sent")

// CanUpgrade reports whether an HTTP/1.1 upgrade (Upgrade) can be sent to
// endpoint ("ip:port"): the cluster speaks HTTP/1.1 to it, in plaintext or
// over mesh mTLS.
func (c *Cluster) CanUpgrade(endpoint string) bool { return c.h1ClientFor(endpoint) != nil }

// h1ClientFor is the HTTP/1.1 client of endpoint (plaintext, or the
// transport_socket_matches entry that selects it); nil for HTTP/2.
func (c *Cluster) h1ClientFor(endpoint string) *h1Client {
	if secure := c.endpoints.Load().secure; secure != nil {
		if m := secure[endpoint]; m != nil {
			return m.fast
		}
	}
	return c.fast
}

// Upgrade sends the HTTP/1.1 upgrade request r (its Connection and Upgrade
// headers as the caller set them) to its URL host, an endpoint of the
// cluster, on a connection of its own that is never pooled (plaintext, or
// mTLS when transport_socket_matches select the endpoint), and reads the
// response head. timeout > 0 bounds the exchange up to the response head
// (ErrTimeout); the exchange is aborted when r's context ends before it.
//
// On 101 Switching Protocols it returns the response (no body) and the
// upgraded connection, which the caller owns and closes: its reads return
// first what the endpoint sent after the response head, it has no
// deadline, and CloseWrite half-closes it (a TLS close_notify over mTLS).
// On any other status the connection is nil and the response is read as
// RoundTrip's: closing its body closes the connection.
func (c *Cluster) Upgrade(r *http.Request, timeout time.Duration) (*http.Response, *UpgradedConn, error) {
	client := c.h1ClientFor(r.URL.Host)
	if client == nil {
		return nil, nil, ErrUpgradeUnsupported
	}
	done := c.beginRequest(r.URL.Host)
	resp, conn, err := client.upgrade(r, timeout)
	if done != nil {
		switch {
		case err != nil:
			done()
		case conn != nil:
			conn.done = done
		default:
			resp.Body = &countedBody{ReadCloser: resp.Body, done: done}
		}
	}
	return resp, conn, err
}

// upgrade is Cluster.Upgrade on a new connection of c.
func (c *h1Client) upgrade(r *http.Request, timeout time.Duration) (*http.Response, *UpgradedConn, error) {
	suppressDefaultUserAgent(r)
	ctx := r.Context()
	var deadline time.Time
	dialCtx := ctx
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
		var cancel context.CancelFunc
		dialCtx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	conn, err := c.dial(dialCtx, "tcp", r.URL.Host)
	if err != nil {
		if timeout > 0 && dialCtx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrTimeout, err)
		}
		return nil, nil, err
	}
	pc := &h1Conn{
		conn: conn,
		br:   bufio.NewReaderSize(conn, h1ReadBufferSize),
		bw:   bufio.NewWriterSize(conn, h1WriteBufferSize),
	}
	resp, err := pc.exchangeUpgrade(r, deadline)
	if err != nil {
		_ = conn.Close()
		switch {
		case pc.aborted.Load() || ctx.Err() != nil:
			return nil, nil, errConnCanceled
		case isTimeout(err):
			return nil, nil, fmt.Errorf("%w: %w", ErrTimeout, err)
		}
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return resp, nil, nil
	}
	return resp, &UpgradedConn{Conn: conn, br: pc.br}, nil
}

// exchangeUpgrade writes r and reads the response head on pc, a connection
// used for this exchange only. A 101 ends the exchange with the deadline
// cleared; any other final response is returned with a body that closes
// the connection.
func (pc *h1Conn) exchangeUpgrade(r *http.Request, deadline time.Time) (*http.Response, error) {
	if !deadline.IsZero() {
		if err := pc.conn.SetDeadline(deadline); err != nil {
			return nil, err
		}
	}
	stop := context.AfterFunc(r.Context(), pc.abort)
	if err := r.Write(pc.bw); err != nil {
		stop()
		return nil, fmt.Errorf("write request: %w", err)
	}
	if err := pc.bw.Flush(); err != nil {
		stop()
		return nil, fmt.Errorf("write request: %w", err)
	}
	for {
		resp, err := http.ReadResponse(pc.br, r)
		if err != nil {
			stop()
			return nil, fmt.Errorf("read response: %w", err)
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			if !stop() {
				return nil, errConnCanceled // the client went away meanwhile
			}
			if err := pc.conn.SetDeadline(time.Time{}); err != nil {
				return nil, err
			}
			return resp, nil
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 {
			continue // informational: the final response follows
		}
		if resp.Body == http.NoBody {
			pc.release(stop, false)
			return resp, nil
		}
		resp.Body = &h1Body{body: resp.Body, pc: pc, stop: stop, keepAlive: false}
		return resp, nil
	}
}

// UpgradedConn is an upstream connection after 101 Switching Protocols.
type UpgradedConn struct {
	net.Conn
	br   *bufio.Reader // what the endpoint sent after the response head, then the connection
	done func()        // ends the request's count in flight (least request); nil when not counted
}

// Read reads what the endpoint sent after the response head first.
func (c *UpgradedConn) Read(p []byte) (int, error) {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p)
		}
		c.br = nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the connection: no more bytes to the endpoint
// (over TLS, a close_notify alert).
func (c *UpgradedConn) CloseWrite() error {
	if cw, ok := unwrapCounted(c.Conn).(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Close closes the connection.
func (c *UpgradedConn) Close() error {
	if c.done != nil {
		c.done()
	}
	return c.Conn.Close()
}
