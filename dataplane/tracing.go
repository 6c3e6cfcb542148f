package dataplane

import (
	"context"
	"sync/atomic"

	"github.com/meshgate/meshgate/dataplane/tracing"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// tracers are the proxy's live Tracers, one per distinct tracing settings
// of its listeners (HttpConnectionManager.tracing), and the clusters their
// exporters resolve the collector from (read by exporters without
// Proxy.mu).
type tracers struct {
	sinks[*tracing.Tracer]
	clusters atomic.Pointer[map[string]*upstream.Cluster]
}

// tracerFor returns the Tracer of s, built when first needed; nil for nil
// s. p.mu is held.
func (p *Proxy) tracerFor(s *tracing.Settings) *tracing.Tracer {
	if s == nil {
		return nil
	}
	t, err := p.tracers.get(s.Key(), func() (*tracing.Tracer, error) {
		return tracing.New(s, p.collectorEndpoint, tracing.Options{}, p.logger)
	})
	if err != nil {
		p.logger.Error("tracing disabled: building the tracer failed", "error", err)
		return nil
	}
	return t
}

// collectorEndpoint is the tracing.Resolver of the proxy's Tracers: the next
// endpoint of the live cluster of that name.
func (p *Proxy) collectorEndpoint(cluster string) (string, bool) {
	live := p.tracers.clusters.Load()
	if live == nil {
		return "", false
	}
	c := (*live)[cluster]
	if c == nil {
		return "", false
	}
	return c.Next()
}

// syncTracers publishes the live clusters to the exporters and retires the
// Tracers that no listener uses any more (their queued spans are exported
// in the background). p.mu is held.
func (p *Proxy) syncTracers(clusters map[string]*upstream.Cluster) {
	p.tracers.clusters.Store(&clusters)
	used := make(map[string]bool)
	for _, spec := range p.httpServers {
		if spec != nil && spec.tracing != nil {
			used[spec.tracing.Key()] = true
		}
	}
	p.tracers.keep(used, p.logger)
}

// closeTracers retires every Tracer and waits for their last exports, which
// end with ctx (the stop's). p.mu is not held.
func (p *Proxy) closeTracers(ctx context.Context) {
	p.mu.Lock()
	p.tracers.retireAll(ctx, p.logger)
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
