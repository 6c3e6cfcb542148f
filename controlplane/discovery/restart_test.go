package discovery

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// fakeCatalog answers the two Consul endpoints the watch uses with Consul's
// blocking-query semantics: a query whose index is at or above the current
// one waits for a change (or the request's end). down makes every query
// fail, as an agent that is not there.
type fakeCatalog struct {
	mu       sync.Mutex
	index    uint64
	services map[string]int // name → port of its one passing instance
	down     bool
	changed  chan struct{}
}

func (f *fakeCatalog) set(index uint64, services map[string]int, down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index, f.services, f.down = index, services, down
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeCatalog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	wait, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
	for {
		f.mu.Lock()
		down, index, changed := f.down, f.index, f.changed
		if down {
			f.mu.Unlock()
			http.Error(w, "agent down", http.StatusInternalServerError)
			return
		}
		if wait < index {
			var body any
			if name, ok := strings.CutPrefix(r.URL.Path, "/v1/health/service/"); ok {
				var entries []*api.ServiceEntry
				if port, ok := f.services[name]; ok {
					entries = append(entries, &api.ServiceEntry{
						Node:    &api.Node{Node: "n"},
						Service: &api.AgentService{ID: name + "-1", Service: name, Address: "127.0.0.1", Port: port},
						Checks:  api.HealthChecks{{Status: api.HealthPassing}},
					})
				}
				body = entries
			} else {
				names := map[string][]string{}
				for name := range f.services {
					names[name] = nil
				}
				body = names
			}
			f.mu.Unlock()
			w.Header().Set("X-Consul-Index", strconv.FormatUint(index, 10))
			_ = json.NewEncoder(w).Encode(body)
			return
		}
		f.mu.Unlock()
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		}
	}
}

// TestRestartedAgentWithLowerIndex: after an outage the agent comes back
// with a raft index below the one the watch last saw (a restarted dev agent,
// a rebuilt cluster). The first queries after the failure must not block on
// the stale index: a service registered after the restart is seen at once,
// not when the stale index is finally passed or the wait time ends.
func TestRestartedAgentWithLowerIndex(t *testing.T) {
	t.Parallel()
	fake := &fakeCatalog{changed: make(chan struct{})}
	fake.set(100, map[string]int{"orders": 8001}, false)
	srv := httptest.NewServer(fake)
	defer srv.Close()
	client, err := api.NewClient(&api.Config{Address: strings.TrimPrefix(srv.URL, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewConsul(ConsulOptions{Client: client, WaitTime: time.Minute, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, RecoveryHold: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx, func() {}); close(done) }()
	defer func() { cancel(); srv.CloseClientConnections(); <-done }()
	if err := w.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}

	fake.set(100, nil, true) // the agent goes away: every query fails
	waitFor(t, "the watch notices the outage", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.failing
	})
	fake.set(5, map[string]int{"orders": 8001, "payments": 8002}, false) // back, with a lower index
	waitFor(t, "payments, registered after the restart, is discovered", func() bool {
		for _, s := range w.Services() {
			if s.Name == "payments" && len(s.Spec.Endpoints) == 1 {
				return true
			}
		}
		return false
	})
}

// waitFor polls cond until it holds or 5 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after 5s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
