package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// TCP is the connection metrics of a proxy's tcp_proxy listeners (a
// gateway's TCP and TLS-passthrough ports): connections opened and
// active, bytes each way, by listener and destination cluster. A series
// appears at its first connection.
type TCP struct {
	opened   *prometheus.CounterVec
	active   *prometheus.GaugeVec
	received *prometheus.CounterVec
	sent     *prometheus.CounterVec
}

// NewTCP creates the TCP metric families and registers them in reg.
func NewTCP(reg prometheus.Registerer) *TCP {
	labels := []string{LabelListener, LabelCluster}
	t := &TCP{
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_proxy_tcp_connections_total",
			Help: "Connections proxied by tcp_proxy, by listener and destination cluster.",
		}, labels),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshgate_proxy_tcp_connections_active",
			Help: "Connections being proxied by tcp_proxy, by listener and destination cluster.",
		}, labels),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_proxy_tcp_received_bytes_total",
			Help: "Bytes received from downstream clients of tcp_proxy connections (sent upstream), by listener and destination cluster.",
		}, labels),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_proxy_tcp_sent_bytes_total",
			Help: "Bytes sent to downstream clients of tcp_proxy connections (received from upstream), by listener and destination cluster.",
		}, labels),
	}
	reg.MustRegister(t.opened, t.active, t.received, t.sent)
	return t
}

// TCPListener is the TCP metrics of one listener.
type TCPListener struct {
	t        *TCP
	listener string
}

// Listener returns the metrics of listener; nil-safe receivers: a nil *TCP
// gives a *TCPListener that counts nothing.
func (t *TCP) Listener(listener string) *TCPListener {
	return &TCPListener{t: t, listener: listener}
}

// TCPDestination is the TCP metrics of one listener and cluster.
type TCPDestination struct {
	opened, received, sent prometheus.Counter
	active                 prometheus.Gauge
}

// Cluster returns the metrics of the connections to cluster.
func (l *TCPListener) Cluster(cluster string) *TCPDestination {
	if l == nil || l.t == nil {
		return nil
	}
	return &TCPDestination{
		opened:   l.t.opened.WithLabelValues(l.listener, cluster),
		active:   l.t.active.WithLabelValues(l.listener, cluster),
		received: l.t.received.WithLabelValues(l.listener, cluster),
		sent:     l.t.sent.WithLabelValues(l.listener, cluster),
	}
}

// Opened counts a connection opened (and active).
func (d *TCPDestination) Opened() {
	if d != nil {
		d.opened.Inc()
		d.active.Inc()
	}
}

// Closed counts an active connection closed.
func (d *TCPDestination) Closed() {
	if d != nil {
		d.active.Dec()
	}
}

// Bytes adds a connection's bytes: received from the client, sent to it.
func (d *TCPDestination) Bytes(received, sent int64) {
	if d != nil {
		d.received.Add(float64(received))
		d.sent.Add(float64(sent))
	}
}
