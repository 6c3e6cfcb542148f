package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stoppedSidecarDrain is the drain flag of the sidecar TestGracefulStop
// stops: the default delay, given explicitly (the harness sets 0).
var stoppedSidecarDrain = []string{"--drain-delay=5s"}

// rateLoad sends GETs at a fixed rate (each worker one per period, on
// kept-alive connections) until stopped, counting replies by the version
// of the demo service that answered, and every failure.
type rateLoad struct {
	name     string
	mu       sync.Mutex
	total    int
	versions map[string]int
	failures []string
	stopCh   chan struct{}
	wg       sync.WaitGroup
}

func startRateLoad(t *testing.T, name, url string, headers []string, workers int, period time.Duration) *rateLoad {
	l := &rateLoad{name: name, versions: map[string]int{}, stopCh: make(chan struct{})}
	for range workers {
		l.wg.Go(func() {
			tick := time.NewTicker(period)
			defer tick.Stop()
			for {
				select {
				case <-l.stopCh:
					return
				case <-tick.C:
				}
				r, err := get(url, headers...)
				l.mu.Lock()
				l.total++
				switch {
				case err != nil:
					l.failures = append(l.failures, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
				case r.status != http.StatusOK:
					l.failures = append(l.failures, fmt.Sprintf("%s: %d %s", time.Now().Format("15:04:05.000"), r.status, strings.TrimSpace(r.body)))
				default:
					l.versions[r.reply.Version]++
				}
				l.mu.Unlock()
			}
		})
	}
	t.Cleanup(l.stop)
	return l
}

func (l *rateLoad) stop() {
	select {
	case <-l.stopCh:
	default:
		close(l.stopCh)
	}
	l.wg.Wait()
}

// snapshot returns the requests sent and the replies of version so far.
func (l *rateLoad) snapshot(version string) (total, ofVersion int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, l.versions[version]
}

// TestGracefulStop: a service with two instances behind sidecars
// registered in Consul, called at a steady ~200 requests per second
// through the gateway and through a caller's sidecar; SIGTERM to one
// instance's sidecar loses no request: it leaves Consul and fails its
// readiness first, serves through the drain delay while the callers drop
// it, then closes its listeners and finishes what is in flight.
func TestGracefulStop(t *testing.T) {
	t.Parallel()
	consul := startConsul(t)
	c := newCluster(t)
	c.policy("gateway.yaml", consulGateway)
	c.policy("routes.yaml", routeTo("orders"))
	c.startControlPlane("--consul", consul.addr)

	inA, inB := c.addr("orders-a-in"), c.addr("orders-b-in")
	c.consulSidecar(consul, "orders", c.app("orders-a-app", "orders", "a", ""), inA, c.addr("orders-a-out"))
	stopping := c.consulSidecar(consul, "orders", c.app("orders-b-app", "orders", "b", ""), inB, c.addr("orders-b-out"), stoppedSidecarDrain...)
	frontendOut := c.addr("frontend-out")
	c.sidecar("frontend", c.app("frontend-app", "frontend", "v1", frontendOut), c.addr("frontend-in"), frontendOut)
	c.gateway("edge")
	for _, admin := range []string{c.addr("gateway-admin-edge"), c.addr("sidecar-admin-" + c.addr("frontend-in"))} {
		eventually(t, 20*time.Second, "both orders instances in the configuration of "+admin, func() error {
			dump, err := proxyConfigDump(admin)
			if err != nil || !hasEndpoint(dump, inA) || !hasEndpoint(dump, inB) {
				return fmt.Errorf("not yet (%v)", err)
			}
			return nil
		})
	}

	const workers, period = 2, 20 * time.Millisecond // ~100 requests per second per path
	paths := []*rateLoad{
		startRateLoad(t, "gateway", "http://"+c.addr("gw")+"/", nil, workers, period),
		startRateLoad(t, "sidecar to sidecar", "http://"+frontendOut+"/", []string{"Host: orders"}, workers, period),
	}
	for _, l := range paths {
		eventually(t, 20*time.Second, l.name+" reaching the instance to stop", func() error {
			if _, b := l.snapshot("b"); b < 20 {
				return fmt.Errorf("%d replies from b", b)
			}
			return nil
		})
	}

	stopped := time.Now()
	go stopping.stop() // SIGTERM
	eventually(t, 30*time.Second, "the sidecar to exit", func() error {
		if !stopping.exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	t.Logf("sidecar stopped in %s", time.Since(stopped).Round(time.Millisecond))
	// Keep the load on past the exit: kept-alive connections to the
	// stopped instance must not fail either.
	marks := make([]int, len(paths))
	for i, l := range paths {
		marks[i], _ = l.snapshot("")
	}
	for i, l := range paths {
		eventually(t, 20*time.Second, l.name+" load after the exit", func() error {
			if n, _ := l.snapshot(""); n < marks[i]+100 {
				return fmt.Errorf("%d requests since the exit", n-marks[i])
			}
			return nil
		})
	}
	for _, l := range paths {
		l.stop()
		l.mu.Lock()
		t.Logf("%s: %d requests, by instance %v, %d failed", l.name, l.total, l.versions, len(l.failures))
		if len(l.failures) > 0 {
			t.Errorf("%s: %d failed requests, first: %v", l.name, len(l.failures), l.failures[:min(5, len(l.failures))])
		}
		l.mu.Unlock()
	}

	// The order, from the stopped sidecar's own log: out of Consul first,
	// its listeners closed after.
	out := stopping.out.String()
	deregistered, closing := strings.Index(out, "deregistered from consul"), strings.Index(out, "closing listeners")
	if deregistered < 0 || closing < 0 || deregistered > closing {
		t.Errorf("stopped sidecar: deregistration at %d, listeners closing at %d in its log; want the deregistration first", deregistered, closing)
	}
}

// TestSecondSignalStopsAtOnce: during the drain delay the gateway keeps
// serving with /ready failing; a second SIGTERM ends the stop at once
// (long before the minute the delay would last).
func TestSecondSignalStopsAtOnce(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("edge.yaml", connLimitPolicy)
	c.policy("route.yaml", routeTo("app"))
	c.startControlPlane()
	c.app("app", "app", "v1", "")
	admin := c.addr("gateway-admin-edge")
	gw := start(t, "gateway edge", "gateway", "--name", "edge", "--xds", c.xds, "--admin", admin,
		"--token", c.token("edge"), "--log-level", "debug", "--drain-delay", "1m")
	c.waitReady(admin)
	url := "http://" + c.addr("gw") + "/"
	c.expectEventually("the app through the gateway", 15*time.Second, url, nil, servedBy("app"))

	if err := gw.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "/ready to fail with draining", func() error {
		r, err := get("http://" + admin + "/ready")
		if err != nil {
			return err
		}
		if r.status != http.StatusServiceUnavailable || strings.TrimSpace(r.body) != "draining" {
			return fmt.Errorf("%d %q", r.status, r.body)
		}
		return nil
	})
	if r, err := get(url); err != nil || r.status != http.StatusOK {
		t.Errorf("during the drain delay: %v %+v; want served", err, r)
	}
	if err := gw.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the gateway to exit on the second signal", func() error {
		if !gw.exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	if !strings.Contains(gw.out.String(), "second signal during the graceful stop") {
		t.Error("the second signal was not logged")
	}
}
