// Package discovery turns a service catalog into meshgate Services: it
// watches Consul's catalog and health with blocking queries and keeps a
// snapshot of every service's healthy instances as policy.Service values,
// which the control plane validates and compiles together with the policy
// files. Instances registered by meshgate sidecars are mTLS endpoints at the
// sidecar's inbound address. When Consul is unreachable the last snapshot
// stays (static stability); after it returns, the snapshot is held back for
// a short while so that a restarted, still empty catalog does not withdraw
// every endpoint.
package discovery

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/meshgate/meshgate/api/consulreg"
	"github.com/meshgate/meshgate/policy"
)

// DefaultServicePort is the port of a discovered service without consulreg.MetaPort.
const DefaultServicePort = 80

// SourcePrefix prefixes the Source.File of every discovered service:
// "consul:catalog/<name>".
const SourcePrefix = "consul:catalog/"

// Defaults of ConsulOptions.
const (
	DefaultWaitTime     = 5 * time.Minute
	DefaultMinBackoff   = 100 * time.Millisecond
	DefaultMaxBackoff   = 10 * time.Second
	DefaultRecoveryHold = 5 * time.Second
)

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
	// MinBackoff and MaxBackoff bound the jittered exponential backoff
	// after a failed query.
	MinBackoff, MaxBackoff time.Duration
	// RecoveryHold is how long changes are held back after Consul becomes
	// reachable again or its index goes backwards (a restarted agent
	// re-registers its services); DefaultRecoveryHold when zero, none when
	// negative.
	RecoveryHold time.Duration
}

// Consul watches a Consul catalog. Create it with NewConsul, then Run it.
type Consul struct {
	opts   ConsulOptions
	logger *slog.Logger

	published atomic.Pointer[[]*policy.Service]
	synced    chan struct{}

	mu        sync.Mutex
	entries   map[string][]*api.ServiceEntry // by service name, every status
	watchers  map[string]context.CancelFunc
	pending   map[string]bool // services not yet heard from since the first catalog answer
	syncDone  bool
	failing   bool      // a query failed since the last catalog answer
	holdUntil time.Time // no publication before
	holdTimer *time.Timer
	changed   func()
	skipped   map[string]bool // names already reported as unusable
}

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
	c := &Consul{
		opts:     opts,
		logger:   opts.Logger,
		synced:   make(chan struct{}),
		entries:  map[string][]*api.ServiceEntry{},
		watchers: map[string]context.CancelFunc{},
		pending:  map[string]bool{},
		skipped:  map[string]bool{},
	}
	empty := []*policy.Service{}
	c.published.Store(&empty)
	return c, nil
}

// Services is the current snapshot, sorted by name: one Service per catalog
// service with its accepted instances as endpoints (none when no instance
// is healthy). The slice and its Services must not be modified.
func (c *Consul) Services() []*policy.Service { return *c.published.Load() }

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
// concurrently with itself from this watch, but from any goroutine) after
// every change of Services.
func (c *Consul) Run(ctx context.Context, changed func()) error {
	c.mu.Lock()
	c.changed = changed
	c.mu.Unlock()
	var wg sync.WaitGroup
	defer func() {
		c.mu.Lock()
		for name, cancel := range c.watchers {
			cancel()
			delete(c.watchers, name)
		}
		if c.holdTimer != nil {
			c.holdTimer.Stop()
		}
		c.mu.Unlock()
		wg.Wait()
	}()

	var index uint64
	failures := 0
	for ctx.Err() == nil {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: c.opts.WaitTime}).WithContext(ctx)
		services, meta, err := c.opts.Client.Catalog().Services(q)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			c.queryFailed("catalog", err, failures)
			failures++
			// The next query must not block: a restarted agent may hold
			// fewer raft entries than our index and would wait the full
			// WaitTime before answering.
			index = 0
			if !sleep(ctx, c.backoff(failures)) {
				break
			}
			continue
		}
		failures = 0
		reset := meta.LastIndex < index
		index = max(meta.LastIndex, 1)
		c.reconcile(ctx, &wg, services, reset)
	}
	return nil
}

// queryFailed logs a failed query and marks the watch as failing.
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

// backoff is the jittered exponential delay after the n-th failure in a row.
func (c *Consul) backoff(n int) time.Duration {
	d := c.opts.MinBackoff << min(n-1, 16)
	if d <= 0 || d > c.opts.MaxBackoff {
		d = c.opts.MaxBackoff
	}
	// ±20 % jitter so that many control planes do not retry in step.
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// reconcile starts a health watch for every new service and stops those of
// services gone from the catalog.
func (c *Consul) reconcile(ctx context.Context, wg *sync.WaitGroup, services map[string][]string, reset bool) {
	c.mu.Lock()
	if (c.failing || reset) && c.syncDone && c.opts.RecoveryHold > 0 {
		c.holdUntil = time.Now().Add(c.opts.RecoveryHold)
		c.logger.Info("consul is back: holding service changes while it resyncs", "hold", c.opts.RecoveryHold, "indexReset", reset)
	}
	c.failing = false
	removed := false
	for name, cancel := range c.watchers {
		if _, ok := services[name]; !ok {
			cancel()
			delete(c.watchers, name)
			delete(c.entries, name)
			delete(c.pending, name)
			removed = true
		}
	}
	for name := range services {
		if _, ok := c.watchers[name]; ok || !c.usableName(name) {
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		c.watchers[name] = cancel
		if !c.syncDone {
			c.pending[name] = true
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.watchService(wctx, name)
		}()
	}
	c.checkSyncedLocked()
	c.mu.Unlock()
	if removed {
		c.publish()
	}
}

// usableName reports whether a catalog service becomes a meshgate Service:
// not Consul itself, and a valid DNS label.
func (c *Consul) usableName(name string) bool {
	if name == "consul" {
		return false
	}
	if msg := validation.IsDNS1123Label(name); len(msg) > 0 {
		if !c.skipped[name] {
			c.skipped[name] = true
			c.logger.Warn("consul service ignored: its name is not a DNS label", "service", name, "reason", strings.Join(msg, "; "))
		}
		return false
	}
	return true
}

// checkSyncedLocked closes synced once every service of the first catalog
// answer has been read.
func (c *Consul) checkSyncedLocked() {
	if c.syncDone || len(c.pending) > 0 {
		return
	}
	c.syncDone = true
	snapshot := c.buildLocked()
	c.published.Store(&snapshot)
	close(c.synced)
}

// watchService follows one service's health until ctx is done.
func (c *Consul) watchService(ctx context.Context, name string) {
	var index uint64
	failures := 0
	for ctx.Err() == nil {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: c.opts.WaitTime}).WithContext(ctx)
		entries, meta, err := c.opts.Client.Health().Service(name, "", false, q)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.queryFailed("health "+name, err, failures)
			failures++
			index = 0 // as in Run: the first query after a failure answers at once
			if !sleep(ctx, c.backoff(failures)) {
				return
			}
			continue
		}
		failures = 0
		index = max(meta.LastIndex, 1)
		c.mu.Lock()
		if ctx.Err() != nil { // removed meanwhile
			c.mu.Unlock()
			return
		}
		c.entries[name] = entries
		delete(c.pending, name)
		wasSynced := c.syncDone
		c.checkSyncedLocked()
		c.mu.Unlock()
		if wasSynced {
			c.publish()
		}
	}
}

// publish rebuilds the snapshot and, if it changed, stores it and calls
// changed; during a recovery hold it only schedules itself for the hold's end.
func (c *Consul) publish() {
	c.mu.Lock()
	if !c.syncDone {
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
	snapshot := c.buildLocked()
	changed := c.changed
	if reflect.DeepEqual(snapshot, *c.published.Load()) {
		c.mu.Unlock()
		return
	}
	c.published.Store(&snapshot)
	c.mu.Unlock()
	if changed != nil {
		changed()
	}
}

// buildLocked maps the current entries to Services.
func (c *Consul) buildLocked() []*policy.Service {
	out := make([]*policy.Service, 0, len(c.entries))
	for name, entries := range c.entries {
		if svc := ServiceFromEntries(name, entries, c.opts.IncludeWarning); svc != nil {
			out = append(out, svc)
		}
	}
	slices.SortFunc(out, func(a, b *policy.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// ServiceFromEntries maps the health entries of one Consul service to a
// meshgate Service:
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
//     are dropped;
//   - the Service's port and protocol come from consulreg.MetaPort and consulreg.MetaProtocol
//     of the first instance (by ID) that has them, its namespace from
//     consulreg.MetaNamespace;
//   - a service whose instances are all gateway nodes is nil.
func ServiceFromEntries(name string, entries []*api.ServiceEntry, includeWarning bool) *policy.Service {
	if len(entries) > 0 && !slices.ContainsFunc(entries, func(e *api.ServiceEntry) bool { return e.Service.Meta[consulreg.MetaGateway] != "true" }) {
		return nil
	}
	entries = slices.Clone(entries)
	slices.SortFunc(entries, func(a, b *api.ServiceEntry) int {
		return cmp.Or(cmp.Compare(a.Node.Node, b.Node.Node), cmp.Compare(a.Service.ID, b.Service.ID))
	})
	svc := &policy.Service{
		Name:      name,
		Namespace: policy.DefaultNamespace,
		Source:    policy.Source{File: SourcePrefix + name, Line: 1},
	}
	port := ServicePort(entries)
	svc.Spec.Ports = []policy.ServicePort{port}
	for _, e := range entries {
		if ns := e.Service.Meta[consulreg.MetaNamespace]; ns != "" && len(validation.IsDNS1123Label(ns)) == 0 {
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
		addr := instanceAddress(e)
		if addr == "" {
			continue
		}
		if meta[consulreg.MetaApp] == "true" && (sidecarIDs[e.Node.Node+"/"+meta[consulreg.MetaSidecarID]] || sidecarApps[addr]) {
			continue
		}
		svc.Spec.Endpoints = append(svc.Spec.Endpoints, policy.Endpoint{
			Address: addr,
			Labels:  labels(e.Service.Tags, meta),
			Sidecar: meta[consulreg.MetaSidecar] == "true",
		})
	}
	return svc
}

// ServicePort is the port of a discovered service: consulreg.MetaPort and
// consulreg.MetaProtocol of the first instance that has them, else port 80, HTTP.
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
		case policy.ProtocolHTTP, policy.ProtocolHTTP2:
			port.Protocol = proto
			return port
		}
	}
	return port
}

// instanceAddress is host:port of an instance, "" when it has no usable one.
func instanceAddress(e *api.ServiceEntry) string {
	host := e.Service.Address
	if host == "" && e.Node != nil {
		host = e.Node.Address
	}
	if host == "" || e.Service.Port < 1 || e.Service.Port > 65535 {
		return ""
	}
	return net.JoinHostPort(host, strconv.Itoa(e.Service.Port))
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

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
