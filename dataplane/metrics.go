package dataplane

import (
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshgate/meshgate/dataplane/filters/rbac"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/metrics"
)

// proxyMetrics are the proxy's Prometheus metrics (GET /metrics on the
// admin port; docs/observability.md): the request metrics resolved per
// listener (dataplane/metrics), xDS update counters, and the state read at
// scrape time by stateCollector.
type proxyMetrics struct {
	registry *prometheus.Registry
	requests *metrics.Proxy
	tcp      *metrics.TCP
	acks     *prometheus.CounterVec
	nacks    *prometheus.CounterVec
}

func newProxyMetrics(p *Proxy) *proxyMetrics {
	reg := prometheus.NewRegistry()
	m := &proxyMetrics{
		registry: reg,
		requests: metrics.NewProxy(reg),
		tcp:      metrics.NewTCP(reg),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_proxy_xds_updates_accepted_total",
			Help: "xDS responses applied (ACKed), by resource type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_proxy_xds_nacks_total",
			Help: "xDS responses rejected (NACKed), by resource type.",
		}, []string{"type"}),
	}
	reg.MustRegister(m.acks, m.nacks, stateCollector{p},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// handler serves the registry in the Prometheus text format, or OpenMetrics
// when the scraper asks for it (Accept).
func (m *proxyMetrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

var (
	descXDSConnected = prometheus.NewDesc("meshgate_proxy_xds_connected",
		"1 when the proxy has an xDS stream to a control plane that delivered a response, else 0.", nil, nil)
	descXDSVersion = prometheus.NewDesc("meshgate_proxy_xds_config_info",
		"The version last applied of each xDS resource type (value 1).", []string{"type", "version"}, nil)
	descReady = prometheus.NewDesc("meshgate_proxy_ready",
		"1 when the proxy applied its listeners and is not draining (GET /ready answers 200), else 0.", nil, nil)
	descRBACDenied = prometheus.NewDesc("meshgate_proxy_rbac_denials_total",
		"Requests denied by the RBAC filters, by policy (the rule that denied them, <namespace>/<policy>/<rule>).", []string{"policy"}, nil)
	descConsumerRequests = prometheus.NewDesc("meshgate_proxy_consumer_requests_total",
		"Authenticated requests of declared consumers (API key clients, basic-auth users, JWT subjects a provider declares), by kind (apikey, basic, jwt) and consumer.",
		[]string{"kind", "consumer"}, nil)
	descConsumerRateLimited = prometheus.NewDesc("meshgate_proxy_consumer_rate_limited_total",
		"Requests of declared consumers refused with 429 by a local or global rate limit, by kind (apikey, basic, jwt) and consumer.",
		[]string{"kind", "consumer"}, nil)
	descCertExpiry = prometheus.NewDesc("meshgate_proxy_certificate_expiry_timestamp_seconds",
		"When the proxy's current certificate expires, in Unix seconds.", nil, nil)
	descSpansExported = prometheus.NewDesc("meshgate_proxy_tracing_spans_exported_total",
		"Tracing spans exported to the collector.", nil, nil)
	descSpansDropped = prometheus.NewDesc("meshgate_proxy_tracing_spans_dropped_total",
		"Tracing spans dropped (queue full or export failed).", nil, nil)
	descDownstreamActive = prometheus.NewDesc("meshgate_proxy_downstream_connections_active",
		"Open downstream connections, by listener.", []string{"listener"}, nil)
)

// stateCollector reads the proxy's state at scrape time: what it would
// cost to keep up to date on every change (xDS versions, the filters'
// denial counters, tracing counters, the certificate) is read once per
// scrape instead.
type stateCollector struct{ p *Proxy }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descXDSConnected, descXDSVersion, descReady, descRBACDenied,
		descCertExpiry, descSpansExported, descSpansDropped, descDownstreamActive, descConsumerRequests, descConsumerRateLimited} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.p
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(descXDSConnected, boolValue(p.client.Connected()))
	gauge(descReady, boolValue(p.Ready() && !p.Draining()))
	p.mu.Lock()
	for typeURL, version := range p.state.versions {
		gauge(descXDSVersion, 1, typeName(typeURL), version)
	}
	active := map[string]int{}
	for _, s := range p.servers {
		open, _ := s.limiter.Counts()
		active[s.listener] += open
	}
	tracing := p.tracingStats()
	p.mu.Unlock()
	for listener, n := range active {
		gauge(descDownstreamActive, float64(n), listener)
	}
	for policy, n := range p.filterStats.Counters(rbac.StatDenied).Snapshot() {
		counter(descRBACDenied, float64(n), policy)
	}
	for desc, family := range map[*prometheus.Desc]string{
		descConsumerRequests:    httpfilter.StatConsumerRequests,
		descConsumerRateLimited: httpfilter.StatConsumerRateLimited,
	} {
		for key, n := range p.filterStats.Counters(family).Snapshot() {
			if kind, consumer, ok := strings.Cut(key, "/"); ok {
				counter(desc, float64(n), kind, consumer)
			}
		}
	}
	counter(descSpansExported, float64(tracing["spans_exported"].(uint64)))
	counter(descSpansDropped, float64(tracing["spans_dropped"].(uint64)))
	if id := p.identitySummary(); id != nil && id.NotAfter != nil {
		gauge(descCertExpiry, float64(id.NotAfter.Unix()))
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
