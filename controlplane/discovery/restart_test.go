package discovery

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshgate/meshgate/internal/testutil"
)

// TestRestartedAgentWithLowerIndex: after an outage the agent comes back
// with a raft index below the one the watch last saw (a restarted dev agent,
// a rebuilt cluster). The first queries after the failure must not block on
// the stale index: a service registered after the restart is seen at once
// (within the retry backoff, on the bubble's fake clock), not when the stale
// index is finally passed or the wait time ends.
func TestRestartedAgentWithLowerIndex(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		fake := newFakeCatalog()
		fake.reset(100, map[string]int{"orders": 8001})
		w := startWatchInBubble(t, fake, ConsulOptions{})

		fake.setDown(true) // the agent goes away: every query fails
		waitFor(t, "the watch notices the outage", func() bool {
			w.mu.Lock()
			defer w.mu.Unlock()
			return w.failing
		})
		fake.reset(5, map[string]int{"orders": 8001, "payments": 8002}) // back, with a lower index
		back := time.Now()
		waitFor(t, "payments, registered after the restart, is discovered", func() bool {
			return w.hasEndpoints("payments", "127.0.0.1:8002")
		})
		if d := time.Since(back); d > time.Second {
			t.Errorf("payments discovered %s after the restart, want within the backoff (the wait time is %s)", d, time.Minute)
		}
	})
}

// waitFor is testutil.Eventually for a boolean condition.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, what, testutil.Holds(cond))
}

// TestLateFirstSyncCallsChanged: Consul is down when the watch starts, so
// its first complete snapshot comes after whoever waited for it gave up;
// changed is called for it, as for any change of Services.
func TestLateFirstSyncCallsChanged(t *testing.T) {
	t.Parallel()
	fake := newFakeCatalog()
	fake.reset(10, map[string]int{"orders": 8001})
	fake.setDown(true)
	w := runWatch(t, fake, ConsulOptions{})
	waitFor(t, "the watch notices the outage", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.failing
	})
	select {
	case <-w.changes:
		t.Fatal("changed called while Consul is down")
	default:
	}
	fake.setDown(false)
	waitChanged(t, w)
	if !w.hasEndpoints("orders", "127.0.0.1:8001") {
		t.Fatalf("after the late first sync orders has %v", w.endpoints("orders"))
	}
}

// TestFirstSyncAfterOutageLetsTheCatalogSettle: Consul is down when the
// watch starts and comes back as a restarted agent does, its checks
// critical until they first run. The first snapshot is held back for
// RecoveryHold, like any change after an outage, and has what was read
// meanwhile: the instance whose check passed. In a synctest bubble: the
// hour's hold passes on the fake clock.
func TestFirstSyncAfterOutageLetsTheCatalogSettle(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const hold = time.Hour
		fake := newFakeCatalog()
		fake.setNode("n1", "10.0.0.1")
		fake.register("n1", "orders-1", "orders", "127.0.0.1", 8001)
		fake.setCheck("n1", "orders-check", "orders-1", api.HealthCritical)
		fake.setDown(true)
		w := runWatchInBubble(t, fake, ConsulOptions{RecoveryHold: hold})
		waitFor(t, "the watch notices the outage", func() bool {
			w.mu.Lock()
			defer w.mu.Unlock()
			return w.failing
		})
		fake.setDown(false)
		back := time.Now()
		waitFor(t, "orders read", func() bool { return fake.count("/v1/health/service/orders") >= 1 && w.idle() })
		fake.setCheck("n1", "orders-check", "orders-1", api.HealthPassing)
		waitFor(t, "orders read again after its check passed", func() bool {
			return fake.count("/v1/health/service/orders") >= 2 && w.idle()
		})
		time.Sleep(time.Until(back.Add(hold - time.Minute)))
		synctest.Wait()
		select {
		case <-w.synced:
			t.Fatalf("synced within %s of Consul coming back, during the %s recovery hold", time.Since(back), hold)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*hold)
		defer cancel()
		if err := w.WaitSynced(ctx); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(back); d < hold {
			t.Errorf("synced %s after Consul came back, before the end of the %s recovery hold", d, hold)
		}
		waitChanged(t, w)
		if !w.hasEndpoints("orders", "127.0.0.1:8001") {
			t.Errorf("first snapshot: orders has %v, want its instance, passing since", w.endpoints("orders"))
		}
	})
}
