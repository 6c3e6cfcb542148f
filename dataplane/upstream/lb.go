package upstream

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// lbPolicy is a cluster's lb_policy.
type lbPolicy uint8

const (
	lbRoundRobin lbPolicy = iota
	lbLeastRequest
	lbRandom
	lbRingHash
	lbMaglev
)

// Load balancer bounds and defaults (Envoy's).
const (
	defaultMinRingSize = 1024
	defaultMaxRingSize = 8 << 20
	// maxRingSize bounds maximum_ring_size: the ring is built on every
	// endpoint update.
	maxRingSize        = 8 << 20
	defaultMaglevTable = 65537
	// maxMaglevTable bounds maglev_lb_config.table_size (Envoy's limit).
	maxMaglevTable = 5000011
	// minSlowStartShare is the least share of its weight an endpoint in
	// slow start gets (Envoy's min_weight_percent default, 10%).
	minSlowStartShare = 0.1
	// leastRequestChoices is the choice_count implemented: two.
	leastRequestChoices = 2
)

// balancer is how a cluster picks endpoints: its lb_policy and lb config.
// Immutable.
type balancer struct {
	policy    lbPolicy
	slowStart time.Duration
	// ringMin and ringMax bound a ring hash's ring; maglevSize is the
	// Maglev lookup table's size (a prime).
	ringMin, ringMax uint64
	maglevSize       uint64
}

// balancerOf reads a cluster's lb_policy and lb config.
func balancerOf(c *clusterv3.Cluster) (balancer, error) {
	b := balancer{ringMin: defaultMinRingSize, ringMax: defaultMaxRingSize, maglevSize: defaultMaglevTable}
	var slowStart *clusterv3.Cluster_SlowStartConfig
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		b.policy = lbRoundRobin
		slowStart = c.GetRoundRobinLbConfig().GetSlowStartConfig()
	case clusterv3.Cluster_LEAST_REQUEST:
		b.policy = lbLeastRequest
		lr := c.GetLeastRequestLbConfig()
		if n := lr.GetChoiceCount(); n != nil && n.GetValue() != leastRequestChoices {
			return b, fmt.Errorf("least_request_lb_config.choice_count: %d not supported (want %d)", n.GetValue(), leastRequestChoices)
		}
		slowStart = lr.GetSlowStartConfig()
	case clusterv3.Cluster_RANDOM:
		b.policy = lbRandom
	case clusterv3.Cluster_RING_HASH:
		b.policy = lbRingHash
		rh := c.GetRingHashLbConfig()
		if v := rh.GetMinimumRingSize(); v != nil {
			b.ringMin = v.GetValue()
		}
		if v := rh.GetMaximumRingSize(); v != nil {
			b.ringMax = v.GetValue()
		}
		if b.ringMin < 1 || b.ringMax > maxRingSize || b.ringMin > b.ringMax {
			return b, fmt.Errorf("ring_hash_lb_config: ring size %d to %d: want 1 <= minimum <= maximum <= %d", b.ringMin, b.ringMax, maxRingSize)
		}
	case clusterv3.Cluster_CLUSTER_PROVIDED:
		// An ORIGINAL_DST cluster: the connection says where it goes
		// (Cluster.OriginalDestination); Next has no endpoint to give.
		b.policy = lbRoundRobin
	case clusterv3.Cluster_MAGLEV:
		b.policy = lbMaglev
		if v := c.GetMaglevLbConfig().GetTableSize(); v != nil {
			b.maglevSize = v.GetValue()
		}
		if b.maglevSize > maxMaglevTable || !isPrime(b.maglevSize) {
			return b, fmt.Errorf("maglev_lb_config.table_size: %d: want a prime up to %d", b.maglevSize, maxMaglevTable)
		}
	default:
		return b, fmt.Errorf("lb_policy: %v not supported", c.GetLbPolicy())
	}
	if slowStart != nil {
		w := slowStart.GetSlowStartWindow()
		if err := w.CheckValid(); err != nil || w.AsDuration() <= 0 {
			return b, errors.New("slow_start_config.slow_start_window: must be a positive duration")
		}
		b.slowStart = w.AsDuration()
	}
	return b, nil
}

// upstreamIdleTimeout is common_http_protocol_options.idle_timeout of the
// cluster's protocol options, or def.
func upstreamIdleTimeout(c *clusterv3.Cluster, def time.Duration) (time.Duration, error) {
	anyOpts, ok := c.GetTypedExtensionProtocolOptions()[protocolOptionsKey]
	if !ok {
		return def, nil
	}
	var opts httpv3.HttpProtocolOptions
	if err := anyOpts.UnmarshalTo(&opts); err != nil {
		return 0, fmt.Errorf("typed_extension_protocol_options[%q]: %w", protocolOptionsKey, err)
	}
	d := opts.GetCommonHttpProtocolOptions().GetIdleTimeout()
	if d == nil {
		return def, nil
	}
	if err := d.CheckValid(); err != nil || d.AsDuration() <= 0 {
		return 0, fmt.Errorf("typed_extension_protocol_options[%q].common_http_protocol_options.idle_timeout: must be a positive duration", protocolOptionsKey)
	}
	return d.AsDuration(), nil
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// lbState is what a balancer other than plain round robin keeps of one
// endpoint set. Immutable but for the active request counts.
type lbState struct {
	policy    lbPolicy
	slowStart time.Duration
	addresses []string       // the eligible endpoints
	index     map[string]int // address → position in addresses
	weights   []uint64
	// active counts the requests in flight to each endpoint (least request).
	active []atomic.Int64
	// since is when each endpoint joined the cluster (slow start); zero:
	// it was there from the cluster's first endpoints.
	since []time.Time
	ring  []ringPoint // ring hash, sorted by hash
	table []int32     // Maglev: endpoint position per slot
}

type ringPoint struct {
	hash     uint64
	endpoint int32
}

// prepare builds the balancer's state of an endpoint set: nil for plain
// round robin, which needs none.
func (b balancer) prepare(eps []weightedAddress) *lbState {
	if b.policy == lbRoundRobin && b.slowStart == 0 {
		return nil
	}
	st := &lbState{policy: b.policy, slowStart: b.slowStart, index: make(map[string]int, len(eps))}
	for i, e := range eps {
		st.addresses = append(st.addresses, e.address)
		st.weights = append(st.weights, e.weight)
		if _, dup := st.index[e.address]; !dup {
			st.index[e.address] = i
		}
	}
	if len(eps) == 0 {
		return st
	}
	switch b.policy {
	case lbLeastRequest:
		st.active = make([]atomic.Int64, len(eps))
	case lbRingHash:
		st.ring = buildRing(eps, b.ringMin, b.ringMax)
	case lbMaglev:
		st.table = buildMaglev(eps, b.maglevSize)
	}
	if b.slowStart > 0 {
		st.since = make([]time.Time, len(eps))
	}
	return st
}

// carrySince gives st's endpoints the time they joined: that of prev for
// those prev had, now for the others, zero when prev had none (the
// cluster's first endpoints are not in slow start).
func (st *lbState) carrySince(prev *lbState, now time.Time) {
	if st == nil || st.since == nil || prev == nil || len(prev.addresses) == 0 {
		return
	}
	for i, a := range st.addresses {
		if j, ok := prev.index[a]; ok && prev.since != nil {
			st.since[i] = prev.since[j]
		} else if !ok {
			st.since[i] = now
		}
	}
}

// share is the part of its weight endpoint i gets: less than 1 in slow
// start, growing linearly over the window from minSlowStartShare.
func (st *lbState) share(i int, now time.Time) float64 {
	if st.since == nil || st.since[i].IsZero() {
		return 1
	}
	elapsed := now.Sub(st.since[i])
	if elapsed >= st.slowStart {
		return 1
	}
	return max(minSlowStartShare, float64(elapsed)/float64(st.slowStart))
}

// HashKey is the hash of a consistent-hash key (a header or cookie value,
// a client address): FNV-1a, mixed. Every proxy hashes alike, so a key
// reaches the same endpoint through any of them.
func HashKey(s string) uint64 {
	h := fnv.New64a()
	_, _ = io.WriteString(h, s)
	return mix64(h.Sum64())
}

// mix64 is splitmix64's finalizer: FNV's low bits are spread over all.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// ringPointsPerWeight is the least number of points of an endpoint of the
// lightest weight; ringMinEndpoints is the number of such endpoints whose
// points make a ring of minimum_ring_size.
const (
	ringPointsPerWeight = 128
	ringMinEndpoints    = 8
)

// buildRing builds a ring hash's ring: each endpoint gets points in
// proportion to its weight, an endpoint of the lightest weight
// max(ringPointsPerWeight, ringMin/ringMinEndpoints) of them, scaled down
// when the ring would have more than ringMax points. An endpoint's points
// do not depend on how many endpoints there are, so when one leaves (or
// comes) only its keys move. Envoy instead scales every endpoint's points
// so that the ring has at least ringMin points, which moves keys of the
// endpoints that stay whenever that scale changes; here a ring of fewer
// than ringMinEndpoints endpoints has fewer than ringMin points, which
// costs nothing in balance (each endpoint still has at least
// ringPointsPerWeight points).
func buildRing(eps []weightedAddress, ringMin, ringMax uint64) []ringPoint {
	var sum uint64
	minWeight := eps[0].weight
	for _, e := range eps {
		sum += e.weight
		minWeight = min(minWeight, e.weight)
	}
	points := max(ringPointsPerWeight, (ringMin+ringMinEndpoints-1)/ringMinEndpoints)
	perWeight := float64(points) / float64(minWeight)
	total := perWeight * float64(sum)
	if total > float64(ringMax) {
		perWeight *= float64(ringMax) / total
	}
	ring := make([]ringPoint, 0, int(min(total, float64(ringMax)))+len(eps))
	for i, e := range eps {
		n := max(1, uint64(math.Round(perWeight*float64(e.weight))))
		for j := range n {
			if uint64(len(ring)) >= ringMax {
				break
			}
			ring = append(ring, ringPoint{hash: HashKey(e.address + "_" + strconv.FormatUint(j, 10)), endpoint: int32(i)})
		}
	}
	slices.SortFunc(ring, func(a, b ringPoint) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return int(a.endpoint - b.endpoint)
	})
	return ring
}

// ringLookup is the endpoint of the first point at or after key, wrapping.
func ringLookup(ring []ringPoint, key uint64) int {
	i, _ := slices.BinarySearchFunc(ring, key, func(p ringPoint, k uint64) int {
		switch {
		case p.hash < k:
			return -1
		case p.hash > k:
			return 1
		}
		return 0
	})
	if i == len(ring) {
		i = 0
	}
	return int(ring[i].endpoint)
}

// buildMaglev fills a Maglev lookup table of size (a prime): each endpoint
// takes the slots of its permutation in turn, as often as its weight says
// (weighted Maglev, as Envoy's).
func buildMaglev(eps []weightedAddress, size uint64) []int32 {
	table := make([]int32, size)
	for i := range table {
		table[i] = -1
	}
	offset := make([]uint64, len(eps))
	skip := make([]uint64, len(eps))
	next := make([]uint64, len(eps))
	count := make([]uint64, len(eps))
	var maxWeight uint64
	for i, e := range eps {
		offset[i] = HashKey(e.address) % size
		skip[i] = HashKey(e.address+"#skip")%(size-1) + 1
		maxWeight = max(maxWeight, e.weight)
	}
	filled := uint64(0)
	for iteration := uint64(1); filled < size; iteration++ {
		for i, e := range eps {
			if e.weight*iteration < count[i]*maxWeight {
				continue
			}
			c := (offset[i] + next[i]*skip[i]) % size
			for table[c] >= 0 {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % size
			}
			table[c] = int32(i)
			next[i]++
			count[i]++
			if filled++; filled == size {
				break
			}
		}
	}
	return table
}

// pick picks an endpoint of set by its balancer (set.lb is not nil), for a
// request whose hash key is key when hashed.
func (c *Cluster) pick(set *endpointSet, key uint64, hashed bool) (string, bool) {
	st := set.lb
	if len(set.schedule) == 0 || len(st.addresses) == 0 {
		return "", false
	}
	// With outlier detection or health checks, the available endpoints
	// only (all of them in panic mode): a hash key of an unavailable
	// endpoint goes to the next one on the ring, or to another slot.
	schedule, filtered := set.availableSchedule()
	switch st.policy {
	case lbRingHash:
		if hashed && len(st.ring) > 0 {
			i := ringLookup(st.ring, key)
			if filtered {
				i = ringNextAvailable(st.ring, key, func(e int) bool { return set.isAvailable(st.addresses[e]) })
			}
			return st.addresses[i], true
		}
	case lbMaglev:
		if hashed && len(st.table) > 0 {
			size := uint64(len(st.table))
			e := st.addresses[st.table[key%size]]
			for attempt := uint64(1); filtered && !set.isAvailable(e) && attempt <= maxMaglevAttempts; attempt++ {
				e = st.addresses[st.table[mix64(key+attempt)%size]]
			}
			if !filtered || set.isAvailable(e) {
				return e, true
			}
		}
	case lbLeastRequest:
		return st.leastRequest(schedule, time.Now()), true
	case lbRoundRobin:
		return c.slowRoundRobin(st, schedule, time.Now()), true
	}
	// Random, and a hash balancer for a request without a key.
	return schedule[rand.Uint64N(uint64(len(schedule)))], true
}

// maxMaglevAttempts bounds the other slots a Maglev pick tries when its
// key's endpoint is unavailable, before picking at random among the
// available ones.
const maxMaglevAttempts = 16

// ringNextAvailable is the endpoint of the first point at or after key
// whose endpoint is available, wrapping; that of key's point when none is.
func ringNextAvailable(ring []ringPoint, key uint64, available func(endpoint int) bool) int {
	first := ringLookup(ring, key)
	i, _ := slices.BinarySearchFunc(ring, key, func(p ringPoint, k uint64) int {
		switch {
		case p.hash < k:
			return -1
		case p.hash > k:
			return 1
		}
		return 0
	})
	for n := range len(ring) {
		if e := int(ring[(i+n)%len(ring)].endpoint); available(e) {
			return e
		}
	}
	return first
}

// leastRequest is power of two choices: of two endpoints drawn by weight,
// the one with fewer requests in flight (for its share, in slow start).
func (st *lbState) leastRequest(schedule []string, now time.Time) string {
	a := schedule[rand.Uint64N(uint64(len(schedule)))]
	b := schedule[rand.Uint64N(uint64(len(schedule)))]
	if a == b {
		return a
	}
	return st.lessLoaded(a, b, now)
}

// lessLoaded is a or b, whichever has fewer requests in flight for its
// share (a on a tie).
func (st *lbState) lessLoaded(a, b string, now time.Time) string {
	i, j := st.index[a], st.index[b]
	la := float64(st.active[i].Load()+1) / st.share(i, now)
	lb := float64(st.active[j].Load()+1) / st.share(j, now)
	if lb < la {
		return b
	}
	return a
}

// slowRoundRobin is round robin where an endpoint in slow start takes its
// turn with the probability of its share, else yields it to the next.
func (c *Cluster) slowRoundRobin(st *lbState, schedule []string, now time.Time) string {
	var e string
	for range len(st.addresses) + 1 {
		n := c.next.Add(1) - 1
		e = schedule[n%uint64(len(schedule))]
		if s := st.share(st.index[e], now); s >= 1 || rand.Float64() < s {
			return e
		}
	}
	return e
}

// NextFor is Next for a request with a consistent-hash key (HashKey of its
// header, cookie or client address): a ring hash or Maglev cluster maps
// the key to its endpoint; any other picks as Next does.
func (c *Cluster) NextFor(key uint64) (string, bool) {
	set := c.endpoints.Load()
	if set.priorities != nil {
		return c.nextPriority(set, key, true)
	}
	if set.lb == nil {
		return c.Next()
	}
	return c.pick(set, key, true)
}

// HashesRequests reports whether the cluster's balancer hashes a key of
// each request (ring hash, Maglev): the router then computes the key of the
// route's hash policy.
func (c *Cluster) HashesRequests() bool {
	return c.balancer.policy == lbRingHash || c.balancer.policy == lbMaglev
}

// beginRequest counts a request in flight to endpoint for a least request
// balancer, returning what ends it, or nil when nothing is counted.
func (c *Cluster) beginRequest(endpoint string) func() {
	set := c.endpoints.Load()
	st := set.lb
	if set.priorities != nil {
		st = set.lbOf(endpoint)
	}
	if st == nil || st.active == nil {
		return nil
	}
	i, ok := st.index[endpoint]
	if !ok {
		return nil
	}
	st.active[i].Add(1)
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			st.active[i].Add(-1)
		}
	}
}

// countedBody ends a counted request when its response body is closed.
type countedBody struct {
	io.ReadCloser
	done func()
}

func (b *countedBody) Close() error {
	err := b.ReadCloser.Close()
	b.done()
	return err
}

// roundTripCounted is RoundTrip counting the request in flight until its
// response body is closed.
func (c *Cluster) roundTripCounted(r *http.Request, timeout time.Duration, done func()) (*http.Response, error) {
	resp, err := c.roundTrip(r, timeout)
	if err != nil {
		done()
		return nil, err
	}
	resp.Body = &countedBody{ReadCloser: resp.Body, done: done}
	return resp, nil
}
