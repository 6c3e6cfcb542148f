package upstream

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"
)

// Priority levels of a load assignment (LocalityLbEndpoints.priority), as
// Envoy balances them: the requests go to priority 0 while it is healthy
// enough, and spill over to the next levels as it is not (the control
// plane puts a proxy's own zone at 0 and the other zones at 1 for a
// cluster that prefers local endpoints).
const (
	// overprovisioningFactor is Envoy's default (140%): a level gets all the
	// requests while at least 1/1.4 (71.4%) of its endpoints are healthy.
	overprovisioningFactor = 140
	// maxPriority bounds a locality's priority.
	maxPriority = 127
)

// priorityCounts counts the endpoints of each priority level of a load
// assignment, and which of the eligible endpoints (by index) each has.
type priorityCounts struct {
	total    map[uint32]int
	eligible map[uint32][]int
}

// count records an endpoint of priority p, eligible at index i (-1: not
// eligible, its health_status says so).
func (pc *priorityCounts) count(p uint32, i int) error {
	if p > maxPriority {
		return fmt.Errorf("priority: %d is more than %d", p, maxPriority)
	}
	if pc.total == nil {
		pc.total, pc.eligible = map[uint32]int{}, map[uint32][]int{}
	}
	pc.total[p]++
	if i >= 0 {
		pc.eligible[p] = append(pc.eligible[p], i)
	}
	return nil
}

// priorityLoads is the share (percent, summing to 100) of the requests
// each priority level gets, given its healthy and total endpoints, as
// Envoy computes it: a level's health is its healthy share times the
// overprovisioning factor (at most 100); levels take the requests in
// order, each its health normalized by the total health (at most 100),
// what rounding leaves going to the first healthy level. With no healthy
// endpoint at all, level 0 gets everything.
func priorityLoads(healthy, total []int) []int {
	loads := make([]int, len(total))
	if len(total) == 0 {
		return loads
	}
	health := make([]int, len(total))
	sum := 0
	for i := range total {
		if total[i] > 0 {
			health[i] = min(100, overprovisioningFactor*healthy[i]/total[i])
		}
		sum += health[i]
	}
	normalized := min(100, sum)
	if normalized == 0 {
		loads[0] = 100
		return loads
	}
	remaining := 100
	for i := range health {
		loads[i] = min(remaining, health[i]*100/normalized)
		remaining -= loads[i]
	}
	if remaining > 0 {
		for i := range health {
			if health[i] > 0 {
				loads[i] += remaining
				break
			}
		}
	}
	return loads
}

// priorityLevel is one level of a cluster's endpoints: its endpoints as
// a set of their own (schedule, balancer state and, when the cluster
// watches its endpoints, their availability) and its size, the endpoints
// discovery lists at that priority, healthy or not.
type priorityLevel struct {
	set   *endpointSet
	total int
}

// priorityLevels are the priority levels of an endpoint set, in priority
// order, and the cumulative share (out of 100) of the requests that reach
// each level and those before it: from discovery's health, and, for a
// cluster that watches its endpoints, their ejection and active checks
// (refreshed with the set's availability).
type priorityLevels struct {
	levels     []priorityLevel
	cumulative atomic.Pointer[[]int]
}

// buildPriorities splits the eligible endpoints of set by priority level,
// nil when they have one level (the common case, which costs nothing
// more).
func (c *Cluster) buildPriorities(set *endpointSet, eligible []weightedAddress, pc *priorityCounts) *priorityLevels {
	if len(pc.total) < 2 {
		return nil
	}
	order := make([]uint32, 0, len(pc.total))
	for p := range pc.total {
		order = append(order, p)
	}
	slices.Sort(order)
	out := &priorityLevels{levels: make([]priorityLevel, 0, len(order))}
	for _, p := range order {
		eps := make([]weightedAddress, 0, len(pc.eligible[p]))
		for _, j := range pc.eligible[p] {
			eps = append(eps, eligible[j])
		}
		sub := &endpointSet{schedule: schedule(eps), lb: c.balancer.prepare(eps)}
		for _, e := range eps {
			sub.addresses = append(sub.addresses, e.address)
			if h := set.byAddress[e.address]; h != nil {
				if sub.byAddress == nil {
					sub.byAddress = map[string]*host{}
				}
				sub.byAddress[e.address] = h
			}
		}
		if c.watched && len(sub.schedule) > 0 {
			sub.scheduleHosts = make([]*host, len(sub.schedule))
			for i, a := range sub.schedule {
				sub.scheduleHosts[i] = set.byAddress[a]
			}
		}
		out.levels = append(out.levels, priorityLevel{set: sub, total: pc.total[p]})
	}
	out.refresh()
	return out
}

// refresh recounts each level's available endpoints (those not ejected
// nor failing their active check; every eligible one for a cluster that
// does not watch its endpoints) and the levels' shares. A level picks among
// its available endpoints, or among all of them when none is (it then gets
// requests only when no level has any: Envoy's panic).
func (pl *priorityLevels) refresh() {
	healthy := make([]int, len(pl.levels))
	total := make([]int, len(pl.levels))
	for i, l := range pl.levels {
		total[i] = l.total
		sub := l.set
		if sub.scheduleHosts == nil {
			healthy[i] = len(sub.addresses)
			continue
		}
		n, seen := 0, map[*host]bool{}
		active := make([]string, 0, len(sub.schedule))
		for _, h := range sub.scheduleHosts {
			if h.available() {
				active = append(active, h.address)
				if !seen[h] {
					seen[h] = true
					n++
				}
			}
		}
		healthy[i] = n
		sub.available.Store(int64(n))
		if n == 0 {
			sub.active.Store(nil)
		} else {
			sub.active.Store(&active)
		}
	}
	loads := priorityLoads(healthy, total)
	cumulative := make([]int, len(loads))
	sum := 0
	for i, l := range loads {
		sum += l
		cumulative[i] = sum
	}
	pl.cumulative.Store(&cumulative)
}

// pickLevel picks the priority level of a request: by its hash key when
// hashed (so that a key keeps its level), else at random.
func (pl *priorityLevels) pickLevel(key uint64, hashed bool) *endpointSet {
	r := rand.Uint64()
	if hashed {
		r = mix64(key ^ 0x9e3779b97f4a7c15)
	}
	point := int(r % 100)
	cumulative := *pl.cumulative.Load()
	for i, l := range pl.levels {
		if point < cumulative[i] && len(l.set.schedule) > 0 {
			return l.set
		}
	}
	// A level whose share rounding left empty: the last with endpoints.
	for i := len(pl.levels) - 1; i >= 0; i-- {
		if len(pl.levels[i].set.schedule) > 0 {
			return pl.levels[i].set
		}
	}
	return pl.levels[0].set
}

// nextPriority is Next (hashed: NextFor) for a set with priority levels:
// the level, then the endpoint of that level by the cluster's balancer.
func (c *Cluster) nextPriority(set *endpointSet, key uint64, hashed bool) (string, bool) {
	level := set.priorities.pickLevel(key, hashed)
	if level.lb != nil {
		return c.pick(level, key, hashed)
	}
	if len(level.schedule) == 0 {
		return "", false
	}
	n := c.next.Add(1) - 1
	if level.scheduleHosts != nil {
		return level.nextWatched(n), true
	}
	return level.schedule[n%uint64(len(level.schedule))], true
}

// allLevels is the levels, none for nil.
func (pl *priorityLevels) allLevels() []priorityLevel {
	if pl == nil {
		return nil
	}
	return pl.levels
}

// lbOf is the balancer state that holds endpoint: the set's, or that of
// the endpoint's priority level.
func (set *endpointSet) lbOf(endpoint string) *lbState {
	for _, l := range set.priorities.levels {
		if l.set.lb != nil {
			if _, ok := l.set.lb.index[endpoint]; ok {
				return l.set.lb
			}
		}
	}
	return set.lb
}

// carrySince carries the time each endpoint joined (slow start) from prev
// to set and its priority levels.
func (set *endpointSet) carrySince(prev *endpointSet, now time.Time) {
	if set.priorities == nil && (prev == nil || prev.priorities == nil) {
		var prevLB *lbState
		if prev != nil {
			prevLB = prev.lb
		}
		set.lb.carrySince(prevLB, now)
		return
	}
	var prevStates []*lbState
	if prev != nil {
		prevStates = append(prevStates, prev.lb)
		for _, l := range prev.priorities.allLevels() {
			prevStates = append(prevStates, l.set.lb)
		}
	}
	merged := mergeSince(prevStates)
	set.lb.carrySince(merged, now)
	for _, l := range set.priorities.allLevels() {
		l.set.lb.carrySince(merged, now)
	}
}

// mergeSince is one state holding the join times of every endpoint of
// states (nil when none has any).
func mergeSince(states []*lbState) *lbState {
	var out *lbState
	for _, st := range states {
		if st == nil || len(st.addresses) == 0 {
			continue
		}
		if out == nil {
			out = &lbState{index: map[string]int{}}
		}
		for i, a := range st.addresses {
			if _, dup := out.index[a]; dup {
				continue
			}
			out.index[a] = len(out.addresses)
			out.addresses = append(out.addresses, a)
			var since time.Time
			if st.since != nil {
				since = st.since[i]
			}
			out.since = append(out.since, since)
		}
	}
	return out
}
