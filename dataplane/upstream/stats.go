package upstream

import (
	"context"
	"net"
	"sync"
)

// Counter counts events (a prometheus.Counter is one).
type Counter interface{ Inc() }

// Gauge goes up and down (a prometheus.Gauge is one).
type Gauge interface {
	Inc()
	Dec()
}

// Stats are the counters of one cluster, resolved once when the cluster is
// built so that counting takes no lookup: connections opened and open, dials
// that failed, and requests that timed out (counted by the router, which
// answers them). A nil field counts nothing.
type Stats struct {
	ConnectionsActive Gauge
	ConnectionsTotal  Counter
	ConnectFailures   Counter
	Timeouts          Counter
}

// WithStats makes the cluster count its connections into s.
func WithStats(s Stats) Option { return func(o *clusterOptions) { o.stats = s } }

type nopCounter struct{}

func (nopCounter) Inc() {}
func (nopCounter) Dec() {}

// withDefaults fills the nil fields with counters that count nothing.
func (s Stats) withDefaults() Stats {
	if s.ConnectionsActive == nil {
		s.ConnectionsActive = nopCounter{}
	}
	if s.ConnectionsTotal == nil {
		s.ConnectionsTotal = nopCounter{}
	}
	if s.ConnectFailures == nil {
		s.ConnectFailures = nopCounter{}
	}
	if s.Timeouts == nil {
		s.Timeouts = nopCounter{}
	}
	return s
}

// Stats returns the cluster's counters (Options' WithStats, or counters
// that count nothing).
func (c *Cluster) Stats() Stats { return c.stats }

// countDials wraps dial so that the cluster's connection counters follow
// the connections it opens.
func (c *Cluster) countDials(dial dialFunc) dialFunc {
	if c.stats.ConnectionsTotal == (nopCounter{}) && c.stats.ConnectionsActive == (nopCounter{}) && c.stats.ConnectFailures == (nopCounter{}) {
		return dial
	}
	stats := c.stats
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			if ctx.Err() == nil || ctx.Err() == context.DeadlineExceeded {
				stats.ConnectFailures.Inc()
			}
			return nil, err
		}
		stats.ConnectionsTotal.Inc()
		stats.ConnectionsActive.Inc()
		return &countedConn{Conn: conn, active: stats.ConnectionsActive}, nil
	}
}

// countedConn is an upstream connection counted as active until closed.
type countedConn struct {
	net.Conn
	active Gauge
	once   sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(c.active.Dec)
	return c.Conn.Close()
}

// unwrapCounted returns the connection a countedConn wraps, conn otherwise.
func unwrapCounted(conn net.Conn) net.Conn {
	if cc, ok := conn.(*countedConn); ok {
		return cc.Conn
	}
	return conn
}
