package discovery

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshgate/meshgate/internal/testutil"
)

// fakeCatalog answers the Consul endpoints the watch uses with Consul's
// blocking-query semantics: a query on /v1/catalog/services,
// /v1/catalog/nodes or /v1/health/state/any whose index is at or above its
// table's index waits for a change of that table (or the request's end), as
// the services, nodes and checks tables of Consul's state store do. Every
// change takes the next raft index. down makes every query fail, as an agent
// that is not there. It counts the requests by path and the requests open
// at once.
type fakeCatalog struct {
	mu                                     sync.Mutex
	index                                  uint64 // the last raft index
	servicesIndex, nodesIndex, checksIndex uint64
	nodes                                  map[string]string // name → address
	instances                              map[checkKey]*fakeInstance
	checks                                 map[checkKey]*fakeCheck // by (node, check ID)
	down                                   bool
	changed                                chan struct{}
	delay                                  time.Duration // before every non-blocking answer

	requests      map[string]int
	open, maxOpen int
}

type fakeInstance struct {
	node, id, service, address string
	port                       int
	modify                     uint64
}

type fakeCheck struct {
	node, id, serviceID, status string
}

func newFakeCatalog() *fakeCatalog {
	return &fakeCatalog{
		nodes:     map[string]string{},
		instances: map[checkKey]*fakeInstance{},
		checks:    map[checkKey]*fakeCheck{},
		changed:   make(chan struct{}),
		requests:  map[string]int{},
	}
}

// write applies fn at the next raft index and wakes the blocked queries.
func (f *fakeCatalog) write(fn func(idx uint64)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index++
	fn(f.index)
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeCatalog) setNode(name, address string) {
	f.write(func(idx uint64) {
		f.nodes[name] = address
		f.nodesIndex = idx
	})
}

// register adds or replaces an instance (its node must exist).
func (f *fakeCatalog) register(node, id, service, address string, port int) {
	f.write(func(idx uint64) {
		f.instances[checkKey{node, id}] = &fakeInstance{node: node, id: id, service: service, address: address, port: port, modify: idx}
		f.servicesIndex = idx
	})
}

// deregister removes an instance and its checks.
func (f *fakeCatalog) deregister(node, id string) {
	f.write(func(idx uint64) {
		delete(f.instances, checkKey{node, id})
		f.servicesIndex = idx
		for k, c := range f.checks {
			if c.node == node && c.serviceID == id {
				delete(f.checks, k)
				f.checksIndex = idx
			}
		}
	})
}

// setCheck adds or changes a check: a node check when serviceID is "".
func (f *fakeCatalog) setCheck(node, id, serviceID, status string) {
	f.write(func(idx uint64) {
		f.checks[checkKey{node, id}] = &fakeCheck{node: node, id: id, serviceID: serviceID, status: status}
		f.checksIndex = idx
	})
}

func (f *fakeCatalog) setDown(down bool) {
	f.write(func(uint64) { f.down = down })
}

// reset replaces the whole catalog, as a restarted agent: node "n" with one
// check-less instance per service (name → port), every index at index.
func (f *fakeCatalog) reset(index uint64, services map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index, f.servicesIndex, f.nodesIndex, f.checksIndex = index, index, index, index
	f.nodes = map[string]string{"n": "127.0.0.1"}
	f.instances = map[checkKey]*fakeInstance{}
	f.checks = map[checkKey]*fakeCheck{}
	for name, port := range services {
		f.instances[checkKey{"n", name + "-1"}] = &fakeInstance{node: "n", id: name + "-1", service: name, address: "127.0.0.1", port: port, modify: index}
	}
	f.down = false
	close(f.changed)
	f.changed = make(chan struct{})
}

// count is the number of requests to path since the last resetCounts.
func (f *fakeCatalog) count(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[path]
}

// countPrefix is the number of requests to paths starting with prefix.
func (f *fakeCatalog) countPrefix(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for p, k := range f.requests {
		if strings.HasPrefix(p, prefix) {
			n += k
		}
	}
	return n
}

func (f *fakeCatalog) resetCounts() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = map[string]int{}
}

func (f *fakeCatalog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	wait, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
	f.mu.Lock()
	f.requests[r.URL.Path]++
	if wait > 0 {
		f.requests[r.URL.Path+" blocking"]++
	}
	f.open++
	f.maxOpen = max(f.maxOpen, f.open)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.open--
		f.mu.Unlock()
	}()
	for {
		f.mu.Lock()
		if f.down {
			f.mu.Unlock()
			http.Error(w, "agent down", http.StatusInternalServerError)
			return
		}
		index := f.index
		switch r.URL.Path {
		case "/v1/catalog/services":
			index = f.servicesIndex
		case "/v1/catalog/nodes":
			index = f.nodesIndex
		case "/v1/health/state/any":
			index = f.checksIndex
		}
		if wait == 0 || wait < index { // index 0 never blocks, as in Consul
			body, status := f.answerLocked(r)
			f.mu.Unlock()
			if wait == 0 && f.delay > 0 {
				time.Sleep(f.delay)
			}
			w.Header().Set("X-Consul-Index", strconv.FormatUint(max(index, 1), 10))
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(body)
			return
		}
		changed := f.changed
		f.mu.Unlock()
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		}
	}
}

// answerLocked is the body of a query.
func (f *fakeCatalog) answerLocked(r *http.Request) (any, int) {
	path := r.URL.Path
	switch {
	case path == "/v1/catalog/services":
		names := map[string][]string{}
		for _, in := range f.instances {
			names[in.service] = []string{}
		}
		return names, http.StatusOK
	case path == "/v1/catalog/nodes":
		var nodes []*api.Node
		for name, addr := range f.nodes {
			nodes = append(nodes, &api.Node{Node: name, Address: addr})
		}
		return nodes, http.StatusOK
	case strings.HasPrefix(path, "/v1/catalog/node-services/"):
		node := strings.TrimPrefix(path, "/v1/catalog/node-services/")
		addr, ok := f.nodes[node]
		if !ok {
			return api.CatalogNodeServiceList{}, http.StatusOK
		}
		list := api.CatalogNodeServiceList{Node: &api.Node{Node: node, Address: addr}}
		for _, in := range f.instances {
			if in.node == node {
				list.Services = append(list.Services, in.agentService())
			}
		}
		return list, http.StatusOK
	case strings.HasPrefix(path, "/v1/health/service/"):
		name := strings.TrimPrefix(path, "/v1/health/service/")
		entries := []*api.ServiceEntry{}
		for _, in := range f.instances {
			if in.service != name {
				continue
			}
			e := &api.ServiceEntry{Node: &api.Node{Node: in.node, Address: f.nodes[in.node]}, Service: in.agentService(), Checks: api.HealthChecks{}}
			for _, c := range f.checks {
				if c.node == in.node && (c.serviceID == "" || c.serviceID == in.id) {
					e.Checks = append(e.Checks, c.healthCheck(f.instances))
				}
			}
			entries = append(entries, e)
		}
		return entries, http.StatusOK
	case path == "/v1/health/state/any":
		filter := r.URL.Query().Get("filter")
		if filter != "" && filter != notPassing {
			return "unsupported filter " + filter, http.StatusBadRequest
		}
		checks := api.HealthChecks{}
		for _, c := range f.checks {
			if filter == "" || c.status != api.HealthPassing {
				checks = append(checks, c.healthCheck(f.instances))
			}
		}
		slices.SortFunc(checks, func(a, b *api.HealthCheck) int { return strings.Compare(a.Node+a.CheckID, b.Node+b.CheckID) })
		return checks, http.StatusOK
	}
	return "no such endpoint " + path, http.StatusNotFound
}

func (in *fakeInstance) agentService() *api.AgentService {
	return &api.AgentService{ID: in.id, Service: in.service, Address: in.address, Port: in.port, CreateIndex: in.modify, ModifyIndex: in.modify}
}

func (c *fakeCheck) healthCheck(instances map[checkKey]*fakeInstance) *api.HealthCheck {
	hc := &api.HealthCheck{Node: c.node, CheckID: c.id, Name: c.id, Status: c.status, ServiceID: c.serviceID}
	if in := instances[checkKey{c.node, c.serviceID}]; in != nil {
		hc.ServiceName = in.service
	}
	return hc
}

// testWatch is a watch running against a fake catalog.
type testWatch struct {
	*Consul
	fake    *fakeCatalog
	changes chan struct{} // one value per call of changed (buffered)
	srv     *httptest.Server
	// maxConns is the most TCP connections open at once to the fake.
	connMu          sync.Mutex
	conns, maxConns int
}

// startWatch runs a watch with opts (client and test defaults filled in)
// against fake, served on a loopback port, waits for its first sync and
// takes the call of changed that announces it.
func startWatch(t *testing.T, fake *fakeCatalog, opts ConsulOptions) *testWatch {
	t.Helper()
	tw := runWatch(t, fake, opts)
	tw.firstSync(t)
	return tw
}

// runWatch runs a watch with opts (client and test defaults filled in)
// against fake, served on a loopback port.
func runWatch(t *testing.T, fake *fakeCatalog, opts ConsulOptions) *testWatch {
	t.Helper()
	tw := &testWatch{fake: fake, changes: make(chan struct{}, 1000)}
	tw.srv = httptest.NewUnstartedServer(fake)
	tw.srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		tw.connMu.Lock()
		defer tw.connMu.Unlock()
		switch state {
		case http.StateNew:
			tw.conns++
			tw.maxConns = max(tw.maxConns, tw.conns)
		case http.StateClosed, http.StateHijacked:
			tw.conns--
		}
	}
	tw.srv.Start()
	t.Cleanup(tw.srv.Close) // after the watch stopped (cleanups run last first)
	client, err := api.NewClient(&api.Config{Address: strings.TrimPrefix(tw.srv.URL, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	tw.run(t, client, opts, tw.srv.CloseClientConnections)
	return tw
}

// startWatchInBubble is startWatch for a test in a testing/synctest bubble
// (runWatchInBubble, then the first sync).
func startWatchInBubble(t *testing.T, fake *fakeCatalog, opts ConsulOptions) *testWatch {
	t.Helper()
	tw := runWatchInBubble(t, fake, opts)
	tw.firstSync(t)
	return tw
}

// runWatchInBubble is runWatch for a test in a testing/synctest bubble: the
// fake answers over an in-memory network, so that backoffs, waits and holds
// run on the bubble's fake clock, exactly.
func runWatchInBubble(t *testing.T, fake *fakeCatalog, opts ConsulOptions) *testWatch {
	t.Helper()
	tw := &testWatch{fake: fake, changes: make(chan struct{}, 1000)}
	ln := testutil.NewPipeListener()
	srv := &http.Server{Handler: fake}
	served := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(served) }()
	t.Cleanup(func() { <-served })
	transport := &http.Transport{DialContext: ln.DialContext}
	client, err := api.NewClient(&api.Config{Address: "consul.invalid", HttpClient: &http.Client{Transport: transport}})
	if err != nil {
		t.Fatal(err)
	}
	tw.run(t, client, opts, func() { _ = srv.Close(); transport.CloseIdleConnections() })
	return tw
}

// run runs the watch with client and opts (test defaults filled in) until
// the test ends, then closes its connections with closeConns.
func (tw *testWatch) run(t *testing.T, client *api.Client, opts ConsulOptions, closeConns func()) {
	t.Helper()
	opts.Client = client
	if opts.WaitTime == 0 {
		opts.WaitTime = time.Minute
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff, opts.MaxBackoff = 10*time.Millisecond, 20*time.Millisecond
	}
	if opts.RecoveryHold == 0 {
		opts.RecoveryHold = -1
	}
	w, err := NewConsul(opts)
	if err != nil {
		t.Fatal(err)
	}
	tw.Consul = w
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		_ = w.Run(ctx, func() { tw.changes <- struct{}{} })
		close(done)
	}()
	t.Cleanup(func() { cancel(); closeConns(); <-done })
}

// firstSync waits for the watch's first sync, takes the call of changed
// that announces it, and lets the watch settle.
func (tw *testWatch) firstSync(t *testing.T) {
	t.Helper()
	sctx, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	if err := tw.WaitSynced(sctx); err != nil {
		t.Fatalf("first sync: %v", err)
	}
	waitChanged(t, tw)
	tw.settle(t)
}

// settle waits until each watch query has applied an answer (it blocks
// with an index) and no sweep or read is left: what follows is caused by
// what the test does next.
func (tw *testWatch) settle(t *testing.T) {
	t.Helper()
	waitFor(t, "the watch settles", func() bool {
		for _, p := range []string{"/v1/catalog/services", "/v1/catalog/nodes", "/v1/health/state/any"} {
			if tw.fake.count(p+" blocking") == 0 {
				return false
			}
		}
		tw.mu.Lock()
		defer tw.mu.Unlock()
		return len(tw.queued) == 0 && len(tw.inflight) == 0 && !tw.sweeping && len(tw.sweepReq) == 0
	})
}

// endpoints are the endpoint addresses of a discovered service, nil when
// it is absent.
func (tw *testWatch) endpoints(name string) []string {
	for _, s := range tw.Services() {
		if s.Name == name {
			eps := []string{}
			for _, e := range s.PolicyService().Spec.Endpoints {
				eps = append(eps, e.Address)
			}
			return eps
		}
	}
	return nil
}

// hasEndpoints reports whether a service is discovered with exactly want.
func (tw *testWatch) hasEndpoints(name string, want ...string) bool {
	got := tw.endpoints(name)
	slices.Sort(got)
	slices.Sort(want)
	return got != nil && slices.Equal(got, want)
}
