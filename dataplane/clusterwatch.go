package dataplane

import (
	"maps"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgate/meshgate/dataplane/upstream"
)

// WatchClusters registers fn, called with the proxy's live clusters by
// name (those its listeners may use) at once and after every update that
// changes them: how what runs beside the proxy (a sidecar's DNS resolver)
// follows CDS. fn runs with the proxy's update lock held, never on the
// request path: it must be quick and must not call the proxy. The map is
// fn's to keep; the clusters must not be closed. A proxy with no watcher
// does no work for them.
func (p *Proxy) WatchClusters(fn func(clusters map[string]*upstream.Cluster)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clusterWatchers = append(p.clusterWatchers, fn)
	fn(p.liveClusters())
}

// notifyClusterWatchers calls the WatchClusters hooks when the live
// clusters are not those of prev.
func (p *Proxy) notifyClusterWatchers(prev map[string]*liveCluster) {
	if len(p.clusterWatchers) == 0 || maps.Equal(prev, p.clusters) {
		return
	}
	clusters := p.liveClusters()
	for _, fn := range p.clusterWatchers {
		fn(clusters)
	}
}

func (p *Proxy) liveClusters() map[string]*upstream.Cluster {
	out := make(map[string]*upstream.Cluster, len(p.clusters))
	for name, lc := range p.clusters {
		out[name] = lc.cluster
	}
	return out
}

// MetricsRegisterer is the registry of the proxy's GET /metrics: what runs
// beside the proxy registers its metrics there.
func (p *Proxy) MetricsRegisterer() prometheus.Registerer { return p.metrics.registry }
