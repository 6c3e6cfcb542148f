package meshtls

import (
	"crypto/x509"
	"net"
	"sync"
	"time"
)

// A mesh connection lives no longer than the certificates it was
// authenticated with. Each side closes it when its peer's certificate
// expires (ExpiringConn): a proxy whose identity was revoked keeps its last
// certificate until then, and this is what ends its established
// connections. Healthy proxies never reach that point: they renew at half
// of a certificate's lifetime, new handshakes use the new certificate
// (sessions of an old one are not resumed), and a connection stops taking
// new requests at RetireAt, an eighth of the lifetime before the earlier of
// its two certificates expires, so that it is closed between requests.

// RetireAt is when a connection authenticated by certs (the peer's leaf and
// this proxy's own, either may be nil) should stop taking new requests: the
// earliest NotAfter among them minus an eighth of that certificate's
// lifetime. The zero time when no certificate is given.
func RetireAt(certs ...*x509.Certificate) time.Time {
	var at time.Time
	for _, c := range certs {
		if c == nil {
			continue
		}
		t := c.NotAfter.Add(-c.NotAfter.Sub(c.NotBefore) / 8)
		if at.IsZero() || t.Before(at) {
			at = t
		}
	}
	return at
}

// ExpiringConn is the transport under a mesh TLS connection: once the
// handshake told whose certificate authenticated the peer, Expire closes
// the connection when that certificate expires. Closing it stops the timer,
// so a connection that ends first leaves nothing behind.
type ExpiringConn struct {
	net.Conn

	mu       sync.Mutex
	timer    *time.Timer
	closed   bool
	expires  time.Time
	retireAt time.Time
}

// NewExpiringConn wraps c, the raw connection a TLS client or server runs
// over.
func NewExpiringConn(c net.Conn) *ExpiringConn { return &ExpiringConn{Conn: c} }

// Expire closes the connection at expires (at once when that has passed),
// and records retireAt for RetireAt. Call it once the handshake completed.
func (c *ExpiringConn) Expire(expires, retireAt time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.expires, c.retireAt = expires, retireAt
	if c.timer != nil {
		c.timer.Stop()
	}
	c.timer = time.AfterFunc(time.Until(expires), func() { _ = c.Close() })
}

// RetireAt is when the connection should stop taking new requests; zero
// before Expire.
func (c *ExpiringConn) RetireAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.retireAt
}

// Expires is when the connection is closed; zero before Expire.
func (c *ExpiringConn) Expires() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expires
}

// Close stops the expiry timer and closes the connection.
func (c *ExpiringConn) Close() error {
	c.mu.Lock()
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// PeerLeaf is the peer's leaf certificate of a completed handshake, nil
// when it presented none.
func PeerLeaf(chain []*x509.Certificate) *x509.Certificate {
	if len(chain) == 0 {
		return nil
	}
	return chain[0]
}
