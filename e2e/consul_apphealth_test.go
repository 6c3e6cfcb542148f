package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// timedLoad is a load loop at a steady rate that records when each request
// started and how it ended, so that failures can be placed before or after
// an event.
type timedLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	result []timedResult
}

type timedResult struct {
	start   time.Time
	version string // the demo app's version that answered; "" on failure
	failure string // "" on success
}

// startTimedLoad sends requests from workers, each at most one per every.
func startTimedLoad(t *testing.T, url string, workers int, every time.Duration) *timedLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &timedLoad{cancel: cancel}
	for range workers {
		l.wg.Go(func() {
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				start := time.Now()
				r, err := get(url)
				res := timedResult{start: start}
				switch {
				case err != nil:
					res.failure = err.Error()
				case r.status != http.StatusOK:
					res.failure = fmt.Sprintf("%d %s", r.status, strings.TrimSpace(r.body))
				default:
					res.version = r.reply.Version
				}
				l.mu.Lock()
				l.result = append(l.result, res)
				l.mu.Unlock()
			}
		})
	}
	t.Cleanup(l.stop)
	return l
}

func (l *timedLoad) stop() { l.cancel(); l.wg.Wait() }

// since counts the requests started at or after from, their failures (and
// the first few failure texts), and the answers by app version.
func (l *timedLoad) since(from time.Time) (total, failed int, first []string, versions map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	versions = map[string]int{}
	for _, r := range l.result {
		if r.start.Before(from) {
			continue
		}
		total++
		if r.failure != "" {
			failed++
			if len(first) < 3 {
				first = append(first, r.failure)
			}
			continue
		}
		versions[r.version]++
	}
	return total, failed, first, versions
}

// TestConsulDeadAppLeavesRotation: two instances of orders, each an app
// behind a sidecar registered in Consul, under a looping client through
// the gateway. Killing one app (not its sidecar) takes that instance out of
// rotation within a few seconds: the sidecar probes its app, and the failing
// probe turns its Consul check critical. Failures happen only during that
// detection window; after it, none. When the app comes back, so does the
// instance.
func TestConsulDeadAppLeavesRotation(t *testing.T) {
	t.Parallel()
	consul, c := startConsulCluster(t)
	sidecar := consulSidecars(c, consul, "--app-health-interval", "200ms", "--app-health-timeout", "500ms")
	one := c.startInstance(sidecar, "orders-1", "orders", "v1")
	c.startInstance(sidecar, "orders-2", "orders", "v2")
	c.gateway("edge")
	c.policy("routes.yaml", routeTo("orders"))
	gw := "http://" + c.addr("gw") + "/"
	inRotation := func(want bool) func() error { return endpointListed(c.addr("gateway-admin-edge"), one.inbound, want) }
	eventually(t, 15*time.Second, "both instances in rotation", inRotation(true))
	c.expectEventually("orders through the gateway", 15*time.Second, gw, nil, servedBy("orders"))

	load := startTimedLoad(t, gw, 2, 10*time.Millisecond) // ≤ 200 requests/s
	began := time.Now()
	eventually(t, 10*time.Second, "both instances answer under load", func() error {
		if _, _, _, v := load.since(began); v["v1"] == 0 || v["v2"] == 0 {
			return fmt.Errorf("answers by version %v", v)
		}
		return nil
	})

	// The app dies; its sidecar lives on.
	killed := time.Now()
	one.appProc.kill()
	eventually(t, 15*time.Second, "the dead app's instance leaves the gateway's endpoints", inRotation(false))
	detected := time.Now()
	eventually(t, 15*time.Second, "requests after detection", func() error {
		if n, _, _, _ := load.since(detected); n < 100 {
			return fmt.Errorf("%d requests since detection", n)
		}
		return nil
	})
	total, failed, first, _ := load.since(killed)
	after, failedAfter, firstAfter, versions := load.since(detected)
	window := detected.Sub(killed)
	t.Logf("app killed: instance out of rotation after %s; %d of %d requests failed in that window (first: %v)",
		window.Round(time.Millisecond), failed-failedAfter, total-after, first)
	// Expected: about one probe interval plus one check interval (0.4 s
	// here), plus the control plane's push; generous for a loaded machine.
	if window > 10*time.Second {
		t.Errorf("the dead app's instance left rotation after %s, want a few seconds", window)
	}
	if failedAfter > 0 {
		t.Errorf("%d of %d requests failed after the instance left rotation: %v", failedAfter, after, firstAfter)
	}
	if versions["v1"] > 0 {
		t.Errorf("the dead app answered %d requests", versions["v1"])
	}
	if entries, err := consul.instances(context.Background(), "orders"); err != nil || len(entries) != 2 {
		t.Errorf("want both instances still registered (one critical), got %d (%v)", len(entries), err)
	} else {
		for _, e := range entries {
			if e.Service.Port == portOf(one.inbound) {
				if s := e.Checks.AggregatedStatus(); s != api.HealthCritical || !strings.Contains(checksOutput(e.Checks), one.app) {
					t.Errorf("instance 1: status %s, check output %q: want critical, naming the app %s", s, checksOutput(e.Checks), one.app)
				}
				t.Logf("instance 1's checks: %s", checksOutput(e.Checks))
			}
		}
	}

	// The app comes back: so does the instance.
	one.restartApp()
	eventually(t, 15*time.Second, "the instance returns to the gateway's endpoints", inRotation(true))
	back := time.Now()
	eventually(t, 15*time.Second, "the restarted app answers", func() error {
		if _, _, _, v := load.since(back); v["v1"] == 0 {
			return fmt.Errorf("answers by version since its return: %v", v)
		}
		return nil
	})
	load.stop()
	all, failedSince, firstSince, _ := load.since(detected)
	if failedSince > 0 {
		t.Errorf("%d of %d requests failed from detection to the end: %v", failedSince, all, firstSince)
	}
}

// checksOutput joins the outputs of checks.
func checksOutput(checks api.HealthChecks) string {
	var out []string
	for _, c := range checks {
		out = append(out, c.Name+": "+strings.Join(strings.Fields(c.Output), " "))
	}
	return strings.Join(out, " | ")
}

// portOf is the port of host:port.
func portOf(addr string) int {
	_, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	return n
}
