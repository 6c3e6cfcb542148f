package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshgate/meshgate/controlplane/state/consultest"
	"github.com/meshgate/meshgate/internal/testutil"
)

// integrationNode is the external catalog node the integration tests
// register their instances on (the dev agent's anti-entropy leaves it alone).
const integrationNode = "discovery-test"

// consulTxnOps is the most operations Consul v1.14 accepts in one /v1/txn.
const consulTxnOps = 64

// txn applies ops in transactions of at most consulTxnOps operations.
func txn(t *testing.T, c *api.Client, ops api.TxnOps) {
	t.Helper()
	for len(ops) > 0 {
		k := min(len(ops), consulTxnOps)
		ok, resp, _, err := c.Txn().Txn(ops[:k], nil)
		if err != nil {
			t.Fatalf("consul txn: %v", err)
		}
		if !ok {
			t.Fatalf("consul txn rolled back: %+v", resp.Errors)
		}
		ops = ops[k:]
	}
}

// integrationInstance is the one instance of service i: no checks, so
// passing.
func integrationInstance(i, port int) *api.TxnOp {
	name := fmt.Sprintf("svc-%04d", i)
	return &api.TxnOp{Service: &api.ServiceTxnOp{Verb: api.ServiceSet, Node: integrationNode,
		Service: api.AgentService{ID: name + "-1", Service: name, Address: "127.0.0.1", Port: port}}}
}

// findService is the number of endpoints of a discovered service, and
// whether it is there.
func findService(w *Consul, name string) (endpoints int, found bool) {
	for _, s := range w.Services() {
		if s.Name == name {
			return len(s.Endpoints), true
		}
	}
	return 0, false
}

// TestConsulManyServices runs the watch against a real Consul agent with
// its default limits (http_max_conns_per_client 200) and 300 services: the
// first sync completes (one blocking query per service would be refused
// with 429 Too Many Requests past ~200), then a health flip, a
// re-registration at a new port and a new check-less instance are each
// seen. Skipped under -short (it needs the consul binary).
func TestConsulManyServices(t *testing.T) {
	agent := consultest.Start(t)
	const n = 300
	ops := api.TxnOps{{Node: &api.NodeTxnOp{Verb: api.NodeSet, Node: api.Node{Node: integrationNode, Address: "127.0.0.1"}}}}
	for i := range n {
		ops = append(ops, integrationInstance(i, 20000+i))
	}
	txn(t, agent.Client, ops)

	w, err := NewConsul(ConsulOptions{Client: agent.Client, Logger: testLogger(t), MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, RecoveryHold: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Now()
	go func() { _ = w.Run(ctx, func() {}); close(done) }()
	defer func() { cancel(); <-done }()

	syncCtx, stop := context.WithTimeout(ctx, 20*time.Second)
	defer stop()
	if err := w.WaitSynced(syncCtx); err != nil {
		t.Fatalf("first sync of %d services: %v", n, err)
	}
	t.Logf("first sync of %d services took %s", n, time.Since(start).Round(time.Millisecond))
	got := 0
	for _, s := range w.Services() {
		if len(s.Endpoints) == 1 {
			got++
		}
	}
	if got != n {
		t.Fatalf("after the first sync %d services with their one endpoint, want %d", got, n)
	}

	// Health flip: a critical check on svc-0150's instance.
	flipped := time.Now()
	txn(t, agent.Client, api.TxnOps{{Check: &api.CheckTxnOp{Verb: api.CheckSet, Check: api.HealthCheck{
		Node: integrationNode, CheckID: "svc-0150-1-check", Name: "check", Status: api.HealthCritical,
		ServiceID: "svc-0150-1", ServiceName: "svc-0150"}}}})
	testutil.Eventually(t, 30*time.Second, "svc-0150 loses its endpoint after the flip", testutil.Holds(func() bool {
		eps, ok := findService(w, "svc-0150")
		return ok && eps == 0
	}))
	t.Logf("health flip seen in %s", time.Since(flipped).Round(time.Millisecond))

	// Re-registration of svc-0007's instance at another port (no check).
	moved := time.Now()
	txn(t, agent.Client, api.TxnOps{integrationInstance(7, 30007)})
	testutil.Eventually(t, 30*time.Second, "svc-0007 at its new port", testutil.Holds(func() bool {
		for _, s := range w.Services() {
			if s.Name == "svc-0007" {
				return len(s.Endpoints) == 1 && s.PolicyService().Spec.Endpoints[0].Address == "127.0.0.1:30007"
			}
		}
		return false
	}))
	t.Logf("re-registration at a new port seen in %s", time.Since(moved).Round(time.Millisecond))

	// A second, check-less instance of svc-0042, and a new service.
	added := time.Now()
	txn(t, agent.Client, api.TxnOps{
		{Service: &api.ServiceTxnOp{Verb: api.ServiceSet, Node: integrationNode,
			Service: api.AgentService{ID: "svc-0042-2", Service: "svc-0042", Address: "127.0.0.2", Port: 20042}}},
		integrationInstance(n, 20000+n),
	})
	testutil.Eventually(t, 30*time.Second, "svc-0042's second instance and the new service", testutil.Holds(func() bool {
		eps, ok := findService(w, "svc-0042")
		_, added := findService(w, fmt.Sprintf("svc-%04d", n))
		return ok && eps == 2 && added
	}))
	t.Logf("new check-less instance and new service seen in %s", time.Since(added).Round(time.Millisecond))
}

// testLogger logs to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
