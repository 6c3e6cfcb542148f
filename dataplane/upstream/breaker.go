package upstream

import (
	"errors"
	"fmt"
	"math"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// The limits of a cluster's circuit breaker, as x-meshgate-overloaded names
// them (the Envoy field that was exceeded).
const (
	LimitConnections     = "max_connections"
	LimitPendingRequests = "max_pending_requests"
	LimitRequests        = "max_requests"
	LimitRetries         = "max_retries"
)

// Envoy's defaults of the threshold fields left unset in a thresholds entry.
const (
	defaultMaxConnections       = 1024
	defaultMaxPendingRequests   = 1024
	defaultMaxRequests          = 1024
	defaultMaxRetries           = 3
	defaultRetryBudgetPercent   = 20.0
	defaultMinRetryConcurrency  = 3
	overflowConnectionsIndex    = 0
	overflowPendingIndex        = 1
	overflowRequestsIndex       = 2
	overflowRetriesIndex        = 3
	overflowLimitCount          = 4
	percentOfActiveRequestsBase = 100.0
)

// OverflowError is a request refused because a circuit breaker limit of its
// cluster was reached: the proxy answers 503 at once, with
// x-meshgate-overloaded: Limit and Envoy's response flag UO.
type OverflowError struct {
	Cluster string
	Limit   string // LimitConnections, LimitPendingRequests, LimitRequests, LimitRetries
}

func (e *OverflowError) Error() string {
	return fmt.Sprintf("cluster %q: circuit breaker %s reached", e.Cluster, e.Limit)
}

// IsOverflow reports whether err is (or wraps) an *OverflowError, and
// returns it.
func IsOverflow(err error) (*OverflowError, bool) {
	var o *OverflowError
	ok := errors.As(err, &o)
	return o, ok
}

// Breaker is a cluster's circuit breaker: circuit_breakers.thresholds of
// the default priority. It counts the cluster's active requests, pending
// requests (waiting for a connection to open), open connections and active
// retries, and refuses what would exceed a limit instead of queueing it.
// Safe for concurrent use.
type Breaker struct {
	cluster        string
	maxConnections int64
	maxPending     int64
	maxRequests    int64
	maxRetries     int64
	// budget, when set (retry_budget), replaces maxRetries: active retries
	// may reach budgetPercent of active plus pending requests, and at least
	// minRetryConcurrency.
	budget              bool
	budgetPercent       float64
	minRetryConcurrency int64

	requests, pending, retries, connections atomic.Int64
	overflows                               [overflowLimitCount]atomic.Uint64
	stats                                   [overflowLimitCount]Counter
}

// newBreaker compiles circuit_breakers; nil when there is none: a cluster
// without circuit breakers counts nothing.
func newBreaker(name string, cb *clusterv3.CircuitBreakers, stats Stats) (*Breaker, error) {
	if cb == nil || len(cb.GetThresholds()) == 0 {
		return nil, nil
	}
	if len(cb.GetThresholds()) > 1 {
		return nil, errors.New("circuit_breakers.thresholds: one entry (the default priority) is supported")
	}
	t := cb.GetThresholds()[0]
	b := &Breaker{
		cluster:        name,
		maxConnections: defaultMaxConnections,
		maxPending:     defaultMaxPendingRequests,
		maxRequests:    defaultMaxRequests,
		maxRetries:     defaultMaxRetries,
	}
	if v := t.GetMaxConnections(); v != nil {
		b.maxConnections = int64(v.GetValue())
	}
	if v := t.GetMaxPendingRequests(); v != nil {
		b.maxPending = int64(v.GetValue())
	}
	if v := t.GetMaxRequests(); v != nil {
		b.maxRequests = int64(v.GetValue())
	}
	if v := t.GetMaxRetries(); v != nil {
		b.maxRetries = int64(v.GetValue())
	}
	if rb := t.GetRetryBudget(); rb != nil {
		b.budget = true
		b.budgetPercent = defaultRetryBudgetPercent
		b.minRetryConcurrency = defaultMinRetryConcurrency
		if p := rb.GetBudgetPercent(); p != nil {
			v := p.GetValue()
			if math.IsNaN(v) || v < 0 || v > 100 {
				return nil, fmt.Errorf("circuit_breakers.thresholds[0].retry_budget.budget_percent: %v must be 0-100", v)
			}
			b.budgetPercent = v
		}
		if m := rb.GetMinRetryConcurrency(); m != nil {
			b.minRetryConcurrency = int64(m.GetValue())
		}
	}
	b.stats = [overflowLimitCount]Counter{
		stats.OverflowConnections, stats.OverflowPending, stats.OverflowRequests, stats.OverflowRetries,
	}
	for i, s := range b.stats {
		if s == nil {
			b.stats[i] = nopCounter{}
		}
	}
	return b, nil
}

func (b *Breaker) overflow(i int, limit string) error {
	b.overflows[i].Add(1)
	b.stats[i].Inc()
	return &OverflowError{Cluster: b.cluster, Limit: limit}
}

// StartRequest admits one more active request, or returns an
// *OverflowError (max_requests) without counting it. Admitted requests end
// with EndRequest.
func (b *Breaker) StartRequest() error {
	if b.requests.Add(1) > b.maxRequests {
		b.requests.Add(-1)
		return b.overflow(overflowRequestsIndex, LimitRequests)
	}
	return nil
}

// EndRequest ends a request StartRequest admitted.
func (b *Breaker) EndRequest() { b.requests.Add(-1) }

// StartRetry admits one more active retry (max_retries, or the retry
// budget), or returns an *OverflowError (max_retries) without counting it.
// Admitted retries end with EndRetry.
func (b *Breaker) StartRetry() error {
	limit := b.maxRetries
	if b.budget {
		active := b.requests.Load() + b.pending.Load()
		limit = max(b.minRetryConcurrency, int64(float64(active)*b.budgetPercent/percentOfActiveRequestsBase))
	}
	if b.retries.Add(1) > limit {
		b.retries.Add(-1)
		return b.overflow(overflowRetriesIndex, LimitRetries)
	}
	return nil
}

// EndRetry ends a retry StartRetry admitted.
func (b *Breaker) EndRetry() { b.retries.Add(-1) }

// startConnection admits a connection about to be opened: the request
// opening it is pending until it is open (max_pending_requests), and the
// cluster's open connections are bounded (max_connections). The proxy does
// not queue: a request that would need a connection over either limit is
// refused. done must be called with whether the connection opened.
func (b *Breaker) startConnection() error {
	if b.connections.Add(1) > b.maxConnections {
		b.connections.Add(-1)
		return b.overflow(overflowConnectionsIndex, LimitConnections)
	}
	if b.pending.Add(1) > b.maxPending {
		b.pending.Add(-1)
		b.connections.Add(-1)
		return b.overflow(overflowPendingIndex, LimitPendingRequests)
	}
	return nil
}

// connectionDialed ends the pending state of a connection startConnection
// admitted; a connection that failed to open is not counted any more.
func (b *Breaker) connectionDialed(opened bool) {
	b.pending.Add(-1)
	if !opened {
		b.connections.Add(-1)
	}
}

// connectionClosed forgets an open connection.
func (b *Breaker) connectionClosed() { b.connections.Add(-1) }

// BreakerStatus is a breaker's limits, current counts and overflows, for
// the admin's /clusters.
type BreakerStatus struct {
	MaxConnections      int64    `json:"max_connections"`
	MaxPendingRequests  int64    `json:"max_pending_requests"`
	MaxRequests         int64    `json:"max_requests"`
	MaxRetries          int64    `json:"max_retries,omitempty"`
	RetryBudgetPercent  *float64 `json:"retry_budget_percent,omitempty"`
	MinRetryConcurrency int64    `json:"min_retry_concurrency,omitempty"`
	Connections         int64    `json:"connections"`
	PendingRequests     int64    `json:"pending_requests"`
	Requests            int64    `json:"requests"`
	Retries             int64    `json:"retries"`
	// Overflows counts refusals since the cluster was built, by limit.
	Overflows map[string]uint64 `json:"overflows"`
}

// Status reports the breaker's limits and counts.
func (b *Breaker) Status() BreakerStatus {
	s := BreakerStatus{
		MaxConnections: b.maxConnections, MaxPendingRequests: b.maxPending, MaxRequests: b.maxRequests,
		Connections: b.connections.Load(), PendingRequests: b.pending.Load(),
		Requests: b.requests.Load(), Retries: b.retries.Load(),
		Overflows: map[string]uint64{
			LimitConnections:     b.overflows[overflowConnectionsIndex].Load(),
			LimitPendingRequests: b.overflows[overflowPendingIndex].Load(),
			LimitRequests:        b.overflows[overflowRequestsIndex].Load(),
			LimitRetries:         b.overflows[overflowRetriesIndex].Load(),
		},
	}
	if b.budget {
		p := b.budgetPercent
		s.RetryBudgetPercent, s.MinRetryConcurrency = &p, b.minRetryConcurrency
	} else {
		s.MaxRetries = b.maxRetries
	}
	return s
}

// Breaker is the cluster's circuit breaker, nil when it has none
// (circuit_breakers unset): then nothing is counted nor refused.
func (c *Cluster) Breaker() *Breaker { return c.breaker }
