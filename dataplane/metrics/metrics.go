// Package metrics holds a proxy's request metrics in Prometheus form
// (github.com/prometheus/client_golang): request counts, durations, sizes
// and in-flight requests by listener, route, destination cluster and
// response code class, and the upstream clusters' connection counters.
//
// Label values come from configuration only (listener, route and cluster
// names) and from the status code class, so their number is bounded by the
// configuration: no path, no client address. The per-request cost is kept
// off the request path: Listener resolves, when a listener's configuration
// is compiled, one entry per route of its route table and, in it, one per
// cluster the route may forward to. A request then reaches its counters
// through the route's index (router.Route.Index) with no label lookup, no
// lock and no allocation; a code class child is resolved on its first use
// and kept behind an atomic pointer.
//
// The metric names are documented in docs/observability.md ("Metrics").
package metrics

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// Label names.
const (
	LabelListener  = "listener"
	LabelRoute     = "route"
	LabelCluster   = "cluster"
	LabelCodeClass = "code_class"
)

// DurationBuckets are the request duration histogram's buckets, in
// seconds: from half a millisecond (a local reply) to 30 s (past the
// default 15 s route timeout).
var DurationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// SizeBuckets are the body size histograms' buckets, in bytes: 0 and
// powers of 4 from 64 B to 16 MiB.
var SizeBuckets = []float64{0, 64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20}

// codeClasses are the code_class values by status/100; index 0 is a
// request that ended before a response was written (the client went away).
var codeClasses = [6]string{"none", "1xx", "2xx", "3xx", "4xx", "5xx"}

// Proxy is the request and upstream metrics of one proxy, registered in
// its registry. Safe for concurrent use.
type Proxy struct {
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	inFlight     *prometheus.GaugeVec
	requestSize  *prometheus.HistogramVec
	responseSize *prometheus.HistogramVec

	cxActive        *prometheus.GaugeVec
	cxTotal         *prometheus.CounterVec
	connectFailures *prometheus.CounterVec
	timeouts        *prometheus.CounterVec
	// Circuit breakers, outlier detection and health checks: a series
	// appears at a cluster's first event.
	overflows           *prometheus.CounterVec
	ejections           *prometheus.CounterVec
	healthCheckFailures *prometheus.CounterVec
}

// LabelLimit is the circuit breaker limit of an overflow: max_connections,
// max_pending_requests, max_requests or max_retries.
const LabelLimit = "limit"

// NewProxy creates the proxy's metric families and registers them in reg.
func NewProxy(reg prometheus.Registerer) *Proxy {
	destLabels := []string{LabelListener, LabelRoute, LabelCluster}
	p := &Proxy{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_proxy_requests_total",
			Help: "Requests served, by listener, route, destination cluster and response code class.",
		}, append(destLabels, LabelCodeClass)),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshgate_proxy_request_duration_seconds",
			Help:    "Time from a request's arrival to the end of its response, by listener, route, destination cluster and response code class.",
			Buckets: DurationBuckets,
		}, append(destLabels, LabelCodeClass)),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshgate_proxy_requests_in_flight",
			Help: "Requests being served, by listener and route.",
		}, []string{LabelListener, LabelRoute}),
		requestSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshgate_proxy_request_size_bytes",
			Help:    "Request body sizes, by listener, route and destination cluster.",
			Buckets: SizeBuckets,
		}, destLabels),
		responseSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshgate_proxy_response_size_bytes",
			Help:    "Response body sizes sent downstream, by listener, route and destination cluster.",
			Buckets: SizeBuckets,
		}, destLabels),
		cxActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshgate_proxy_upstream_connections_active",
			Help: "Open connections to a cluster's endpoints.",
		}, []string{LabelCluster}),
		cxTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_proxy_upstream_connections_total",
			Help: "Connections opened to a cluster's endpoints.",
		}, []string{LabelCluster}),
		connectFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_proxy_upstream_connect_failures_total",
			Help: "Connections to a cluster's endpoints that failed to open (refused, connect timeout, mTLS handshake).",
		}, []string{LabelCluster}),
		timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_proxy_upstream_timeouts_total",
			Help: "Requests to a cluster that hit their route timeout.",
		}, []string{LabelCluster}),
		overflows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_proxy_upstream_overflows_total",
			Help: "Requests a cluster's circuit breaker refused with 503 (x-meshgate-overloaded), by limit.",
		}, []string{LabelCluster, LabelLimit}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_proxy_upstream_outlier_ejections_total",
			Help: "Endpoints of a cluster ejected by outlier detection.",
		}, []string{LabelCluster}),
		healthCheckFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_proxy_upstream_health_check_failures_total",
			Help: "Failed active health checks of a cluster's endpoints.",
		}, []string{LabelCluster}),
	}
	reg.MustRegister(p.requests, p.duration, p.inFlight, p.requestSize, p.responseSize,
		p.cxActive, p.cxTotal, p.connectFailures, p.timeouts,
		p.overflows, p.ejections, p.healthCheckFailures)
	return p
}

// Cluster returns the upstream counters of the cluster called name, for
// upstream.WithStats.
func (p *Proxy) Cluster(name string) upstream.Stats {
	return upstream.Stats{
		ConnectionsActive: p.cxActive.WithLabelValues(name),
		ConnectionsTotal:  p.cxTotal.WithLabelValues(name),
		ConnectFailures:   p.connectFailures.WithLabelValues(name),
		Timeouts:          p.timeouts.WithLabelValues(name),

		OverflowConnections: lazyCounter{p.overflows, []string{name, upstream.LimitConnections}},
		OverflowPending:     lazyCounter{p.overflows, []string{name, upstream.LimitPendingRequests}},
		OverflowRequests:    lazyCounter{p.overflows, []string{name, upstream.LimitRequests}},
		OverflowRetries:     lazyCounter{p.overflows, []string{name, upstream.LimitRetries}},
		Ejections:           lazyCounter{p.ejections, []string{name}},
		HealthCheckFailures: lazyCounter{p.healthCheckFailures, []string{name}},
	}
}

// lazyCounter is the series of labels in vec, created at its first
// increment: events that most clusters never see (an overflow, an
// ejection) add no series until they happen. Each Inc looks the series up.
type lazyCounter struct {
	vec    *prometheus.CounterVec
	labels []string
}

func (c lazyCounter) Inc() { c.vec.WithLabelValues(c.labels...).Inc() }

// Listener is the metrics of one listener serving one route table,
// resolved in advance (Proxy.Listener). Immutable.
type Listener struct {
	noRoute *Route
	routes  []*Route // by router.Route.Index
}

// Listener resolves the metrics of listener serving table: an entry for
// every route, and one for requests no route matched (route label "").
// Call it when the configuration is compiled, not per request.
func (p *Proxy) Listener(listener string, table *router.Table) *Listener {
	byLabel := make(map[string]*Route) // routes with the same label share it
	entry := func(label string, clusters []string) *Route {
		key := label + "\x00" + joinNames(clusters)
		if r := byLabel[key]; r != nil {
			return r
		}
		r := &Route{inFlight: p.inFlight.WithLabelValues(listener, label)}
		for _, c := range clusters {
			r.names = append(r.names, c)
			r.dests = append(r.dests, p.destination(listener, label, c))
		}
		if len(clusters) == 1 {
			r.fallback = r.dests[0]
		} else {
			// Before a cluster is picked (a denial, a redirect...), or for
			// a weighted route: no cluster.
			r.fallback = p.destination(listener, label, "")
		}
		byLabel[key] = r
		return r
	}
	l := &Listener{noRoute: entry("", nil)}
	routes := table.Routes()
	l.routes = make([]*Route, len(routes))
	for i, rt := range routes {
		l.routes[i] = entry(RouteLabel(rt), rt.ClusterNames())
	}
	return l
}

func joinNames(names []string) string {
	out := ""
	for _, n := range names {
		out += n + "\x00"
	}
	return out
}

// RouteLabel is a route's route label: its name, or, for a route without
// one, its virtual host's name (as the tracing's http.route).
func RouteLabel(rt *router.Route) string {
	if rt.Name() != "" {
		return rt.Name()
	}
	return rt.VirtualHost()
}

func (p *Proxy) destination(listener, route, cluster string) *Destination {
	return &Destination{
		p:            p,
		labels:       [3]string{listener, route, cluster},
		requestSize:  p.requestSize.WithLabelValues(listener, route, cluster),
		responseSize: p.responseSize.WithLabelValues(listener, route, cluster),
	}
}

// Route returns the entry of rt (nil: no route matched). It does not
// allocate.
func (l *Listener) Route(rt *router.Route) *Route {
	if rt == nil {
		return l.noRoute
	}
	if i := rt.Index(); i < len(l.routes) {
		return l.routes[i]
	}
	return l.noRoute
}

// Route is the metrics of one route of a listener.
type Route struct {
	inFlight prometheus.Gauge
	names    []string       // the clusters the route forwards to
	dests    []*Destination // by names' order
	fallback *Destination   // before a cluster is picked
}

// Start counts a request in flight on the route; call Done when it ends.
func (r *Route) Start() { r.inFlight.Inc() }

// Done ends what Start began.
func (r *Route) Done() { r.inFlight.Dec() }

// Destination returns the entry of the request sent to cluster: a scan of
// the route's few clusters, without allocation. Before a cluster is picked
// (cluster ""), or for one the route does not name, it is the route's
// cluster when it has one, else the entry with no cluster label.
func (r *Route) Destination(cluster string) *Destination {
	for i, name := range r.names {
		if name == cluster {
			return r.dests[i]
		}
	}
	return r.fallback
}

// Destination is the metrics of the requests of one route to one cluster.
type Destination struct {
	p            *Proxy
	labels       [3]string // listener, route, cluster
	requestSize  prometheus.Observer
	responseSize prometheus.Observer
	classes      [len(codeClasses)]atomic.Pointer[classChildren]
}

type classChildren struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// Observe records one request: its final status (0 when none was
// written), duration and body sizes. It allocates only the first time a
// code class is seen.
func (d *Destination) Observe(status int, elapsed time.Duration, requestBytes, responseBytes int64) {
	class := status / 100
	if class < 1 || class >= len(codeClasses) {
		class = 0
	}
	c := d.classes[class].Load()
	if c == nil {
		c = d.resolve(class)
	}
	c.requests.Inc()
	c.duration.Observe(elapsed.Seconds())
	d.requestSize.Observe(float64(requestBytes))
	d.responseSize.Observe(float64(responseBytes))
}

func (d *Destination) resolve(class int) *classChildren {
	l := d.labels
	c := &classChildren{
		requests: d.p.requests.WithLabelValues(l[0], l[1], l[2], codeClasses[class]),
		duration: d.p.duration.WithLabelValues(l[0], l[1], l[2], codeClasses[class]),
	}
	if !d.classes[class].CompareAndSwap(nil, c) {
		return d.classes[class].Load()
	}
	return c
}

// RequestDurations is the request duration histogram family (tests).
func (p *Proxy) RequestDurations() prometheus.Collector { return p.duration }
