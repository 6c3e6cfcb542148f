package upstream

import (
	"fmt"
	"math/rand/v2"
	"slices"
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

// priorityLevel is one level of a cluster's endpoints: its endpoints'
// schedule and balancer state, and the cumulative share (out of 100) of
// the requests that reach it and the levels before it.
type priorityLevel struct {
	set        *endpointSet
	cumulative int
}

// buildPriorities splits the eligible endpoints by priority level, nil
// when they have one level (the common case, which costs nothing more).
func (c *Cluster) buildPriorities(eligible []weightedAddress, pc *priorityCounts) []priorityLevel {
	if len(pc.total) < 2 {
		return nil
	}
	order := make([]uint32, 0, len(pc.total))
	for p := range pc.total {
		order = append(order, p)
	}
	slices.Sort(order)
	healthy := make([]int, len(order))
	total := make([]int, len(order))
	for i, p := range order {
		healthy[i], total[i] = len(pc.eligible[p]), pc.total[p]
	}
	loads := priorityLoads(healthy, total)
	levels := make([]priorityLevel, 0, len(order))
	cumulative := 0
	for i, p := range order {
		eps := make([]weightedAddress, 0, len(pc.eligible[p]))
		for _, j := range pc.eligible[p] {
			eps = append(eps, eligible[j])
		}
		cumulative += loads[i]
		sub := &endpointSet{schedule: schedule(eps), lb: c.balancer.prepare(eps)}
		for _, e := range eps {
			sub.addresses = append(sub.addresses, e.address)
		}
		levels = append(levels, priorityLevel{set: sub, cumulative: cumulative})
	}
	return levels
}

// pickLevel picks the priority level of a request: by its hash key when
// hashed (so that a key keeps its level), else at random.
func pickLevel(levels []priorityLevel, key uint64, hashed bool) *endpointSet {
	r := rand.Uint64()
	if hashed {
		r = mix64(key ^ 0x9e3779b97f4a7c15)
	}
	point := int(r % 100)
	for _, l := range levels {
		if point < l.cumulative && len(l.set.schedule) > 0 {
			return l.set
		}
	}
	// A level whose share rounding left empty: the last with endpoints.
	for i := len(levels) - 1; i >= 0; i-- {
		if len(levels[i].set.schedule) > 0 {
			return levels[i].set
		}
	}
	return levels[0].set
}

// nextPriority is Next (hashed: NextFor) for a set with priority levels:
// the level, then the endpoint of that level by the cluster's balancer.
func (c *Cluster) nextPriority(set *endpointSet, key uint64, hashed bool) (string, bool) {
	level := pickLevel(set.priorities, key, hashed)
	if level.lb != nil {
		return c.pick(level, key, hashed)
	}
	if len(level.schedule) == 0 {
		return "", false
	}
	n := c.next.Add(1) - 1
	return level.schedule[n%uint64(len(level.schedule))], true
}

// lbOf is the balancer state that holds endpoint: the set's, or that of
// the endpoint's priority level.
func (set *endpointSet) lbOf(endpoint string) *lbState {
	for _, l := range set.priorities {
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
		for _, l := range prev.priorities {
			prevStates = append(prevStates, l.set.lb)
		}
	}
	merged := mergeSince(prevStates)
	set.lb.carrySince(merged, now)
	for _, l := range set.priorities {
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
