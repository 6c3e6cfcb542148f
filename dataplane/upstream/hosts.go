package upstream

import (
	"sync/atomic"
	"time"
)

// host is the state of one endpoint of a cluster that outlives endpoint
// updates (an endpoint keeps it for as long as its address stays in the
// cluster): its open connections and, when the cluster watches its
// endpoints (outlier detection, active health checks, circuit breakers),
// its requests in flight, outlier ejection and active check state.
type host struct {
	address string

	connections    atomic.Int64 // open connections to the endpoint
	activeRequests atomic.Int64 // requests awaiting their response head (watched clusters)

	// Outlier detection (outlier.go).
	ejected        atomic.Bool
	ejectedUntil   atomic.Int64 // unix nanoseconds, when ejected
	timesEjected   atomic.Int64 // Envoy's num_ejections: the ejection time multiplier
	consecutive5xx atomic.Int64
	consecutiveGW  atomic.Int64 // consecutive gateway failures (502, 503, 504, connect failure, reset, timeout)
	successes      atomic.Int64 // in the current interval
	failures       atomic.Int64 // in the current interval

	// Active health checks (healthcheck.go).
	checkFailed    atomic.Bool  // failed its active check (or was never checked)
	checked        atomic.Bool  // has had a check result
	checkSuccesses atomic.Int64 // consecutive
	checkFailures  atomic.Int64 // consecutive
	lastCheck      atomic.Int64 // unix nanoseconds
}

// available reports whether the endpoint may receive traffic: not ejected,
// and not failing its active check.
func (h *host) available() bool { return !h.ejected.Load() && !h.checkFailed.Load() }

// healthyPanicThreshold is Envoy's default common_lb_config
// healthy_panic_threshold: when less than this percentage of a cluster's
// endpoints are available, the cluster routes to all of them (panic mode),
// as failing everything would be worse.
const healthyPanicThreshold = 50

// hostFor returns the host of address: that of the current endpoints when
// it has one, else a new one, so that an endpoint
// keeps its state across updates. A new host of a cluster with active
// health checks starts as failing its check until the first one passes.
func (c *Cluster) hostFor(prev map[string]*host, address string) *host {
	if h := prev[address]; h != nil {
		return h
	}
	h := &host{address: address}
	if c.health != nil {
		h.checkFailed.Store(true)
	}
	return h
}

// refreshAvailable recounts the available endpoints of the current set
// after a change of health or ejection, and rebuilds the schedule Next
// picks from: the available endpoints, in schedule order; all of them (nil)
// in panic mode. Refreshes are serialized, so that the last one to store
// has seen every change made before it started.
func (c *Cluster) refreshAvailable() {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	c.endpoints.Load().refresh()
}

// refresh is refreshAvailable for set.
func (set *endpointSet) refresh() {
	if set.priorities != nil {
		set.priorities.refresh() // priority.go
	}
	n := int64(0)
	for _, h := range set.hosts {
		if h.available() {
			n++
		}
	}
	set.available.Store(n)
	if set.scheduleHosts == nil {
		return
	}
	if n*100 < healthyPanicThreshold*int64(len(set.hosts)) {
		set.active.Store(nil) // panic mode: every endpoint
		return
	}
	if n == int64(len(set.hosts)) {
		set.active.Store(&set.schedule)
		return
	}
	active := make([]string, 0, len(set.schedule))
	for _, h := range set.scheduleHosts {
		if h.available() {
			active = append(active, h.address)
		}
	}
	set.active.Store(&active)
}

// availableSchedule is the schedule a balancer picks from: the available
// endpoints' (filtered true) for a watched cluster with unavailable
// endpoints, not in panic mode; the whole schedule otherwise.
func (set *endpointSet) availableSchedule() (schedule []string, filtered bool) {
	if set.scheduleHosts == nil {
		return set.schedule, false
	}
	p := set.active.Load()
	if p == nil || len(*p) == 0 || len(*p) == len(set.schedule) {
		return set.schedule, false
	}
	return *p, true
}

// isAvailable reports whether the endpoint at address may receive traffic.
func (set *endpointSet) isAvailable(address string) bool {
	h := set.byAddress[address]
	return h == nil || h.available()
}

// nextWatched is Next for a cluster that watches its endpoints: the n-th
// of the available endpoints' schedule; of every endpoint's in panic mode.
func (set *endpointSet) nextWatched(n uint64) string {
	if p := set.active.Load(); p != nil && len(*p) > 0 {
		return (*p)[n%uint64(len(*p))]
	}
	return set.schedule[n%uint64(len(set.schedule))]
}

// Active check states of EndpointStatus.ActiveCheck.
const (
	CheckPassing = "passing"
	CheckFailing = "failing"
	CheckPending = "pending" // not checked yet: no traffic until it passes
)

// EndpointStatus is what the admin's /clusters shows of one endpoint.
type EndpointStatus struct {
	Address string `json:"address"`
	// Health is discovery's: HEALTHY (or UNKNOWN) endpoints may receive
	// traffic; the others (UNHEALTHY, DRAINING, TIMEOUT, DEGRADED) do not.
	Health string `json:"health"`
	// ActiveCheck is CheckPassing, CheckFailing or CheckPending; empty
	// without health_checks.
	ActiveCheck string     `json:"active_check,omitempty"`
	LastCheck   *time.Time `json:"last_check,omitempty"`
	// Ejected is set while outlier detection ejects the endpoint, until
	// EjectedUntil (it comes back at the first interval after it).
	Ejected      bool       `json:"ejected"`
	EjectedUntil *time.Time `json:"ejected_until,omitempty"`
	TimesEjected int64      `json:"times_ejected"`
	Weight       uint32     `json:"weight"`
	// ActiveRequests are the requests awaiting their response head; counted
	// only for clusters with circuit breakers, outlier detection or health
	// checks (nil otherwise).
	ActiveRequests *int64 `json:"active_requests,omitempty"`
	Connections    int64  `json:"connections"`
	// Available: the endpoint receives traffic (in panic mode, every
	// endpoint discovery lists does).
	Available bool `json:"available"`
}

// ClusterStatus is what the admin's /clusters shows of one cluster.
type ClusterStatus struct {
	Name             string         `json:"name"`
	Protocol         string         `json:"protocol"`
	CircuitBreakers  *BreakerStatus `json:"circuit_breakers,omitempty"`
	OutlierDetection bool           `json:"outlier_detection"`
	HealthChecks     bool           `json:"health_checks"`
	// Panic is set when fewer than half the endpoints are available: the
	// cluster then routes to all of them.
	Panic     bool             `json:"panic"`
	Endpoints []EndpointStatus `json:"endpoints"`
}

// Status reports the cluster's endpoints and their state.
func (c *Cluster) Status() ClusterStatus {
	set := c.endpoints.Load()
	s := ClusterStatus{
		Name: c.name, Protocol: c.protocol.String(),
		OutlierDetection: c.outlier != nil, HealthChecks: c.health != nil,
		Endpoints: make([]EndpointStatus, 0, len(set.hosts)+len(set.excluded)),
	}
	if c.breaker != nil {
		b := c.breaker.Status()
		s.CircuitBreakers = &b
	}
	s.Panic = c.watched && len(set.hosts) > 0 && set.available.Load()*100 < healthyPanicThreshold*int64(len(set.hosts))
	for i, h := range set.hosts {
		e := EndpointStatus{
			Address: h.address, Health: "HEALTHY", Weight: set.weights[i],
			Connections: h.connections.Load(), TimesEjected: h.timesEjected.Load(),
			Ejected:   h.ejected.Load(),
			Available: !c.watched || s.Panic || h.available(),
		}
		if e.Ejected {
			t := time.Unix(0, h.ejectedUntil.Load()).UTC()
			e.EjectedUntil = &t
		}
		if c.watched {
			n := h.activeRequests.Load()
			e.ActiveRequests = &n
		}
		if c.health != nil {
			switch {
			case !h.checked.Load():
				e.ActiveCheck = CheckPending
			case h.checkFailed.Load():
				e.ActiveCheck = CheckFailing
			default:
				e.ActiveCheck = CheckPassing
			}
			if at := h.lastCheck.Load(); at != 0 {
				t := time.Unix(0, at).UTC()
				e.LastCheck = &t
			}
		}
		s.Endpoints = append(s.Endpoints, e)
	}
	for _, x := range set.excluded {
		s.Endpoints = append(s.Endpoints, EndpointStatus{Address: x.Address, Health: x.Health})
	}
	return s
}
