// Package discovery turns a service catalog into meshgate services: it
// watches Consul's catalog and health and keeps a snapshot of every
// service's healthy instances as model.DiscoveredService values (typed
// endpoints), whose definitions the control plane validates with the policy
// files and whose endpoints go to the model's endpoint index. Instances
// registered by meshgate sidecars are mTLS endpoints at the sidecar's
// inbound address. When Consul is unreachable the last snapshot stays
// (static stability); after it returns, the snapshot is held back for a
// short while so that a restarted, still empty catalog does not withdraw
// every endpoint. The first snapshot is held back the same way when Consul
// was unreachable as the watch started (a restarted agent's checks are
// critical until they first run).
//
// The watch holds a small, fixed number of connections to Consul whatever
// the number of services: three blocking queries, and at most
// ConsulOptions.FetchConcurrency short (non-blocking) requests at once.
//
//   - /v1/catalog/services (blocking) changes with every instance
//     registered, changed or deregistered. Each change starts a sweep: new
//     names are read, vanished ones dropped, and the instances that changed
//     are found by reading every node's services (/v1/catalog/nodes, then
//     /v1/catalog/node-services/<node>, compared by instance ModifyIndex
//     with what was read) when there are fewer nodes than services, or else
//     by reading every service again.
//   - /v1/health/state/any?filter=Status != "passing" (blocking) lists the
//     checks that are not passing. Each answer is compared with the checks
//     of the instances read: a service whose instance or node checks
//     disagree with it is read again. A health flip costs one blocking
//     answer and one read of the service.
//   - /v1/catalog/nodes (blocking) changes with nodes only: the services on
//     a node whose address changed or that is gone are read again (an
//     instance without an address of its own uses its node's).
//   - a service is read with the non-blocking /v1/health/service/<name>
//     (every status: instances and their checks come from one answer).
//     Reads are queued once per service (a read asked for while one is in
//     flight runs once more after it), and the snapshot is published when a
//     batch of reads is done, not after every read.
package discovery

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/meshgate/meshgate/api/consulreg"
	"github.com/meshgate/meshgate/api/dnslabel"
	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/internal/backoff"
	"github.com/meshgate/meshgate/policy"
)

// DefaultServicePort is the port of a discovered service without consulreg.MetaPort.
const DefaultServicePort = 80

// SourcePrefix prefixes the Source.File of every discovered service:
// "consul:catalog/<name>".
const SourcePrefix = "consul:catalog/"

// Defaults of ConsulOptions.
const (
	DefaultWaitTime         = 5 * time.Minute
	DefaultMinBackoff       = 100 * time.Millisecond
	DefaultMaxBackoff       = 10 * time.Second
	DefaultRecoveryHold     = 5 * time.Second
	DefaultFetchConcurrency = 8
)

// notPassing is the filter of the health watch: only the checks that are
// not passing, so that its answers stay small while everything is healthy
// (a check missing from an answer is passing, or gone).
const notPassing = `Status != "passing"`

// ConsulOptions configure a Consul catalog watch.
type ConsulOptions struct {
	// Client talks to the Consul agent; required.
	Client *api.Client
	// IncludeWarning accepts instances whose checks are warning, not only
	// passing.
	IncludeWarning bool
	// Logger; discards when nil.
	Logger *slog.Logger
	// WaitTime bounds one blocking query; DefaultWaitTime when zero.
	WaitTime time.Duration
	// MinBackoff and MaxBackoff bound the backoff after a failed query
	// (internal/backoff).
	MinBackoff, MaxBackoff time.Duration
	// RecoveryHold is how long changes are held back after Consul becomes
	// reachable again or its index goes backwards (a restarted agent
	// re-registers its services); DefaultRecoveryHold when zero, none when
	// negative.
	RecoveryHold time.Duration
	// FetchConcurrency bounds the non-blocking requests in flight at once
	// (service reads and the requests of a catalog sweep), beside the three
	// blocking queries; DefaultFetchConcurrency when zero or negative.
	FetchConcurrency int
}

// Consul watches a Consul catalog. Create it with NewConsul, then Run it.
type Consul struct {
	opts   ConsulOptions
	logger *slog.Logger

	published atomic.Pointer[[]*model.DiscoveredService]
	synced    chan struct{}
	pubMu     sync.Mutex    // serializes publish, and so changed
	sem       chan struct{} // one token per non-blocking request in flight
	sweepReq  chan struct{} // a catalog sweep is wanted (capacity 1: requests coalesce)

	mu        sync.Mutex
	cond      *sync.Cond // signals the readers: work queued, failing cleared or Run ending
	services  map[string]*serviceState
	byNode    map[string]map[string]bool // node → services with an instance on it (read ones)
	names     map[string][]string        // the last catalog/services answer
	nodeCount int                        // nodes in the last node list; -1 before the first
	named     bool                       // the first catalog/services answer was applied
	sweeping  bool                       // a sweep is running
	pending   map[string]bool            // services of the first catalog answer not yet read
	syncDone  bool
	failing   bool      // a watch query failed and none succeeded since
	holdUntil time.Time // no publication before
	holdTimer *time.Timer
	changed   func()
	skipped   map[string]bool // names already reported as unusable
	dirty     bool            // a Service changed since the last publication

	// syncUnannounced: the first complete snapshot was published
	// (checkSyncedLocked) but changed not called for it yet (publish).
	syncUnannounced bool
	// syncTimer completes the first sync when a recovery hold ends.
	syncTimer *time.Timer

	// The read queue: a service is queued at most once (queued, with its
	// urgency), read by one reader at a time (inflight), and read once more
	// when asked for while in flight (again).
	urgentQ, bulkQ []string
	queued         map[string]bool
	inflight       map[string]bool
	again          map[string]bool
	urgentLeft     int            // urgent reads queued or in flight
	readFailures   map[string]int // consecutive failed reads, by service
}

// serviceState is one catalog service: its last read and what the watches
// compare with.
type serviceState struct {
	read   bool                     // read at least once
	svc    *model.DiscoveredService // ServiceFromEntries of the last read
	checks map[checkKey]string      // status of every check of its instances, node checks included
	nodes  map[string]string        // node → address, for every node with an instance
	inst   map[checkKey]uint64      // (node, service ID) → the instance's ModifyIndex
}

// checkKey names a check (node, check ID) or an instance (node, service ID).
type checkKey struct{ node, id string }

// NewConsul returns a catalog watch; nothing touches the network before Run.
func NewConsul(opts ConsulOptions) (*Consul, error) {
	if opts.Client == nil {
		return nil, errors.New("discovery: a Consul client is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.WaitTime <= 0 {
		opts.WaitTime = DefaultWaitTime
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	if opts.RecoveryHold == 0 {
		opts.RecoveryHold = DefaultRecoveryHold
	}
	if opts.FetchConcurrency <= 0 {
		opts.FetchConcurrency = DefaultFetchConcurrency
	}
	c := &Consul{
		opts:         opts,
		logger:       opts.Logger,
		synced:       make(chan struct{}),
		sem:          make(chan struct{}, opts.FetchConcurrency),
		sweepReq:     make(chan struct{}, 1),
		services:     map[string]*serviceState{},
		byNode:       map[string]map[string]bool{},
		pending:      map[string]bool{},
		skipped:      map[string]bool{},
		queued:       map[string]bool{},
		inflight:     map[string]bool{},
		again:        map[string]bool{},
		readFailures: map[string]int{},
		nodeCount:    -1,
	}
	c.cond = sync.NewCond(&c.mu)
	empty := []*model.DiscoveredService{}
	c.published.Store(&empty)
	return c, nil
}

// String names the source in the control plane's status and logs.
func (c *Consul) String() string { return "consul catalog" }

// Services is the current snapshot, sorted by name: one service per catalog
// service with its accepted instances as endpoints (none when no instance
// is healthy). The slice and its services must not be modified; a service
// that did not change since the previous snapshot is the same value.
func (c *Consul) Services() []*model.DiscoveredService { return *c.published.Load() }

// WaitSynced returns once the catalog and every service in it have been
// read once, or with ctx's error.
func (c *Consul) WaitSynced(ctx context.Context) error {
	select {
	case <-c.synced:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run watches the catalog until ctx is done, calling changed (never
// concurrently with itself, but from any goroutine) after every change of
// Services.
func (c *Consul) Run(ctx context.Context, changed func()) error {
	c.mu.Lock()
	c.changed = changed
	c.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopWake := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stopWake()

	var wg sync.WaitGroup
	for range c.opts.FetchConcurrency {
		wg.Go(func() { c.readLoop(ctx) })
	}
	wg.Go(func() { c.sweepLoop(ctx) })
	wg.Go(func() { c.watchChecks(ctx) })
	wg.Go(func() { c.watchNodes(ctx) })
	c.watchServices(ctx)
	cancel()
	wg.Wait()
	c.mu.Lock()
	if c.holdTimer != nil {
		c.holdTimer.Stop()
		c.holdTimer = nil
	}
	if c.syncTimer != nil {
		c.syncTimer.Stop()
		c.syncTimer = nil
	}
	c.mu.Unlock()
	return nil
}

// watch runs one blocking query until ctx is done: query is called with the
// query options (the last index, none after a failure: a restarted agent may
// hold fewer raft entries than that index and would wait the full WaitTime
// before answering), then apply with whether the index went backwards and
// whether the answer is new (not the same index after WaitTime).
func (c *Consul) watch(ctx context.Context, what, filter string, query func(*api.QueryOptions) (*api.QueryMeta, error), apply func(reset, fresh bool)) {
	var index uint64
	failures := 0
	for ctx.Err() == nil {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: c.opts.WaitTime, Filter: filter}).WithContext(ctx)
		meta, err := query(q)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.queryFailed(what, err, failures)
			failures++
			index = 0
			if !backoff.Sleep(ctx, c.backoff(failures)) {
				return
			}
			continue
		}
		failures = 0
		reset := meta.LastIndex < index
		fresh := index == 0 || meta.LastIndex != index
		index = max(meta.LastIndex, 1)
		apply(reset, fresh)
	}
}

// watchServices follows /v1/catalog/services, whose index moves with every
// instance registered, changed or deregistered: each change starts a sweep.
func (c *Consul) watchServices(ctx context.Context) {
	var names map[string][]string
	c.watch(ctx, "catalog services", "", func(q *api.QueryOptions) (*api.QueryMeta, error) {
		var meta *api.QueryMeta
		var err error
		names, meta, err = c.opts.Client.Catalog().Services(q)
		return meta, err
	}, func(reset, fresh bool) {
		c.mu.Lock()
		c.recoveredLocked(reset)
		if fresh {
			c.names = names
		}
		c.mu.Unlock()
		if fresh {
			select {
			case c.sweepReq <- struct{}{}:
			default: // one is already wanted
			}
		}
	})
}

// watchNodes follows /v1/catalog/nodes, which changes with nodes only (not
// with their services): a service with an instance on a node whose address
// changed, or that is gone, is read again (an instance without an address
// of its own uses the node's).
func (c *Consul) watchNodes(ctx context.Context) {
	var nodes []*api.Node
	c.watch(ctx, "catalog nodes", "", func(q *api.QueryOptions) (*api.QueryMeta, error) {
		var meta *api.QueryMeta
		var err error
		nodes, meta, err = c.opts.Client.Catalog().Nodes(q)
		return meta, err
	}, func(reset, fresh bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.recoveredLocked(reset)
		if fresh {
			c.compareNodesLocked(nodes)
		}
	})
}

// compareNodesLocked queues every read service with an instance on a node
// that is not in nodes or has another address there.
func (c *Consul) compareNodesLocked(nodes []*api.Node) {
	addrs := make(map[string]string, len(nodes))
	for _, n := range nodes {
		addrs[n.Node] = n.Address
	}
	c.nodeCount = len(addrs)
	for node, names := range c.byNode {
		addr, ok := addrs[node]
		for name := range names {
			if !ok || c.services[name].nodes[node] != addr {
				c.markLocked(name, true)
			}
		}
	}
}

// watchChecks follows the checks that are not passing and reads again every
// service whose instance or node checks disagree with an answer.
func (c *Consul) watchChecks(ctx context.Context) {
	var checks api.HealthChecks
	c.watch(ctx, "health state", notPassing, func(q *api.QueryOptions) (*api.QueryMeta, error) {
		var meta *api.QueryMeta
		var err error
		checks, meta, err = c.opts.Client.Health().State(api.HealthAny, q)
		return meta, err
	}, func(reset, fresh bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.recoveredLocked(reset)
		if fresh {
			c.compareChecksLocked(checks)
		}
	})
}

// compareChecksLocked queues (urgently) every read service whose checks
// disagree with checks, the checks that are not passing: a check of its
// instances or their nodes with another status, one missing or one
// unknown. A service being read is read again: its answer may predate
// checks.
func (c *Consul) compareChecksLocked(checks api.HealthChecks) {
	answer := make(map[checkKey]*api.HealthCheck, len(checks))
	for _, hc := range checks {
		answer[checkKey{hc.Node, hc.CheckID}] = hc
	}
	for name, st := range c.services {
		if !st.read {
			continue // queued already
		}
		if c.inflight[name] {
			c.markLocked(name, true)
			continue
		}
		for k, status := range st.checks {
			want := api.HealthPassing
			if hc := answer[k]; hc != nil {
				want = hc.Status
			}
			if status != want {
				c.markLocked(name, true)
				break
			}
		}
	}
	for k, hc := range answer {
		if hc.ServiceID != "" {
			if st := c.services[hc.ServiceName]; st != nil && st.read {
				if _, ok := st.checks[k]; !ok {
					c.markLocked(hc.ServiceName, true)
				}
			}
			continue
		}
		for name := range c.byNode[hc.Node] { // a node check: every service on the node
			if _, ok := c.services[name].checks[k]; !ok {
				c.markLocked(name, true)
			}
		}
	}
}

// sweepLoop runs a catalog sweep whenever one is wanted, retrying a failed
// one with backoff.
func (c *Consul) sweepLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.sweepReq:
		}
		c.setSweeping(true)
		for failures := 0; ; {
			err := c.sweep(ctx)
			if err == nil || ctx.Err() != nil {
				break
			}
			c.queryFailed("catalog sweep", err, failures)
			failures++
			if !backoff.Sleep(ctx, c.backoff(failures)) {
				return
			}
		}
		c.setSweeping(false)
	}
}

func (c *Consul) setSweeping(on bool) {
	c.mu.Lock()
	c.sweeping = on
	c.mu.Unlock()
}

// sweep reconciles the services with the last catalog answer: new names
// are read, vanished ones dropped, and the services whose instances changed
// are read again: found from every node's services when there are fewer
// nodes than services already read, else by reading each of those again.
func (c *Consul) sweep(ctx context.Context) error {
	c.mu.Lock()
	c.applyNamesLocked(c.names)
	read := 0
	for _, st := range c.services {
		if st.read {
			read++
		}
	}
	byNodes := c.nodeCount >= 0 && c.nodeCount < read
	if !byNodes {
		for name, st := range c.services {
			// A service whose first read is in flight is read once more
			// after it: that answer may predate this catalog change.
			if st.read || c.inflight[name] {
				c.markLocked(name, false)
			}
		}
	}
	c.mu.Unlock()
	if byNodes {
		if err := c.sweepNodes(ctx); err != nil {
			return err
		}
	}
	c.publishIfIdle()
	return nil
}

// sweepNodes reads the node list and the services of every node (at most
// FetchConcurrency requests at once) and queues every read service one of
// whose instances is new, gone or changed (another ModifyIndex), or on a
// node whose address changed. The answers are at least as recent as the
// catalog answer that started the sweep.
func (c *Consul) sweepNodes(ctx context.Context) error {
	var nodes []*api.Node
	err := c.request(ctx, func(q *api.QueryOptions) error {
		var err error
		nodes, _, err = c.opts.Client.Catalog().Nodes(q)
		return err
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.recoveredLocked(false)
	c.compareNodesLocked(nodes)
	c.mu.Unlock()

	type instance struct {
		service string
		modify  uint64
	}
	var mu sync.Mutex
	seen := map[checkKey]instance{}
	var g errgroup.Group
	for _, n := range nodes {
		g.Go(func() error {
			var list *api.CatalogNodeServiceList
			err := c.request(ctx, func(q *api.QueryOptions) error {
				var err error
				list, _, err = c.opts.Client.Catalog().NodeServiceList(n.Node, q)
				return err
			})
			if err != nil {
				return err
			}
			if list == nil {
				return nil // the node is gone
			}
			mu.Lock()
			defer mu.Unlock()
			for _, s := range list.Services {
				seen[checkKey{n.Node, s.ID}] = instance{s.Service, s.ModifyIndex}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, st := range c.services {
		if c.inflight[name] {
			// Being read (its first read included): its answer may predate
			// the catalog change that started the sweep.
			c.markLocked(name, true)
			continue
		}
		if !st.read {
			continue
		}
		for k, modify := range st.inst {
			if in, ok := seen[k]; !ok || in.service != name || in.modify != modify {
				c.markLocked(name, true)
				break
			}
		}
	}
	for k, in := range seen {
		if st := c.services[in.service]; st != nil && st.read {
			if _, ok := st.inst[k]; !ok {
				c.markLocked(in.service, true)
			}
		}
	}
	return nil
}

// applyNamesLocked follows the catalog's service names: a new usable name
// is tracked and queued, a vanished one dropped.
func (c *Consul) applyNamesLocked(names map[string][]string) {
	for name, st := range c.services {
		if _, ok := names[name]; ok {
			continue
		}
		c.untrackLocked(name, st)
		delete(c.services, name)
		delete(c.pending, name)
		if u, ok := c.queued[name]; ok {
			delete(c.queued, name)
			if u {
				c.urgentLeft--
			}
		}
		delete(c.again, name)
		delete(c.readFailures, name)
		c.dirty = true
	}
	for name := range names {
		if _, ok := c.services[name]; ok || !c.usableName(name) {
			continue
		}
		c.services[name] = &serviceState{}
		if !c.named {
			c.pending[name] = true
		}
		c.markLocked(name, true)
	}
	c.named = true
	c.checkSyncedLocked()
}

// untrackLocked removes st's instances from byNode.
func (c *Consul) untrackLocked(name string, st *serviceState) {
	for node := range st.nodes {
		if set := c.byNode[node]; set != nil {
			delete(set, name)
			if len(set) == 0 {
				delete(c.byNode, node)
			}
		}
	}
}

// markLocked queues a read of a tracked service, at the front when urgent;
// a service being read is read once more after it.
func (c *Consul) markLocked(name string, urgent bool) {
	if _, ok := c.services[name]; !ok {
		return
	}
	if c.inflight[name] {
		c.again[name] = c.again[name] || urgent
		return
	}
	if u, ok := c.queued[name]; ok {
		if urgent && !u {
			c.queued[name] = true
			c.urgentQ = append(c.urgentQ, name)
			c.urgentLeft++
		}
		return
	}
	c.queued[name] = urgent
	if urgent {
		c.urgentQ = append(c.urgentQ, name)
		c.urgentLeft++
	} else {
		c.bulkQ = append(c.bulkQ, name)
	}
	c.cond.Signal()
}

// popLocked takes the next queued service, urgent ones first.
func (c *Consul) popLocked() (name string, urgent, ok bool) {
	for len(c.urgentQ) > 0 {
		name, c.urgentQ = c.urgentQ[0], c.urgentQ[1:]
		if u, ok := c.queued[name]; ok && u {
			delete(c.queued, name)
			c.inflight[name] = true
			return name, true, true
		}
	}
	for len(c.bulkQ) > 0 {
		name, c.bulkQ = c.bulkQ[0], c.bulkQ[1:]
		if u, ok := c.queued[name]; ok && !u {
			delete(c.queued, name)
			c.inflight[name] = false
			return name, false, true
		}
	}
	c.urgentQ, c.bulkQ = nil, nil // drop what the skipped entries kept alive
	return "", false, false
}

// readLoop reads queued services until ctx is done; nothing is read while
// the watch queries fail (Consul is down or restarting: its answers would be
// published before the recovery hold starts).
func (c *Consul) readLoop(ctx context.Context) {
	for {
		c.mu.Lock()
		var name string
		var urgent, ok bool
		for ctx.Err() == nil {
			if !c.failing {
				if name, urgent, ok = c.popLocked(); ok {
					break
				}
			}
			c.cond.Wait()
		}
		c.mu.Unlock()
		if !ok {
			return
		}
		var entries []*api.ServiceEntry
		err := c.request(ctx, func(q *api.QueryOptions) error {
			var err error
			entries, _, err = c.opts.Client.Health().Service(name, "", false, q)
			return err
		})
		if ctx.Err() != nil {
			return
		}
		c.readDone(ctx, name, urgent, entries, err)
	}
}

// request runs one non-blocking request once a FetchConcurrency token is
// free.
func (c *Consul) request(ctx context.Context, do func(*api.QueryOptions) error) error {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.sem }()
	return do((&api.QueryOptions{}).WithContext(ctx))
}

// readDone stores a service's read (or schedules a retry after a failure)
// and publishes when its batch is done: the last urgent read, or the last
// read of all.
func (c *Consul) readDone(ctx context.Context, name string, urgent bool, entries []*api.ServiceEntry, err error) {
	c.mu.Lock()
	delete(c.inflight, name)
	if urgent {
		c.urgentLeft--
	}
	st := c.services[name]
	switch {
	case st == nil: // dropped meanwhile
	case err != nil:
		c.readFailures[name]++
		n := c.readFailures[name]
		level := slog.LevelWarn
		if n > 1 {
			level = slog.LevelDebug
		}
		c.logger.Log(ctx, level, "consul query failed: keeping the last known services", "query", "health "+name, "error", err.Error())
		delete(c.again, name)
		time.AfterFunc(c.backoff(n), func() {
			if ctx.Err() != nil {
				return
			}
			c.mu.Lock()
			c.markLocked(name, urgent)
			c.mu.Unlock()
		})
	default:
		delete(c.readFailures, name)
		c.storeLocked(name, st, entries)
		if again, ok := c.again[name]; ok {
			delete(c.again, name)
			c.markLocked(name, again)
		}
	}
	batchDone := (urgent && c.urgentLeft == 0) || (len(c.queued) == 0 && len(c.inflight) == 0)
	c.mu.Unlock()
	if batchDone {
		c.publish()
	}
}

// storeLocked records a service's read.
func (c *Consul) storeLocked(name string, st *serviceState, entries []*api.ServiceEntry) {
	svc := ServiceFromEntries(name, entries, c.opts.IncludeWarning)
	switch {
	case st.read && reflect.DeepEqual(svc, st.svc):
		svc = st.svc // unchanged: the same value (the control plane's checks of it stand)
	default:
		c.dirty = true
	}
	c.untrackLocked(name, st)
	st.read, st.svc = true, svc
	st.checks = map[checkKey]string{}
	st.nodes = map[string]string{}
	st.inst = make(map[checkKey]uint64, len(entries))
	for _, e := range entries {
		if e.Node == nil || e.Service == nil {
			continue
		}
		st.nodes[e.Node.Node] = e.Node.Address
		st.inst[checkKey{e.Node.Node, e.Service.ID}] = e.Service.ModifyIndex
		for _, hc := range e.Checks {
			st.checks[checkKey{hc.Node, hc.CheckID}] = hc.Status
		}
	}
	for node := range st.nodes {
		set := c.byNode[node]
		if set == nil {
			set = map[string]bool{}
			c.byNode[node] = set
		}
		set[name] = true
	}
	delete(c.pending, name)
	c.checkSyncedLocked()
}

// queryFailed logs a failed watch query and marks the watch as failing.
func (c *Consul) queryFailed(what string, err error, failures int) {
	c.mu.Lock()
	c.failing = true
	c.mu.Unlock()
	level := slog.LevelWarn
	if failures > 0 {
		level = slog.LevelDebug // one warning per outage, not one per retry
	}
	c.logger.Log(context.Background(), level, "consul query failed: keeping the last known services", "query", what, "error", err.Error())
}

// recoveredLocked follows a watch query's answer: after a failure, or when
// the index went backwards (a restarted agent), changes are held back for
// RecoveryHold, and the reads wait no more. Consul unreachable when the
// watch starts holds back the first snapshot the same way: a restarted
// agent's checks are critical until they first run.
func (c *Consul) recoveredLocked(reset bool) {
	if (c.failing || reset) && c.opts.RecoveryHold > 0 {
		c.holdUntil = time.Now().Add(c.opts.RecoveryHold)
		if c.syncDone {
			c.logger.Info("consul is back: holding service changes while it resyncs", "hold", c.opts.RecoveryHold, "indexReset", reset)
		} else {
			c.logger.Info("consul answers: letting its catalog settle before the first snapshot", "hold", c.opts.RecoveryHold)
		}
	}
	if c.failing {
		c.failing = false
		c.cond.Broadcast()
	}
}

// backoff is the wait after the n-th failure in a row (internal/backoff:
// doubling from MinBackoff up to MaxBackoff, jittered).
func (c *Consul) backoff(n int) time.Duration {
	return backoff.Policy{Initial: c.opts.MinBackoff, Max: c.opts.MaxBackoff}.Wait(n)
}

// usableName reports whether a catalog service becomes a meshgate Service:
// not Consul itself, and a valid DNS label.
func (c *Consul) usableName(name string) bool {
	if name == "consul" {
		return false
	}
	if err := dnslabel.Check(name); err != nil {
		if !c.skipped[name] {
			c.skipped[name] = true
			c.logger.Warn("consul service ignored: its name is not a DNS label", "service", name, "reason", err.Error())
		}
		return false
	}
	return true
}

// checkSyncedLocked publishes the first complete snapshot and closes synced
// once every service of the first catalog answer has been read and no
// recovery hold is on (else when it ends, with what was read meanwhile);
// the next publish calls changed for it.
func (c *Consul) checkSyncedLocked() {
	if c.syncDone || !c.named || len(c.pending) > 0 {
		return
	}
	if wait := time.Until(c.holdUntil); wait > 0 {
		if c.syncTimer == nil {
			c.syncTimer = time.AfterFunc(wait, func() {
				c.mu.Lock()
				c.syncTimer = nil
				c.checkSyncedLocked()
				c.mu.Unlock()
				c.publish()
			})
		}
		return
	}
	c.syncDone = true
	c.syncUnannounced = true
	c.dirty = false
	snapshot := c.buildLocked()
	c.published.Store(&snapshot)
	close(c.synced)
}

// publishIfIdle publishes when no read is queued or in flight.
func (c *Consul) publishIfIdle() {
	c.mu.Lock()
	idle := len(c.queued) == 0 && len(c.inflight) == 0
	c.mu.Unlock()
	if idle {
		c.publish()
	}
}

// publish rebuilds the snapshot and, if it changed, stores it and calls
// changed; during a recovery hold it only schedules itself for the hold's
// end. It also calls changed once for the first complete snapshot, which
// checkSyncedLocked published: whoever missed WaitSynced (it gave up
// waiting) learns of it as of any change.
func (c *Consul) publish() {
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	c.mu.Lock()
	changed := c.changed
	notify := c.syncUnannounced
	c.syncUnannounced = false
	defer func() {
		if notify && changed != nil {
			changed()
		}
	}()
	if !c.syncDone || !c.dirty {
		c.mu.Unlock()
		return
	}
	if wait := time.Until(c.holdUntil); wait > 0 {
		if c.holdTimer == nil {
			c.holdTimer = time.AfterFunc(wait, func() {
				c.mu.Lock()
				c.holdTimer = nil
				c.mu.Unlock()
				c.publish()
			})
		}
		c.mu.Unlock()
		return
	}
	c.dirty = false
	snapshot := c.buildLocked()
	c.mu.Unlock()
	if reflect.DeepEqual(snapshot, *c.published.Load()) {
		return
	}
	c.published.Store(&snapshot)
	notify = true
}

// buildLocked collects the read Services, sorted.
func (c *Consul) buildLocked() []*model.DiscoveredService {
	out := make([]*model.DiscoveredService, 0, len(c.services))
	for _, st := range c.services {
		if st.svc != nil {
			out = append(out, st.svc)
		}
	}
	slices.SortFunc(out, compareServices)
	return out
}

// compareServices orders services by namespace, then name.
func compareServices(a, b *model.DiscoveredService) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// ServiceFromEntries maps the health entries of one Consul service to a
// meshgate service:
//   - an instance is an endpoint when its aggregated check status (service
//     and node checks) is passing, or warning with includeWarning;
//   - its address is the service address, else the node's, with the
//     service port; an instance with consulreg.MetaSidecar "true" is a sidecar
//     endpoint (mTLS);
//   - an application registration (consulreg.MetaApp "true") is ignored while its
//     sidecar (consulreg.MetaSidecarID, or a sidecar whose consulreg.MetaAppAddress is the
//     application's address) is registered, whatever the sidecar's health;
//     a gateway registration (consulreg.MetaGateway "true") is never an endpoint;
//   - labels come from "key=value" tags, then from the service metadata
//     (keys not starting with "meshgate-"); invalid label keys or values
//     are dropped; an instance without a zone label takes its node's meta
//     "zone" as label "zone";
//   - the service's port and protocol come from consulreg.MetaPort and consulreg.MetaProtocol
//     of the first instance (by ID) that has them, its namespace from
//     consulreg.MetaNamespace;
//   - a service whose instances are all gateway nodes is nil.
func ServiceFromEntries(name string, entries []*api.ServiceEntry, includeWarning bool) *model.DiscoveredService {
	if len(entries) > 0 && !slices.ContainsFunc(entries, func(e *api.ServiceEntry) bool { return e.Service.Meta[consulreg.MetaGateway] != "true" }) {
		return nil
	}
	entries = slices.Clone(entries)
	slices.SortFunc(entries, func(a, b *api.ServiceEntry) int {
		return cmp.Or(cmp.Compare(a.Node.Node, b.Node.Node), cmp.Compare(a.Service.ID, b.Service.ID))
	})
	port := ServicePort(entries)
	svc := &model.DiscoveredService{
		NamespacedName: model.NamespacedName{Namespace: policy.DefaultNamespace, Name: name},
		Source:         SourcePrefix + name,
		Port:           port.Port,
		Protocol:       port.Protocol,
	}
	for _, e := range entries {
		if ns := e.Service.Meta[consulreg.MetaNamespace]; ns != "" && dnslabel.Valid(ns) {
			svc.Namespace = ns
			break
		}
	}
	sidecarIDs := map[string]bool{}
	sidecarApps := map[string]bool{}
	for _, e := range entries {
		if e.Service.Meta[consulreg.MetaSidecar] == "true" {
			sidecarIDs[e.Node.Node+"/"+e.Service.ID] = true
			if a := e.Service.Meta[consulreg.MetaAppAddress]; a != "" {
				sidecarApps[a] = true
			}
		}
	}
	for _, e := range entries {
		switch status := e.Checks.AggregatedStatus(); {
		case status == api.HealthPassing:
		case status == api.HealthWarning && includeWarning:
		default:
			continue
		}
		meta := e.Service.Meta
		if meta[consulreg.MetaGateway] == "true" {
			continue
		}
		host, port, ok := instanceAddress(e)
		if !ok {
			continue
		}
		addr := net.JoinHostPort(host, strconv.Itoa(int(port)))
		if meta[consulreg.MetaApp] == "true" && (sidecarIDs[e.Node.Node+"/"+meta[consulreg.MetaSidecarID]] || sidecarApps[addr]) {
			continue
		}
		svc.Endpoints = append(svc.Endpoints, &model.Endpoint{
			Host:    host,
			Port:    port,
			Labels:  withNodeZone(labels(e.Service.Tags, meta), e.Node),
			Sidecar: meta[consulreg.MetaSidecar] == "true",
		})
	}
	return svc
}

// ServicePort is the port of a discovered service: consulreg.MetaPort and
// consulreg.MetaProtocol of the first instance that has them (HTTP, HTTP2,
// or GRPC: HTTP2 to the endpoints), else port 80, HTTP.
func ServicePort(entries []*api.ServiceEntry) policy.ServicePort {
	port := policy.ServicePort{Port: DefaultServicePort, Protocol: policy.ProtocolHTTP}
	for _, e := range entries {
		if p, err := strconv.ParseInt(e.Service.Meta[consulreg.MetaPort], 10, 32); err == nil && p >= 1 && p <= 65535 {
			port.Port = int32(p)
			break
		}
	}
	for _, e := range entries {
		switch proto := strings.ToUpper(e.Service.Meta[consulreg.MetaProtocol]); proto {
		case policy.ProtocolHTTP, policy.ProtocolHTTP2, policy.ProtocolTCP:
			port.Protocol = proto
			return port
		case "GRPC": // as Consul's own service-defaults name it
			port.Protocol = policy.ProtocolHTTP2
			return port
		}
	}
	return port
}

// instanceAddress is the host and port of an instance; ok is false when it
// has no usable one.
func instanceAddress(e *api.ServiceEntry) (host string, port uint32, ok bool) {
	host = e.Service.Address
	if host == "" && e.Node != nil {
		host = e.Node.Address
	}
	if host == "" || e.Service.Port < 1 || e.Service.Port > 65535 {
		return "", 0, false
	}
	return host, uint32(e.Service.Port), true
}

// withNodeZone adds the zone of the instance's node (node meta "zone") to
// labels that give none (policy.EndpointZone).
func withNodeZone(l map[string]string, node *api.Node) map[string]string {
	if node == nil || policy.EndpointZone(l) != "" {
		return l
	}
	zone := node.Meta[policy.LabelZoneShort]
	if zone == "" || len(validation.IsValidLabelValue(zone)) > 0 {
		return l
	}
	if l == nil {
		l = map[string]string{}
	}
	l[policy.LabelZoneShort] = zone
	return l
}

// labels maps "key=value" tags and non-meshgate metadata to endpoint
// labels, dropping what is not a valid label.
func labels(tags []string, meta map[string]string) map[string]string {
	var out map[string]string
	add := func(k, v string) {
		if len(validation.IsQualifiedName(k)) > 0 || len(validation.IsValidLabelValue(v)) > 0 {
			return
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	for _, t := range tags {
		if k, v, ok := strings.Cut(t, "="); ok {
			add(k, v)
		}
	}
	for k, v := range meta {
		if !strings.HasPrefix(k, "meshgate-") {
			if _, dup := out[k]; !dup {
				add(k, v)
			}
		}
	}
	return out
}
