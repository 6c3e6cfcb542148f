package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// loadLoop runs keep-alive clients against url until stopped, counting
// replies per service and every failure.
type loadLoop struct {
	mu       sync.Mutex
	last     map[int]string // worker -> service of its last reply
	counts   map[string]int
	failures []string
	total    atomic.Int64
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// startLoad starts workers looping GETs of url with headers ("Name: value").
func startLoad(t *testing.T, url string, workers int, headers ...string) *loadLoop {
	ctx, cancel := context.WithCancel(context.Background())
	l := &loadLoop{counts: map[string]int{}, last: map[int]string{}, cancel: cancel}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				r, err := get(url, headers...)
				l.total.Add(1)
				l.mu.Lock()
				switch {
				case err != nil:
					l.failures = append(l.failures, err.Error())
				case r.status != 200:
					l.failures = append(l.failures, fmt.Sprintf("%d %s", r.status, strings.TrimSpace(r.body)))
				default:
					l.counts[r.reply.Service]++
					l.last[w] = r.reply.Service
				}
				l.mu.Unlock()
			}
		}()
	}
	t.Cleanup(l.stop)
	return l
}

func (l *loadLoop) stop() { l.cancel(); l.wg.Wait() }

// allOn reports whether every worker's latest reply came from svc.
func (l *loadLoop) allOn(svc string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for w, s := range l.last {
		if s != svc {
			return fmt.Errorf("worker %d last served by %q", w, s)
		}
	}
	return nil
}

func (l *loadLoop) check(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("%d requests, by service %v", l.total.Load(), l.counts)
	if len(l.failures) > 0 {
		t.Errorf("%d failed requests, first: %v", len(l.failures), l.failures[:min(5, len(l.failures))])
	}
}

// TestPolicyEditUnderLoad edits the route under a looping keep-alive client:
// the change takes effect within 2 s with zero failed requests; an invalid
// edit is rejected, reported, and traffic keeps flowing on the route's last
// good version.
func TestPolicyEditUnderLoad(t *testing.T) {
	t.Parallel()
	c, url := startBlueGreen(t)

	load := startLoad(t, url, 4)
	eventually(t, 30*time.Second, "load running", func() error {
		if load.total.Load() < 100 {
			return fmt.Errorf("%d requests so far", load.total.Load())
		}
		return nil
	})

	edited := time.Now()
	c.policy("routes.yaml", routeTo("green"))
	eventually(t, 20*time.Second, "edit takes effect", func() error { return load.allOn("green") })
	t.Logf("edit took effect after %s", time.Since(edited).Round(time.Millisecond))

	before, _ := c.status()
	// An invalid route is rejected: its last good version serves.
	c.policy("routes.yaml", strings.Replace(routeTo("blue"), "    - backendRefs:", "    - filters: [{type: Nope}]\n      backendRefs:", 1))
	eventually(t, 30*time.Second, "invalid edit reported", func() error {
		s, err := c.status()
		if err != nil {
			return err
		}
		if !strings.Contains(s.LastError, "routes.yaml:") || !strings.Contains(s.LastError, `"Nope"`) {
			return fmt.Errorf("lastError = %q", s.LastError)
		}
		if s.Version != before.Version {
			return fmt.Errorf("version changed from %s to %s on an invalid edit", before.Version, s.Version)
		}
		return nil
	})
	n := load.total.Load()
	eventually(t, 30*time.Second, "traffic keeps flowing on the old config", func() error {
		if load.total.Load() < n+200 {
			return fmt.Errorf("only %d requests since", load.total.Load()-n)
		}
		return load.allOn("green")
	})

	c.policy("routes.yaml", routeTo("blue"))
	eventually(t, 20*time.Second, "fixed edit takes effect", func() error { return load.allOn("blue") })
	eventually(t, 20*time.Second, "error cleared", func() error {
		s, err := c.status()
		if err != nil {
			return err
		}
		if s.LastError != "" {
			return fmt.Errorf("lastError still %q", s.LastError)
		}
		return nil
	})
	load.stop()
	load.check(t)
}
