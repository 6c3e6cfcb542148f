package dataplane

import (
	"slices"
	"testing"

	"github.com/meshgate/meshgate/dataplane/upstream"
)

// TestWatchClusters: a cluster watcher gets the live clusters at once and
// after each update that changes them (a cluster still routed to stays
// live until the routes leave it), not after one that changes only
// endpoints.
func TestWatchClusters(t *testing.T) {
	t.Parallel()
	p := newApplyProxy(t)
	var calls [][]string
	p.WatchClusters(func(clusters map[string]*upstream.Cluster) {
		names := make([]string, 0, len(clusters))
		for name, c := range clusters {
			if c.Name() != name {
				t.Errorf("cluster %q under name %q", c.Name(), name)
			}
			names = append(names, name)
		}
		slices.Sort(names)
		calls = append(calls, names)
	})
	cfg := config{listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend(t, "a"), version: "v1"}
	applySnapshot(t, p, cfg.build(t), "v1", allTypes...)
	cfg.version, cfg.backend = "v2", backend(t, "b") // endpoints only
	applySnapshot(t, p, cfg.build(t), "v2", allTypes...)
	cfg.version, cfg.cluster = "v3", "default/c:80"
	applySnapshot(t, p, cfg.build(t), "v3", allTypes...)

	p.mu.Lock()
	defer p.mu.Unlock()
	// v3's CDS update adds c while the serving routes still use a (kept),
	// then its route update drops a.
	want := [][]string{{}, {"default/a:80"}, {"default/a:80", "default/c:80"}, {"default/c:80"}}
	if !slices.EqualFunc(calls, want, slices.Equal) {
		t.Errorf("watcher calls %v; want %v", calls, want)
	}
}
