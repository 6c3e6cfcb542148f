package controlplane

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshgate/meshgate/policy"
)

// cpMetrics are the control plane's Prometheus metrics, served on the
// admin GET /metrics behind the admin token like /status
// (docs/observability.md): the xDS server's pushes, build failures and
// NACKs as they happen (xds.Observer), and the rest read at scrape time.
type cpMetrics struct {
	registry     *prometheus.Registry
	pushes       *prometheus.CounterVec
	pushDuration *prometheus.HistogramVec
	buildErrors  prometheus.Counter
	nacks        *prometheus.CounterVec
}

func newCPMetrics(cp *ControlPlane) *cpMetrics {
	reg := prometheus.NewRegistry()
	m := &cpMetrics{
		registry: reg,
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_controlplane_pushes_total",
			Help: "Model changes pushed to the connected proxies, by kind (full: every proxy's configuration built again; endpoints: endpoints only).",
		}, []string{"kind"}),
		pushDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshgate_controlplane_push_duration_seconds",
			Help:    "Time to build and set the connected proxies' configurations for a model change, by kind.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"kind"}),
		buildErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshgate_controlplane_translation_errors_total",
			Help: "Proxy configurations that could not be translated or encoded (the proxy keeps the one it has).",
		}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_controlplane_nacks_received_total",
			Help: "Configurations the proxies rejected (NACKs), by xDS type.",
		}, []string{"type"}),
	}
	reg.MustRegister(m.pushes, m.pushDuration, m.buildErrors, m.nacks, cpCollector{cp},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Pushed implements xds.Observer.
func (m *cpMetrics) Pushed(kind string, elapsed time.Duration, _ int) {
	m.pushes.WithLabelValues(kind).Inc()
	m.pushDuration.WithLabelValues(kind).Observe(elapsed.Seconds())
}

// BuildFailed implements xds.Observer.
func (m *cpMetrics) BuildFailed() { m.buildErrors.Inc() }

// Nacked implements xds.Observer.
func (m *cpMetrics) Nacked(typeURL string) { m.nacks.WithLabelValues(shortTypeName(typeURL)).Inc() }

func (m *cpMetrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

// shortTypeName is the last element of an xDS type URL (Cluster, Listener...).
func shortTypeName(typeURL string) string {
	return typeURL[strings.LastIndexByte(typeURL, '.')+1:]
}

var (
	descProxies = prometheus.NewDesc("meshgate_controlplane_proxies_connected",
		"Proxies connected over xDS, by role (gateway, sidecar).", []string{"role"}, nil)
	descProxiesNacking = prometheus.NewDesc("meshgate_controlplane_proxies_nacking",
		"Connected proxies whose last configuration of a type they rejected, by xDS type.", []string{"type"}, nil)
	descRejected = prometheus.NewDesc("meshgate_controlplane_rejected_resources",
		"Policy resources not accepted as written in the served policy (rejected, last good kept, or failing closed), by kind.", []string{"kind"}, nil)
	descPolicyErrors = prometheus.NewDesc("meshgate_controlplane_policy_errors",
		"Errors of the last policy evaluation.", nil, nil)
	descServing = prometheus.NewDesc("meshgate_controlplane_serving",
		"1 once the first configuration was pushed, else 0.", nil, nil)
	descDiscoverySynced = prometheus.NewDesc("meshgate_controlplane_discovery_synced",
		"1 when the service discovery (the Consul catalog watch) delivered its first snapshot, 0 before; absent without discovery.", nil, nil)
	descPolicySourceFailing = prometheus.NewDesc("meshgate_controlplane_policy_source_failing",
		"1 when the last reload could not read the policy source (Consul KV, files), else 0.", nil, nil)
	descCertsIssued = prometheus.NewDesc("meshgate_controlplane_certificates_issued_total",
		"Certificates the CA service issued (enrolments and renewals).", nil, nil)
)

// cpCollector reads the control plane's state at scrape time.
type cpCollector struct{ cp *ControlPlane }

func (c cpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descProxies, descProxiesNacking, descRejected, descPolicyErrors,
		descServing, descDiscoverySynced, descPolicySourceFailing, descCertsIssued} {
		ch <- d
	}
}

func (c cpCollector) Collect(ch chan<- prometheus.Metric) {
	cp := c.cp
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	byRole := map[string]int{"gateway": 0, "sidecar": 0}
	nacking := map[string]int{}
	for _, p := range cp.xds.Proxies() {
		byRole[p.Role]++
		for typeURL := range p.Nacked {
			nacking[shortTypeName(typeURL)]++
		}
	}
	for role, n := range byRole {
		gauge(descProxies, float64(n), role)
	}
	for typ, n := range nacking {
		gauge(descProxiesNacking, float64(n), typ)
	}
	cp.mu.Lock()
	rejected := map[string]int{}
	errs := 0
	if r := cp.result; r != nil {
		errs = len(r.Errors)
		for _, s := range r.Statuses {
			if s.State != policy.StateAccepted {
				rejected[s.Kind]++
			}
		}
	}
	serving := cp.configServed
	cp.mu.Unlock()
	for kind, n := range rejected {
		gauge(descRejected, float64(n), kind)
	}
	gauge(descPolicyErrors, float64(errs))
	gauge(descServing, boolGauge(serving))
	if cp.opts.Discovery != nil {
		gauge(descDiscoverySynced, boolGauge(cp.discoverySynced.Load()))
	}
	gauge(descPolicySourceFailing, boolGauge(cp.sourceFailing.Load()))
	ch <- prometheus.MustNewConstMetric(descCertsIssued, prometheus.CounterValue, float64(cp.issued.total()))
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
