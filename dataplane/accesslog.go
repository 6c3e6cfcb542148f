package dataplane

import (
	"context"
	"sync"

	"github.com/meshgate/meshgate/dataplane/accesslog"
)

// accessLogs are the proxy's access-log Writers, one per path its
// listeners log to (HttpConnectionManager.access_log). byPath is guarded
// by Proxy.mu.
type accessLogs struct {
	byPath map[string]*accesslog.Writer
	// retired adds up the counters of Writers no longer used, so that the
	// /stats counters never go down.
	retiredMu sync.Mutex
	retired   accesslog.Stats
	wg        sync.WaitGroup // closing Writers
}

// accessLogsFor returns the access logs of a listener's settings, opening
// the Writer of each path when first needed; nil for none. A path that
// cannot be opened is logged and skipped. p.mu is held.
func (p *Proxy) accessLogsFor(settings []*accesslog.Settings) []accesslog.Log {
	if len(settings) == 0 {
		return nil
	}
	out := make([]accesslog.Log, 0, len(settings))
	for _, s := range settings {
		w := p.accessLogs.byPath[s.Path]
		if w == nil {
			var err error
			if w, err = accesslog.NewWriter(s.Path, accesslog.Options{}, p.logger); err != nil {
				p.logger.Error("access log disabled: opening it failed", "path", s.Path, "error", err)
				continue
			}
			if p.accessLogs.byPath == nil {
				p.accessLogs.byPath = make(map[string]*accesslog.Writer)
			}
			p.accessLogs.byPath[s.Path] = w
		}
		out = append(out, accesslog.Log{Settings: s, Writer: w})
	}
	return out
}

// syncAccessLogs closes the Writers no listener logs to any more (their
// queued lines are written in the background). p.mu is held.
func (p *Proxy) syncAccessLogs() {
	used := make(map[string]bool)
	for _, s := range p.servers {
		if spec := p.state.listeners[s.listener]; spec != nil {
			for _, a := range spec.accessLogs {
				used[a.Path] = true
			}
		}
	}
	for path, w := range p.accessLogs.byPath {
		if !used[path] {
			delete(p.accessLogs.byPath, path)
			p.retireAccessLog(context.Background(), w)
		}
	}
}

// retireAccessLog closes w in the background, keeping its counters; its
// last lines are written until ctx ends, or tracerShutdownTimeout.
func (p *Proxy) retireAccessLog(ctx context.Context, w *accesslog.Writer) {
	p.accessLogs.wg.Go(func() {
		ctx, cancel := context.WithTimeout(ctx, tracerShutdownTimeout)
		defer cancel()
		if err := w.Close(ctx); err != nil {
			p.logger.Debug("access log close", "path", w.Path(), "error", err)
		}
		st := w.Stats()
		p.accessLogs.retiredMu.Lock()
		p.accessLogs.retired.Written += st.Written
		p.accessLogs.retired.Dropped += st.Dropped
		p.accessLogs.retiredMu.Unlock()
	})
}

// closeAccessLogs closes every Writer and waits for their last lines,
// until ctx ends. p.mu is not held.
func (p *Proxy) closeAccessLogs(ctx context.Context) {
	p.mu.Lock()
	for path, w := range p.accessLogs.byPath {
		delete(p.accessLogs.byPath, path)
		p.retireAccessLog(ctx, w)
	}
	p.mu.Unlock()
	p.accessLogs.wg.Wait()
}

// accessLogStats adds up the counters of every Writer, open or closed. p.mu
// is held.
func (p *Proxy) accessLogStats() map[string]any {
	p.accessLogs.retiredMu.Lock()
	total := p.accessLogs.retired
	p.accessLogs.retiredMu.Unlock()
	for _, w := range p.accessLogs.byPath {
		st := w.Stats()
		total.Written += st.Written
		total.Dropped += st.Dropped
	}
	return map[string]any{
		"files":         len(p.accessLogs.byPath),
		"lines_written": total.Written,
		"lines_dropped": total.Dropped,
	}
}
