package dataplane

import (
	"context"

	"github.com/meshgate/meshgate/dataplane/accesslog"
)

// accessLogs are the proxy's access-log Writers, one per path its
// listeners log to (HttpConnectionManager.access_log).
type accessLogs = sinks[*accesslog.Writer]

// accessLogsFor returns the access logs of a listener's settings, opening
// the Writer of each path when first needed; nil for none. A path that
// cannot be opened is logged and skipped. p.mu is held.
func (p *Proxy) accessLogsFor(settings []*accesslog.Settings) []accesslog.Log {
	if len(settings) == 0 {
		return nil
	}
	out := make([]accesslog.Log, 0, len(settings))
	for _, s := range settings {
		w, err := p.accessLogs.get(s.Path, func() (*accesslog.Writer, error) {
			return accesslog.NewWriter(s.Path, accesslog.Options{}, p.logger)
		})
		if err != nil {
			p.logger.Error("access log disabled: opening it failed", "path", s.Path, "error", err)
			continue
		}
		out = append(out, accesslog.Log{Settings: s, Writer: w})
	}
	return out
}

// syncAccessLogs closes the Writers no listener logs to any more (their
// queued lines are written in the background). p.mu is held.
func (p *Proxy) syncAccessLogs() {
	used := make(map[string]bool)
	for _, spec := range p.httpServers {
		if spec != nil {
			for _, a := range spec.accessLogs {
				used[a.Path] = true
			}
			if spec.capture != nil {
				for _, c := range spec.capture.l4.chains {
					for _, a := range c.proxy.accessLogs {
						used[a.Path] = true
					}
				}
			}
		}
	}
	p.accessLogs.keep(used, p.logger)
}

// closeAccessLogs closes every Writer and waits for their last lines,
// until ctx ends. p.mu is not held.
func (p *Proxy) closeAccessLogs(ctx context.Context) {
	p.mu.Lock()
	p.accessLogs.retireAll(ctx, p.logger)
	p.mu.Unlock()
	p.accessLogs.wait()
}

// accessLogStats adds up the counters of every Writer, open or closed. p.mu
// is held.
func (p *Proxy) accessLogStats() map[string]any {
	files, written, dropped := p.accessLogs.totals()
	return map[string]any{
		"files":         files,
		"lines_written": written,
		"lines_dropped": dropped,
	}
}
