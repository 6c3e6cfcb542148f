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

const reloadServices = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners: [{name: http, protocol: HTTP, port: ${gw.port}}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: blue}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${blue}"}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: green}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${green}"}]
`

func routeTo(backend string) string {
	return `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app}
spec:
  parentRefs: [{name: edge}]
  rules:
    - backendRefs: [{name: ` + backend + `, port: 80}]
`
}

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
// edit is rejected, reported, and traffic keeps flowing on the old config.
func TestPolicyEditUnderLoad(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("services.yaml", reloadServices)
	c.policy("routes.yaml", routeTo("blue"))
	c.app("blue", "blue", "v1", "")
	c.app("green", "green", "v1", "")
	c.startControlPlane()
	c.gateway("edge")
	url := "http://" + c.addr("gw") + "/"
	c.expectEventually("routed to blue", 10*time.Second, url, nil, servedBy("blue"))

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
	c.policy("routes.yaml", routeTo("grene"))
	eventually(t, 30*time.Second, "invalid edit reported", func() error {
		s, err := c.status()
		if err != nil {
			return err
		}
		if !strings.Contains(s.LastError, "routes.yaml:") || !strings.Contains(s.LastError, `"grene"`) {
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

// TestControlPlaneRestart: proxies keep serving while the control plane is
// gone, reconnect when it is back, and take the configuration it serves.
func TestControlPlaneRestart(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("services.yaml", reloadServices)
	c.policy("routes.yaml", routeTo("blue"))
	c.app("blue", "blue", "v1", "")
	c.app("green", "green", "v1", "")
	cp := c.startControlPlane()
	gwProc := c.gateway("edge")
	url := "http://" + c.addr("gw") + "/"
	c.expectEventually("routed to blue", 10*time.Second, url, nil, servedBy("blue"))

	load := startLoad(t, url, 2)
	cp.kill()
	n := load.total.Load()
	eventually(t, 10*time.Second, "serving without a control plane", func() error {
		if load.total.Load() < n+300 {
			return fmt.Errorf("only %d requests since the kill", load.total.Load()-n)
		}
		return nil
	})
	if gwProc.exited() {
		t.Fatal("gateway exited when the control plane died")
	}

	// While it is down, the policy changes; the new control plane serves it.
	c.policy("routes.yaml", routeTo("green"))
	c.startControlPlane()
	eventually(t, 15*time.Second, "gateway reconnects and takes the new config", func() error { return load.allOn("green") })
	eventually(t, 30*time.Second, "gateway listed again", func() error {
		s, err := c.status()
		if err != nil {
			return err
		}
		if len(s.Proxies) != 1 {
			return fmt.Errorf("%d proxies", len(s.Proxies))
		}
		return nil
	})
	load.stop()
	load.check(t)
}
