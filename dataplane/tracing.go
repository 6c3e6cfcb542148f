package dataplane

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshgate/meshgate/dataplane/tracing"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// tracerShutdownTimeout bounds the export of a retired Tracer's last spans.
const tracerShutdownTimeout = 5 * time.Second

// tracers are the proxy's live Tracers, one per distinct tracing settings
// of its listeners (HttpConnectionManager.tracing), and the clusters their
// exporters resolve the collector from. byKey is guarded by Proxy.mu; the
// rest is read by exporters and /stats without it.
type tracers struct {
	byKey    map[string]*tracing.Tracer
	clusters atomic.Pointer[map[string]*upstream.Cluster]
	// retired adds up the counters of Tracers no longer used, so that the
	// /stats counters never go down.
	retiredMu sync.Mutex
	retired   tracing.Stats
	wg        sync.WaitGroup // retiring Tracers
}

// tracerFor returns the Tracer of s, built when first needed; nil for nil
// s. p.mu is held.
func (p *Proxy) tracerFor(s *tracing.Settings) *tracing.Tracer {
	if s == nil {
		return nil
	}
	key := s.Key()
	if t := p.tracers.byKey[key]; t != nil {
		return t
	}
	t, err := tracing.New(s, p.collectorEndpoint, tracing.Options{}, p.logger)
	if err != nil {
		p.logger.Error("tracing disabled: building the tracer failed", "error", err)
		return nil
	}
	if p.tracers.byKey == nil {
		p.tracers.byKey = make(map[string]*tracing.Tracer)
	}
	p.tracers.byKey[key] = t
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
	for _, s := range p.servers {
		if spec := p.state.listeners[s.listener]; spec != nil && spec.tracing != nil {
			used[spec.tracing.Key()] = true
		}
	}
	for key, t := range p.tracers.byKey {
		if !used[key] {
			delete(p.tracers.byKey, key)
			p.retireTracer(context.Background(), t)
		}
	}
}

// retireTracer shuts t down in the background, keeping its counters; its
// last export ends with ctx, or after tracerShutdownTimeout.
func (p *Proxy) retireTracer(ctx context.Context, t *tracing.Tracer) {
	p.tracers.wg.Go(func() {
		ctx, cancel := context.WithTimeout(ctx, tracerShutdownTimeout)
		defer cancel()
		if err := t.Shutdown(ctx); err != nil {
			p.logger.Debug("tracer shutdown", "error", err)
		}
		st := t.Stats()
		p.tracers.retiredMu.Lock()
		p.tracers.retired.Exported += st.Exported
		p.tracers.retired.Dropped += st.Dropped
		p.tracers.retiredMu.Unlock()
	})
}

// closeTracers retires every Tracer and waits for their last exports, which
// end with ctx (the stop's). p.mu is not held.
func (p *Proxy) closeTracers(ctx context.Context) {
	p.mu.Lock()
	for key, t := range p.tracers.byKey {
		delete(p.tracers.byKey, key)
		p.retireTracer(ctx, t)
	}
	p.mu.Unlock()
	p.tracers.wg.Wait()
}

// tracingStats adds up the counters of every Tracer, live or retired. p.mu
// is held.
func (p *Proxy) tracingStats() map[string]any {
	p.tracers.retiredMu.Lock()
	total := p.tracers.retired
	p.tracers.retiredMu.Unlock()
	for _, t := range p.tracers.byKey {
		st := t.Stats()
		total.Exported += st.Exported
		total.Dropped += st.Dropped
	}
	return map[string]any{
		"tracers":        len(p.tracers.byKey),
		"spans_exported": total.Exported,
		"spans_dropped":  total.Dropped,
	}
}
