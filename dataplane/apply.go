package dataplane

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/dataplane/filters"
	"github.com/meshgate/meshgate/dataplane/httpproxy"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/upstream"
	"github.com/meshgate/meshgate/dataplane/xdsclient"
)

// state is the last accepted resources of every type.
type state struct {
	versions   map[string]string
	clusters   map[string]*clusterv3.Cluster
	endpoints  map[string]*endpointv3.ClusterLoadAssignment
	listeners  map[string]*listenerSpec
	routes     map[string]*routeSpec
	secrets    map[string]*secretSpec
	ldsApplied bool
}

func newState() state {
	return state{
		versions:  make(map[string]string),
		clusters:  make(map[string]*clusterv3.Cluster),
		endpoints: make(map[string]*endpointv3.ClusterLoadAssignment),
		listeners: make(map[string]*listenerSpec),
		routes:    make(map[string]*routeSpec),
		secrets:   make(map[string]*secretSpec),
	}
}

// routeSpec is an accepted RouteConfiguration and its compiled table. The
// same *routeSpec is kept while the proto is unchanged, so pointer equality
// means "same table".
type routeSpec struct {
	config *routev3.RouteConfiguration
	table  *router.Table
}

// apply is the xdsclient.ApplyFunc. An update is checked once (the
// registry's subset check of every resource), then prepared: everything it
// needs is built, once, each immutable table reused when its proto is
// unchanged (clusters, endpoint sets, route tables, listeners and their
// filters), and the listeners' new addresses bound; any error leaves the
// accepted state and the runtime unchanged. Then it commits: the accepted
// state takes the prepared values, and sync swaps the runtime's pointers
// (endpoint sets into clusters, configurations into listeners, only where
// they changed).
func (p *Proxy) apply(_ context.Context, typeURL string, resources []proto.Message, version string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return errors.New("proxy is stopping")
	}
	err := p.applyLocked(typeURL, resources)
	if err != nil {
		p.stats.rejected.Add(1)
		p.metrics.nacks.WithLabelValues(typeName(typeURL)).Inc()
		p.logger.Warn("xDS update rejected", "type", typeName(typeURL), "version", version, "error", xdsclient.ErrorDetail(err))
		return err
	}
	p.stats.accepted.Add(1)
	p.metrics.acks.WithLabelValues(typeName(typeURL)).Inc()
	p.state.versions[typeURL] = version
	p.sync(time.Now())
	p.logger.Info("xDS update applied", "type", typeName(typeURL), "version", version, "resources", len(resources))
	return nil
}

func (p *Proxy) applyLocked(typeURL string, resources []proto.Message) error {
	var errs []error
	for _, r := range resources {
		if err := p.filters.Check(r); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	switch typeURL {
	case xdsclient.ClusterType:
		return p.applyClusters(resources)
	case xdsclient.EndpointType:
		return p.applyEndpoints(resources)
	case xdsclient.ListenerType:
		return p.applyListeners(resources)
	case xdsclient.RouteType:
		return p.applyRoutes(resources)
	case xdsclient.SecretType:
		return p.applySecrets(resources)
	}
	return fmt.Errorf("resource type %q not supported", typeURL)
}

// applyClusters builds the cluster objects of a CDS update, reusing the live
// object of every cluster whose proto is unchanged so its pools survive.
func (p *Proxy) applyClusters(resources []proto.Message) error {
	next := make(map[string]*clusterv3.Cluster, len(resources))
	for _, r := range resources {
		c, ok := r.(*clusterv3.Cluster)
		if !ok {
			return fmt.Errorf("resource of type %T in a Cluster update", r)
		}
		if _, dup := next[c.GetName()]; dup {
			return fmt.Errorf("cluster %q: defined twice", c.GetName())
		}
		next[c.GetName()] = c
	}
	accepted := make(map[string]*liveCluster, len(next))
	var fresh []*upstream.Cluster
	for name, c := range next {
		if lc := p.clusters[name]; lc != nil && proto.Equal(lc.cluster.Config(), c) {
			accepted[name] = lc
			continue
		}
		uc, err := upstream.NewCluster(c, p.logger, append(p.upstreamOptions(), upstream.Checked(), upstream.WithStats(p.metrics.requests.Cluster(name)))...)
		if err != nil {
			for _, f := range fresh {
				f.Close()
			}
			return fmt.Errorf("cluster %q: %w", name, err)
		}
		fresh = append(fresh, uc)
		lc := &liveCluster{cluster: uc, secrets: xdsclient.SecretNames([]proto.Message{c}), since: time.Now()}
		if c.GetType() == clusterv3.Cluster_EDS {
			lc.endpoint = edsName(c)
		}
		accepted[name] = lc
	}
	p.state.clusters = next
	p.accepted = accepted
	// Keep only the endpoints the accepted clusters still follow.
	wanted := make(map[string]bool, len(accepted))
	for _, lc := range accepted {
		wanted[lc.endpoint] = true
	}
	maps.DeleteFunc(p.state.endpoints, func(name string, _ *endpointv3.ClusterLoadAssignment) bool { return !wanted[name] })
	p.pruneSecrets()
	return nil
}

func edsName(c *clusterv3.Cluster) string {
	if n := c.GetEdsClusterConfig().GetServiceName(); n != "" {
		return n
	}
	return c.GetName()
}

// applyEndpoints prepares every ClusterLoadAssignment: compiled for each
// accepted cluster that follows it (installed by sync, no second build), or
// checked on its own when no cluster follows it yet. Then it merges them
// into the accepted endpoints (state of the world for the subscribed names;
// resources not in the response keep their last value).
func (p *Proxy) applyEndpoints(resources []proto.Message) error {
	next := maps.Clone(p.state.endpoints)
	seen := make(map[string]bool, len(resources))
	type prepared struct {
		cla *endpointv3.ClusterLoadAssignment
		set *upstream.Endpoints
	}
	ready := make(map[*liveCluster]prepared)
	followers := make(map[string][]*liveCluster) // by ClusterLoadAssignment name
	for _, lc := range p.accepted {
		if lc.endpoint != "" {
			followers[lc.endpoint] = append(followers[lc.endpoint], lc)
		}
	}
	for _, r := range resources {
		cla, ok := r.(*endpointv3.ClusterLoadAssignment)
		if !ok {
			return fmt.Errorf("resource of type %T in a ClusterLoadAssignment update", r)
		}
		name := cla.GetClusterName()
		if seen[name] {
			return fmt.Errorf("cluster load assignment %q: defined twice", name)
		}
		seen[name] = true
		for _, lc := range followers[name] {
			set, err := lc.cluster.PrepareEndpoints(cla)
			if err != nil {
				return err
			}
			ready[lc] = prepared{cla: cla, set: set}
		}
		if len(followers[name]) == 0 {
			if err := upstream.CheckEndpoints(cla); err != nil {
				return err
			}
		}
		next[name] = cla
	}
	p.state.endpoints = next
	for lc, prep := range ready {
		lc.prepared, lc.preparedFor = prep.set, prep.cla
	}
	return nil
}

// applyRoutes compiles every RouteConfiguration (reusing unchanged ones) and
// merges them into the accepted routes.
func (p *Proxy) applyRoutes(resources []proto.Message) error {
	next := maps.Clone(p.state.routes)
	seen := make(map[string]bool, len(resources))
	var errs []error
	for _, r := range resources {
		rc, ok := r.(*routev3.RouteConfiguration)
		if !ok {
			return fmt.Errorf("resource of type %T in a RouteConfiguration update", r)
		}
		name := rc.GetName()
		if seen[name] {
			return fmt.Errorf("route configuration %q: defined twice", name)
		}
		seen[name] = true
		spec, err := compileRoutes(rc, p.state.routes[name], p.filters)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		next[name] = spec
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	p.state.routes = next
	return nil
}

// compileRoutes returns old when rc equals its proto, else a new compiled
// spec; reg compiles the per-filter configs.
func compileRoutes(rc *routev3.RouteConfiguration, old *routeSpec, reg *filters.Registry) (*routeSpec, error) {
	if old != nil && proto.Equal(old.config, rc) {
		return old, nil
	}
	table, err := router.Compile(rc, reg)
	if err != nil {
		return nil, fmt.Errorf("route configuration %q: %w", rc.GetName(), err)
	}
	return &routeSpec{config: rc, table: table}, nil
}

// applyListeners parses every listener, binds the new addresses (a failed
// bind rejects the whole update), then commits: servers whose address is gone
// drain in the background, the others get their new route tables in sync.
func (p *Proxy) applyListeners(resources []proto.Message) error {
	specs := make(map[string]*listenerSpec, len(resources))
	byAddress := make(map[string]string, len(resources))
	env := p.parseEnv()
	var errs []error
	for _, r := range resources {
		l, ok := r.(*listenerv3.Listener)
		if !ok {
			return fmt.Errorf("resource of type %T in a Listener update", r)
		}
		if _, dup := specs[l.GetName()]; dup {
			return fmt.Errorf("listener %q: defined twice", l.GetName())
		}
		spec, err := parseListener(l, p.state.listeners[l.GetName()], env)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		dup := false
		for _, addr := range spec.addresses() {
			if other, taken := byAddress[addr]; taken {
				errs = append(errs, fmt.Errorf("listener %q: address %s already used by listener %q", spec.name, addr, other))
				dup = true
			}
		}
		if dup {
			continue
		}
		for _, addr := range spec.addresses() {
			byAddress[addr] = spec.name
		}
		specs[spec.name] = spec
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	// Bind every address not served yet; unchanged ones keep their server.
	// A listener's address that cannot be bound rejects the update; one of
	// its additional_addresses does not: the listener serves on the others
	// and the next update tries it again.
	bound := make(map[string]*server)
	for _, spec := range specs {
		for i, addr := range spec.addresses() {
			if s := p.servers[addr]; s != nil {
				continue
			}
			s, err := p.listen(spec, addr)
			if err != nil && i > 0 {
				p.logger.Error("additional address of listener not bound: not served", "listener", spec.name, "address", addr, "error", err)
				delete(byAddress, addr)
				continue
			}
			if err != nil {
				for _, b := range bound {
					_ = b.ln.Close()
				}
				return err
			}
			bound[addr] = s
		}
	}

	// Commit.
	now := time.Now()
	for addr, s := range p.servers {
		spec := specs[byAddress[addr]]
		if spec != nil && spec.params == s.params {
			s.listener, s.secrets, s.replacement = spec.name, spec.secrets, nil
			continue
		}
		if spec != nil && !p.secretsReady(spec.secrets) {
			// New server settings whose secrets have not arrived: the
			// current server keeps serving until they do (see sync).
			if s.replacement == nil || s.replacement.params != spec.params {
				s.replacementSince = now
			}
			s.listener, s.replacement = spec.name, spec
			continue
		}
		delete(p.servers, addr)
		_ = s.ln.Close() // stop accepting now; drain in the background
		if spec != nil {
			// Same address, new server settings: rebind on the port just
			// released, before the old server's GOAWAY sends its HTTP/2
			// clients to a new connection (the kernel queues it until the
			// new server serves).
			ns, err := p.listen(spec, addr)
			if err != nil {
				p.logger.Error("rebinding listener with new settings failed", "listener", spec.name, "error", err)
			} else {
				bound[addr] = ns
			}
		}
		p.drainInBackground(s)
	}
	for addr, s := range bound {
		p.servers[addr] = s
		if p.secretsReady(s.secrets) {
			p.serve(s)
		} // else bound, not serving until its secrets arrive (see sync)
	}
	p.state.listeners = specs
	p.state.ldsApplied = true
	wanted := make(map[string]bool, len(specs))
	for _, spec := range specs {
		wanted[spec.rds] = true
		for _, sub := range spec.captureHTTP {
			wanted[sub.rds] = true
		}
	}
	maps.DeleteFunc(p.state.routes, func(name string, _ *routeSpec) bool { return !wanted[name] })
	p.pruneSecrets()
	p.ready.Store(true)
	return nil
}

// sync builds the runtime from the accepted state: endpoints into cluster
// objects, route tables into listeners (make before break), the live cluster
// set, and a new httpproxy.Config stored into every listener. Clusters no
// longer live are closed after the swap.
func (p *Proxy) sync(now time.Time) {
	nextDeadline := p.syncHeldServers(now)
	for _, lc := range p.accepted {
		if lc.endpoint == "" {
			continue
		}
		cla := p.state.endpoints[lc.endpoint]
		if cla == nil || lc.applied == cla {
			continue
		}
		set := lc.prepared
		if lc.preparedFor != cla {
			// A cluster accepted after its endpoints: compile them for it.
			var err error
			if set, err = lc.cluster.PrepareEndpoints(cla); err != nil {
				p.logger.Error("setting endpoints failed", "cluster", lc.cluster.Config().GetName(), "error", err)
				continue
			}
		}
		lc.cluster.UseEndpoints(set)
		lc.applied, lc.prepared, lc.preparedFor = cla, nil, nil
	}

	for s, spec := range p.httpServers {
		if spec == nil {
			continue
		}
		desired := spec.inline
		if desired == nil {
			desired = p.state.routes[spec.rds]
		}
		if desired == nil || desired == s.active {
			s.pending = nil
			continue // not received yet, or unchanged
		}
		if s.pending != desired {
			s.pending, s.pendingSince = desired, now
		}
		missing := p.missingClusters(desired.table)
		if s.active != nil {
			// A cluster CDS does not have that the serving table already
			// routes to (an entry the control plane means to be absent, as
			// the Gateway API's invalid backend, answered with
			// cluster_not_found_response_code) will not arrive by waiting.
			missing = slices.DeleteFunc(missing, func(name string) bool {
				return p.accepted[name] == nil && s.active.table.RoutesTo(name)
			})
		}
		expired := now.Sub(s.pendingSince) >= holdTimeout
		if s.active != nil && len(missing) > 0 && !expired {
			nextDeadline = earliest(nextDeadline, s.pendingSince.Add(holdTimeout))
			p.logger.Debug("holding route table until its clusters arrive", "listener", s.listener, "missing", missing)
			continue
		}
		if len(missing) > 0 {
			p.logger.Warn("installing route table with missing clusters", "listener", s.listener,
				"route_config", desired.config.GetName(), "missing", missing)
		}
		s.active, s.pending = desired, nil
	}

	live := make(map[string]*liveCluster, len(p.accepted))
	for name, lc := range p.accepted {
		// A changed cluster whose secrets have not arrived: the previous
		// one keeps serving until they do (at most holdTimeout).
		if old := p.clusters[name]; old != nil && old != lc && !p.secretsReady(lc.secrets) {
			if deadline := lc.since.Add(holdTimeout); now.Before(deadline) {
				nextDeadline = earliest(nextDeadline, deadline)
				live[name] = old
				continue
			}
		}
		live[name] = lc
	}
	for s := range p.httpServers {
		if s.active == nil {
			continue
		}
		for _, name := range s.active.table.Clusters() {
			if _, ok := live[name]; !ok {
				if old := p.clusters[name]; old != nil {
					live[name] = old // removed from CDS, still routed to: keep
				}
			}
		}
	}
	clusters := make(map[string]*upstream.Cluster, len(live))
	for name, lc := range live {
		clusters[name] = lc.cluster
	}
	p.syncL4(clusters)
	for s, spec := range p.httpServers {
		if s.active == nil {
			continue
		}
		if s.stored.spec == spec && s.stored.routes == s.active && maps.Equal(s.stored.clusters, clusters) {
			continue // the handler's configuration is this one already
		}
		s.handler.stripAnyHostPort.Store(spec != nil && spec.stripAnyHostPort)
		cfg := &httpproxy.Config{Routes: s.active.table, Clusters: clusters}
		if spec != nil {
			cfg.UseRemoteAddress = spec.useRemoteAddress
			cfg.NormalizePath, cfg.MergeSlashes = spec.normalizePath, spec.mergeSlashes
			cfg.WebSocket = spec.webSocket
			cfg.Filters = spec.filters
			cfg.Tracer = p.tracerFor(spec.tracing, clusters)
			cfg.AccessLogs = p.accessLogsFor(spec.accessLogs)
			cfg.Metrics = p.metrics.requests.Listener(spec.name, s.active.table)
		}
		s.handler.proxy.Store(cfg)
		if spec != nil && (s.stored.spec != spec || s.stored.routes != s.active) {
			spec.warnPerRouteMismatches(s.active.table, p.logger)
		}
		s.stored.spec, s.stored.routes, s.stored.clusters = spec, s.active, clusters
	}
	for name, old := range p.clusters {
		if live[name] != old {
			old.cluster.Close()
		}
	}
	prevClusters := p.clusters
	p.clusters = live
	p.notifyClusterWatchers(prevClusters)
	p.syncTracers(clusters)
	p.syncAccessLogs()

	if p.holdTimer != nil {
		p.holdTimer.Stop()
		p.holdTimer = nil
	}
	if !nextDeadline.IsZero() {
		p.holdTimer = time.AfterFunc(nextDeadline.Sub(now), p.onHoldExpired)
	}
}

// onHoldExpired re-syncs when a held route table's wait is over.
func (p *Proxy) onHoldExpired() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.sync(time.Now())
}

// missingClusters lists the clusters table routes to that are not accepted,
// or whose endpoints have not arrived.
func (p *Proxy) missingClusters(table *router.Table) []string {
	var missing []string
	for _, name := range table.Clusters() {
		lc := p.accepted[name]
		if lc == nil || lc.endpoint != "" && p.state.endpoints[lc.endpoint] == nil || !p.secretsReady(lc.secrets) {
			missing = append(missing, name)
		}
	}
	slices.Sort(missing)
	return missing
}

// syncHeldServers starts the bound servers and performs the rebinds that
// waited for their secrets, once they arrived or the wait is over. It
// returns the earliest deadline of those still waiting.
func (p *Proxy) syncHeldServers(now time.Time) time.Time {
	var next time.Time
	for addr, s := range p.servers {
		if spec := s.replacement; spec != nil {
			deadline := s.replacementSince.Add(holdTimeout)
			if !p.secretsReady(spec.secrets) && now.Before(deadline) {
				next = earliest(next, deadline)
				continue
			}
			delete(p.servers, addr)
			_ = s.ln.Close()
			ns, err := p.listen(spec, addr) // bound before the old server's GOAWAY, as in applyListeners
			p.drainInBackground(s)
			if err != nil {
				p.logger.Error("rebinding listener with new settings failed", "listener", spec.name, "error", err)
				continue
			}
			ns.active = s.active
			p.servers[addr] = ns
			s = ns
		}
		if !s.started {
			deadline := s.bound.Add(holdTimeout)
			if !p.secretsReady(s.secrets) && now.Before(deadline) {
				next = earliest(next, deadline)
				continue
			}
			if !p.secretsReady(s.secrets) {
				p.logger.Warn("serving listener whose secrets have not arrived", "listener", s.listener, "secrets", s.secrets)
			}
			p.serve(s)
		}
	}
	return next
}

// earliest is the earlier of two deadlines; zero means none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

func typeName(typeURL string) string {
	switch typeURL {
	case xdsclient.ClusterType:
		return "CDS"
	case xdsclient.EndpointType:
		return "EDS"
	case xdsclient.ListenerType:
		return "LDS"
	case xdsclient.RouteType:
		return "RDS"
	case xdsclient.SecretType:
		return "SDS"
	}
	return typeURL
}
