package discovery

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul/api"
)

// svcName is the name of the i-th generated service.
func svcName(i int) string { return fmt.Sprintf("svc-%02d", i) }

// addr is host:port.
func addr(host string, port int) string { return fmt.Sprintf("%s:%d", host, port) }

// assertCount fails unless path had want requests since the last reset.
func assertCount(t *testing.T, fake *fakeCatalog, path string, want int) {
	t.Helper()
	if got := fake.count(path); got != want {
		t.Errorf("%s: %d requests, want %d", path, got, want)
	}
}

// waitChanged waits for one call of changed.
func waitChanged(t *testing.T, tw *testWatch) {
	t.Helper()
	select {
	case <-tw.changes:
	case <-time.After(30 * time.Second):
		t.Fatal("changed not called after 30s")
	}
}

// drainChanges forgets the calls of changed so far.
func drainChanges(tw *testWatch) {
	for {
		select {
		case <-tw.changes:
		default:
			return
		}
	}
}

// TestHealthFlipReadsOneService: a service check going critical, then
// passing again, is seen from the health watch's answer with exactly one
// read of that service each time, no catalog sweep, and one call of
// changed.
func TestHealthFlipReadsOneService(t *testing.T) {
	t.Parallel()
	fake := newFakeCatalog()
	fake.setNode("n1", "10.0.0.1")
	const n = 50
	for i := range n {
		fake.register("n1", svcName(i)+"-1", svcName(i), "127.0.0.1", 9000+i)
		fake.setCheck("n1", svcName(i)+"-check", svcName(i)+"-1", api.HealthPassing)
	}
	tw := startWatch(t, fake, ConsulOptions{})
	if got := len(tw.Services()); got != n {
		t.Fatalf("after the first sync %d services, want %d", got, n)
	}
	for i := range n {
		if !tw.hasEndpoints(svcName(i), addr("127.0.0.1", 9000+i)) {
			t.Fatalf("after the first sync %s has %v", svcName(i), tw.endpoints(svcName(i)))
		}
	}
	drainChanges(tw)
	fake.resetCounts()

	fake.setCheck("n1", "svc-07-check", "svc-07-1", api.HealthCritical)
	waitFor(t, "svc-07 without endpoints", func() bool { return tw.hasEndpoints("svc-07") })
	waitChanged(t, tw)
	assertCount(t, fake, "/v1/health/service/svc-07", 1)
	if got := fake.countPrefix("/v1/health/service/"); got != 1 {
		t.Errorf("%d service reads for one health flip, want 1", got)
	}
	if got := fake.count("/v1/catalog/nodes") + fake.countPrefix("/v1/catalog/node-services/"); got != 0 {
		t.Errorf("%d catalog requests for a health flip, want 0", got)
	}
	for i := range n {
		if i != 7 && !tw.hasEndpoints(svcName(i), addr("127.0.0.1", 9000+i)) {
			t.Errorf("after the flip %s has %v", svcName(i), tw.endpoints(svcName(i)))
		}
	}

	// Warning is not accepted either: read again, nothing changes.
	fake.setCheck("n1", "svc-07-check", "svc-07-1", api.HealthWarning)
	waitFor(t, "svc-07 read after turning warning", func() bool {
		return fake.count("/v1/health/service/svc-07") == 2 && tw.idle()
	})
	select {
	case <-tw.changes:
		t.Error("changed called for a warning check while only passing is accepted")
	default:
	}
	fake.setCheck("n1", "svc-07-check", "svc-07-1", api.HealthPassing)
	waitFor(t, "svc-07 back", func() bool { return tw.hasEndpoints("svc-07", "127.0.0.1:9007") })
	waitChanged(t, tw)
	assertCount(t, fake, "/v1/health/service/svc-07", 3)
	if got := fake.countPrefix("/v1/health/service/"); got != 3 {
		t.Errorf("%d service reads for three check changes, want 3", got)
	}
}

// TestIncludeWarning: with IncludeWarning a warning check keeps the
// instance, a critical one does not.
func TestIncludeWarning(t *testing.T) {
	t.Parallel()
	fake := newFakeCatalog()
	fake.setNode("n1", "10.0.0.1")
	fake.register("n1", "a-1", "a", "127.0.0.1", 9001)
	fake.setCheck("n1", "a-check", "a-1", api.HealthWarning)
	tw := startWatch(t, fake, ConsulOptions{IncludeWarning: true})
	if !tw.hasEndpoints("a", "127.0.0.1:9001") {
		t.Fatalf("warning instance not accepted: %v", tw.endpoints("a"))
	}
	fake.setCheck("n1", "a-check", "a-1", api.HealthCritical)
	waitFor(t, "critical instance dropped", func() bool { return tw.hasEndpoints("a") })
}

// TestNodeCheckFlip: a node check going critical reads again every service
// with an instance on that node, and only those.
func TestNodeCheckFlip(t *testing.T) {
	t.Parallel()
	fake := newFakeCatalog()
	fake.setNode("n1", "10.0.0.1")
	fake.setNode("n2", "10.0.0.2")
	fake.register("n1", "a-1", "a", "", 9001)
	fake.register("n1", "b-1", "b", "", 9002)
	fake.register("n2", "b-2", "b", "", 9002)
	fake.register("n2", "c-1", "c", "", 9003)
	fake.setCheck("n1", "serfHealth", "", api.HealthPassing)
	fake.setCheck("n2", "serfHealth", "", api.HealthPassing)
	tw := startWatch(t, fake, ConsulOptions{})
	if !tw.hasEndpoints("b", "10.0.0.1:9002", "10.0.0.2:9002") {
		t.Fatalf("b has %v", tw.endpoints("b"))
	}
	fake.resetCounts()

	fake.setCheck("n1", "serfHealth", "", api.HealthCritical)
	waitFor(t, "n1's instances dropped", func() bool {
		return tw.hasEndpoints("a") && tw.hasEndpoints("b", "10.0.0.2:9002")
	})
	assertCount(t, fake, "/v1/health/service/a", 1)
	assertCount(t, fake, "/v1/health/service/b", 1)
	assertCount(t, fake, "/v1/health/service/c", 0)
	if !tw.hasEndpoints("c", "10.0.0.2:9003") {
		t.Errorf("c has %v", tw.endpoints("c"))
	}
}

// waitNodesKnown waits until the watch has the node list (so that a sweep
// reads the nodes rather than every service).
func waitNodesKnown(t *testing.T, tw *testWatch, want int) {
	t.Helper()
	waitFor(t, "the node list", func() bool {
		tw.mu.Lock()
		defer tw.mu.Unlock()
		return tw.nodeCount == want
	})
}

// TestRegistrationChangesByNode: with fewer nodes than services, a catalog
// change is resolved by reading the nodes' services: a re-registration at a
// new port costs one read of that service; a check-less instance, a new
// service, a deregistered service and a node address change are seen.
func TestRegistrationChangesByNode(t *testing.T) {
	t.Parallel()
	fake := newFakeCatalog()
	fake.setNode("n1", "10.0.0.1")
	fake.setNode("n2", "10.0.0.2")
	const n = 20
	for i := range n {
		fake.register([]string{"n1", "n2"}[i%2], svcName(i)+"-1", svcName(i), "", 9000+i)
	}
	tw := startWatch(t, fake, ConsulOptions{})
	waitNodesKnown(t, tw, 2)
	drainChanges(tw)
	fake.resetCounts()

	fake.register("n2", "svc-03-1", "svc-03", "127.0.0.3", 7003) // re-registered: own address, another port
	waitFor(t, "svc-03 at its new address", func() bool { return tw.hasEndpoints("svc-03", "127.0.0.3:7003") })
	waitChanged(t, tw)
	assertCount(t, fake, "/v1/health/service/svc-03", 1)
	if got := fake.countPrefix("/v1/health/service/"); got != 1 {
		t.Errorf("%d service reads for one re-registration, want 1", got)
	}
	assertCount(t, fake, "/v1/catalog/node-services/n1", 1)
	assertCount(t, fake, "/v1/catalog/node-services/n2", 1)

	fake.register("n1", "svc-05-2", "svc-05", "127.0.0.5", 7005) // a second instance, no check: passing
	waitFor(t, "svc-05's check-less instance", func() bool {
		return tw.hasEndpoints("svc-05", "10.0.0.2:9005", "127.0.0.5:7005")
	})
	fake.register("n2", "new-1", "new", "127.0.0.9", 7009)
	waitFor(t, "a new service", func() bool { return tw.hasEndpoints("new", "127.0.0.9:7009") })
	fake.deregister("n1", "svc-10-1")
	waitFor(t, "a deregistered service is gone", func() bool { return tw.endpoints("svc-10") == nil })

	fake.resetCounts()
	fake.setNode("n1", "10.0.1.1") // the node moved: its address-less instances with it
	waitFor(t, "svc-00 at n1's new address", func() bool { return tw.hasEndpoints("svc-00", "10.0.1.1:9000") })
	// The services on n1: the even ones but svc-10, and svc-05's second instance.
	if got := fake.countPrefix("/v1/health/service/"); got != n/2 {
		t.Errorf("%d service reads for a node address change, want %d (the services on it)", got, n/2)
	}
	if !tw.hasEndpoints("svc-01", "10.0.0.2:9001") {
		t.Errorf("svc-01 on n2 has %v", tw.endpoints("svc-01"))
	}
}

// TestRegistrationChangesByService: with as many nodes as services, a
// catalog change reads every service again; the change is seen.
func TestRegistrationChangesByService(t *testing.T) {
	t.Parallel()
	fake := newFakeCatalog()
	for i := range 3 {
		node := fmt.Sprintf("n%d", i)
		fake.setNode(node, "10.0.0.1")
		fake.register(node, svcName(i)+"-1", svcName(i), "127.0.0.1", 9000+i)
	}
	fake.setNode("spare", "10.0.0.9")
	tw := startWatch(t, fake, ConsulOptions{})
	waitNodesKnown(t, tw, 4)
	fake.resetCounts()

	fake.register("n1", "svc-01-1", "svc-01", "127.0.0.1", 7001)
	waitFor(t, "svc-01 at its new port", func() bool { return tw.hasEndpoints("svc-01", "127.0.0.1:7001") })
	if got := fake.countPrefix("/v1/catalog/node-services/"); got != 0 {
		t.Errorf("%d node reads with more nodes than services, want 0", got)
	}
	waitFor(t, "every service read again", func() bool { return fake.countPrefix("/v1/health/service/") == 3 })
}

// TestConnectionsBounded: however many services, at most three blocking
// queries and FetchConcurrency reads are open at once, through the first
// sync, a node check flip (every service on the node read again) and
// catalog sweeps.
func TestConnectionsBounded(t *testing.T) {
	t.Parallel()
	fake := newFakeCatalog()
	fake.delay = time.Millisecond
	const n, nodes, conc = 300, 4, 3
	for i := range nodes {
		fake.setNode(fmt.Sprintf("n%d", i), "10.0.0.1")
		fake.setCheck(fmt.Sprintf("n%d", i), "serfHealth", "", api.HealthPassing)
	}
	for i := range n {
		fake.register(fmt.Sprintf("n%d", i%nodes), fmt.Sprintf("s%03d-1", i), fmt.Sprintf("s%03d", i), "127.0.0.1", 10000+i)
	}
	start := time.Now()
	tw := startWatch(t, fake, ConsulOptions{FetchConcurrency: conc})
	t.Logf("first sync of %d services: %s", n, time.Since(start).Round(time.Millisecond))
	if got := len(tw.Services()); got != n {
		t.Fatalf("%d services after the first sync, want %d", got, n)
	}
	waitNodesKnown(t, tw, nodes)

	fake.setCheck("n0", "serfHealth", "", api.HealthCritical)
	waitFor(t, "n0's instances dropped", func() bool { return tw.hasEndpoints("s000") && tw.hasEndpoints("s004") })
	for i := range n {
		fake.register(fmt.Sprintf("n%d", i%nodes), fmt.Sprintf("s%03d-2", i), fmt.Sprintf("s%03d", i), "127.0.0.2", 10000+i)
	}
	waitFor(t, "every second instance", func() bool { return tw.hasEndpoints("s299", "127.0.0.1:10299", "127.0.0.2:10299") })

	fake.mu.Lock()
	maxOpen := fake.maxOpen
	fake.mu.Unlock()
	tw.connMu.Lock()
	maxConns := tw.maxConns
	tw.connMu.Unlock()
	t.Logf("at most %d requests and %d connections open at once (FetchConcurrency %d)", maxOpen, maxConns, conc)
	if maxOpen > 3+conc {
		t.Errorf("%d requests open at once, want at most %d (3 blocking + FetchConcurrency)", maxOpen, 3+conc)
	}
}

// TestRecoveryHold: after an outage the changes Consul reports are held back
// for RecoveryHold (a restarted agent's catalog fills up again), then
// published. On the bubble's fake clock, to within the polling interval of
// the test and the watch's backoff (tens of milliseconds of a 5 s hold),
// however loaded the machine.
func TestRecoveryHold(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const hold = 5 * time.Second
		const slack = 50 * time.Millisecond // polling and backoff, virtual
		fake := newFakeCatalog()
		fake.reset(100, map[string]int{"orders": 8001, "payments": 8002})
		tw := startWatchInBubble(t, fake, ConsulOptions{RecoveryHold: hold})
		failing := func() bool {
			tw.mu.Lock()
			defer tw.mu.Unlock()
			return tw.failing
		}
		fake.setDown(true)
		waitFor(t, "the watch notices the outage", failing)
		if !tw.hasEndpoints("payments", "127.0.0.1:8002") {
			t.Fatalf("payments lost during the outage: %v", tw.endpoints("payments"))
		}
		fake.reset(3, map[string]int{"orders": 8001}) // back, payments not re-registered yet
		waitFor(t, "the watch is back", func() bool { return !failing() })
		back := time.Now()
		waitFor(t, "the catalog without payments read", func() bool { return !tw.tracked("payments") })

		time.Sleep(time.Until(back.Add(hold - slack)))
		synctest.Wait()
		if !tw.hasEndpoints("payments", "127.0.0.1:8002") {
			t.Fatalf("payments withdrawn before %s after Consul came back, within the %s hold", time.Since(back), hold)
		}
		time.Sleep(2 * slack)
		synctest.Wait()
		if eps := tw.endpoints("payments"); eps != nil {
			t.Fatalf("payments still published %s after Consul came back, past the %s hold: %v", time.Since(back), hold, eps)
		}
	})
}

// tracked reports whether name is a service of the watch's last catalog.
func (tw *testWatch) tracked(name string) bool {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	_, ok := tw.services[name]
	return ok
}

// idle reports whether no read is queued or in flight.
func (tw *testWatch) idle() bool {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	return len(tw.queued) == 0 && len(tw.inflight) == 0
}

// TestInstanceRegisteredDuringFirstRead: an instance registered while the
// first read of its service is in flight (its answer predates the
// registration) is read: the catalog change it causes queues the service
// once more, as it does a service read before.
func TestInstanceRegisteredDuringFirstRead(t *testing.T) {
	t.Parallel()
	fake := newFakeCatalog()
	fake.setNode("n0", "10.0.0.1")
	fake.delay = 300 * time.Millisecond // every read's answer arrives this late
	tw := startWatch(t, fake, ConsulOptions{})
	fake.resetCounts()

	fake.register("n0", "orders-1", "orders", "127.0.0.1", 9001)
	waitFor(t, "the first read of orders sent", func() bool { return fake.count("/v1/health/service/orders") > 0 })
	fake.register("n0", "orders-2", "orders", "127.0.0.1", 9002)
	waitFor(t, "both instances of orders", func() bool {
		return tw.hasEndpoints("orders", "127.0.0.1:9001", "127.0.0.1:9002")
	})
}
