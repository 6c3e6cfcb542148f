package dataplane

import (
	"context"
	"sync/atomic"

	"github.com/meshgate/meshgate/dataplane/tracing"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// tracers are the proxy's live Tracers, one per distinct tracing settings
// of its listeners (HttpConnectionManager.tracing), and the collector
// cluster of each live Tracer (collectors, guarded by Proxy.mu).
type tracers struct {
	sinks[*tracing.Tracer]
	collectors map[*tracing.Tracer]*collector
}

// collector is the collector cluster of one Tracer, read by its exporter
// without Proxy.mu when it connects. A live Tracer follows the cluster of
// its settings' name (syncTracers); a retired one keeps the cluster it had
// when it was retired, so that the spans of the requests it still traces
// go where its exporter's protocol is served, not to the cluster that name
// has become (meshgate_tracing_collector is one name for both protocols:
// after a change from OTLP/HTTP to OTLP/gRPC it is the gRPC port).
type collector struct {
	protocol tracing.Protocol
	cluster  atomic.Pointer[upstream.Cluster]
}

// endpoint is the tracing.Resolver of the Tracer: the next endpoint of its
// collector cluster.
func (c *collector) endpoint(string) (string, bool) {
	cl := c.cluster.Load()
	if cl == nil {
		return "", false
	}
	return cl.Next()
}

// fits tells whether cl speaks what the exporter sends: HTTP/2 for
// OTLP/gRPC, HTTP/1.1 for OTLP/HTTP (the exporter's own transport).
func (c *collector) fits(cl *upstream.Cluster) bool {
	if c.protocol == tracing.GRPC {
		return cl.Protocol() == upstream.H2C
	}
	return cl.Protocol() == upstream.HTTP1
}

// follow makes cl the Tracer's collector cluster, unless the cluster it
// has fits its protocol and cl does not: the cluster of the name changed
// for another protocol before the listener's tracing did (CDS applies
// before LDS), and the Tracer, about to be retired, keeps exporting where
// its protocol is served. A nil cl (the cluster is gone) is kept out the
// same way while the one it has fits.
func (c *collector) follow(cl *upstream.Cluster) {
	old := c.cluster.Load()
	if old == cl {
		return
	}
	if old != nil && c.fits(old) && (cl == nil || !c.fits(cl)) {
		return
	}
	c.cluster.Store(cl)
}

// tracerFor returns the Tracer of s, built when first needed with the
// collector cluster of clusters; nil for nil s. p.mu is held.
func (p *Proxy) tracerFor(s *tracing.Settings, clusters map[string]*upstream.Cluster) *tracing.Tracer {
	if s == nil {
		return nil
	}
	t, err := p.tracers.get(s.Key(), func() (*tracing.Tracer, error) {
		c := &collector{protocol: s.Protocol}
		c.follow(clusters[s.Cluster])
		t, err := tracing.New(s, c.endpoint, tracing.Options{}, p.logger)
		if err != nil {
			return nil, err
		}
		if p.tracers.collectors == nil {
			p.tracers.collectors = make(map[*tracing.Tracer]*collector)
		}
		p.tracers.collectors[t] = c
		return t, nil
	})
	if err != nil {
		p.logger.Error("tracing disabled: building the tracer failed", "error", err)
		return nil
	}
	return t
}

// syncTracers points the live Tracers at their collector clusters in
// clusters and retires the Tracers that no listener uses any more (their
// queued spans are exported in the background, to the collector cluster
// they had). p.mu is held.
func (p *Proxy) syncTracers(clusters map[string]*upstream.Cluster) {
	used := make(map[string]bool)
	for _, spec := range p.httpServers {
		if spec != nil && spec.tracing != nil {
			used[spec.tracing.Key()] = true
		}
	}
	p.tracers.keep(used, p.logger)
	for t, c := range p.tracers.collectors {
		if live, ok := p.tracers.byKey[t.Settings().Key()]; !ok || live != t {
			delete(p.tracers.collectors, t) // retired: its cluster stays
			continue
		}
		c.follow(clusters[t.Settings().Cluster])
	}
}

// closeTracers retires every Tracer and waits for their last exports, which
// end with ctx (the stop's). p.mu is not held.
func (p *Proxy) closeTracers(ctx context.Context) {
	p.mu.Lock()
	p.tracers.retireAll(ctx, p.logger)
	clear(p.tracers.collectors)
	p.mu.Unlock()
	p.tracers.wait()
}

// tracingStats adds up the counters of every Tracer, live or retired. p.mu
// is held.
func (p *Proxy) tracingStats() map[string]any {
	open, exported, dropped := p.tracers.totals()
	return map[string]any{
		"tracers":        open,
		"spans_exported": exported,
		"spans_dropped":  dropped,
	}
}
