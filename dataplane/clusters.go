package dataplane

import (
	"encoding/json"
	"net/http"

	"github.com/meshgate/meshgate/dataplane/upstream"
)

// ClustersDump is the JSON shape of the admin's GET /clusters: each
// upstream cluster the proxy uses, its circuit breaker, and each endpoint's
// health from discovery, active check state, outlier ejection, weight,
// requests in flight and open connections (docs/traffic.md).
type ClustersDump struct {
	Clusters []upstream.ClusterStatus `json:"clusters"`
}

// Clusters reports the state of the proxy's clusters, by name.
func (p *Proxy) Clusters() ClustersDump {
	p.mu.Lock()
	live := make([]*upstream.Cluster, 0, len(p.clusters))
	for _, name := range sortedKeys(p.clusters) {
		live = append(live, p.clusters[name].cluster)
	}
	p.mu.Unlock()
	dump := ClustersDump{Clusters: make([]upstream.ClusterStatus, 0, len(live))}
	for _, c := range live {
		dump.Clusters = append(dump.Clusters, c.Status())
	}
	return dump
}

// serveClusters answers GET /clusters.
func (p *Proxy) serveClusters(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(p.Clusters())
}
