package upstream

import (
	"context"
	"errors"
	"net"
)

// DialStream opens a connection of its own to endpoint ("ip:port"), an
// endpoint of the cluster, for a byte stream (a proxied TCP connection):
// plaintext, or mTLS when transport_socket_matches select the endpoint.
// The connection is counted as the cluster's requests' are (connection
// counters, circuit breaker) and never pooled; the caller owns and closes
// it. ctx bounds the dial and the handshake, within connect_timeout.
func (c *Cluster) DialStream(ctx context.Context, endpoint string) (net.Conn, error) {
	if secure := c.endpoints.Load().secure; secure != nil {
		if m := secure[endpoint]; m != nil {
			return m.transport.DialContext(ctx, "tcp", endpoint)
		}
	}
	return c.transport.DialContext(ctx, "tcp", endpoint)
}

// CloseWrite half-closes the connection when the one it wraps can (TCP,
// TLS): a proxied stream passes a client's half-close on.
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
