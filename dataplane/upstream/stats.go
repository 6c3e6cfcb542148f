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
	// Circuit breaker refusals (circuit_breakers), by limit.
	OverflowConnections, OverflowPending, OverflowRequests, OverflowRetries Counter
	// Ejections counts outlier ejections (outlier_detection), and
	// HealthCheckFailures failed active checks (health_checks).
	Ejections, HealthCheckFailures Counter
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
	for _, c := range []*Counter{&s.Timeouts, &s.OverflowConnections, &s.OverflowPending, &s.OverflowRequests,
		&s.OverflowRetries, &s.Ejections, &s.HealthCheckFailures} {
		if *c == nil {
			*c = nopCounter{}
		}
	}
	return s
}

// Stats returns the cluster's counters (Options' WithStats, or counters
// that count nothing).
func (c *Cluster) Stats() Stats { return c.stats }

// countDials wraps dial so that the cluster's connection counters follow
// the connections it opens.
// With a circuit breaker, it also refuses a connection over
// max_connections or max_pending_requests (an *OverflowError), except a
// health check's. Each connection is counted on its endpoint, for /clusters.
func (c *Cluster) countDials(dial dialFunc) dialFunc {
	stats := c.stats
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		b := c.breaker
		if b != nil && ctx.Value(healthCheckKey{}) != nil {
			b = nil
		}
		if b != nil {
			if err := b.startConnection(); err != nil {
				return nil, err
			}
		}
		conn, err := dial(ctx, network, addr)
		if b != nil {
			b.connectionDialed(err == nil)
		}
		if err != nil {
			if ctx.Err() == nil || ctx.Err() == context.DeadlineExceeded {
				stats.ConnectFailures.Inc()
			}
			return nil, err
		}
		stats.ConnectionsTotal.Inc()
		stats.ConnectionsActive.Inc()
		cc := &countedConn{Conn: conn, active: stats.ConnectionsActive, breaker: b}
		if set := c.endpoints.Load(); set != nil {
			if h := set.byAddress[addr]; h != nil {
				cc.host = h
				h.connections.Add(1)
			}
		}
		return cc, nil
	}
}

// countedConn is an upstream connection counted as active until closed.
type countedConn struct {
	net.Conn
	active  Gauge
	host    *host    // nil when its endpoint is unknown
	breaker *Breaker // nil when not counted by a circuit breaker
	once    sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.active.Dec()
		if c.host != nil {
			c.host.connections.Add(-1)
		}
		if c.breaker != nil {
			c.breaker.connectionClosed()
		}
	})
	return c.Conn.Close()
}

// unwrapCounted returns the connection a countedConn wraps, conn otherwise.
func unwrapCounted(conn net.Conn) net.Conn {
	if cc, ok := conn.(*countedConn); ok {
		return cc.Conn
	}
	return conn
}
