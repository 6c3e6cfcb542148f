package upstream

import (
	"fmt"
	"math/bits"
	"strings"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/meshgate/meshgate/internal/testutil"
)

// TestScheduleScalesLinearly: the weighted round-robin schedule of one EDS
// response costs about endpoints x log(endpoints) steps, not endpoints x
// slots (nginx's algorithm, which stalled a proxy on tens of thousands of
// endpoints): ten times the endpoints cost at most 15 times the steps
// (linear is 10, endpoints x log(endpoints) 12.5, quadratic 100). The steps
// are counted, not timed, so a loaded machine does not change the outcome;
// bench/ measures the time. One round of the schedule picks every endpoint.
func TestScheduleScalesLinearly(t *testing.T) {
	t.Parallel()
	const small, large = 10_000, 100_000
	tests := []struct {
		name   string
		weight func(i, n int) uint64
	}{
		{"equal weights", func(int, int) uint64 { return 1 }},
		{"unequal weights", func(i, _ int) uint64 { return uint64(1 + i%3) }},
		{"huge weights", func(i, _ int) uint64 { return uint64(1_000_000 + i) }},
		{"one heavy endpoint", func(i, n int) uint64 { // earliest-deadline-first
			if i == 0 {
				return uint64(1000 * n)
			}
			return 1
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			steps := map[int]uint64{}
			for _, n := range []int{small, large} {
				eps := make([]weightedAddress, n)
				for i := range eps {
					eps[i] = weightedAddress{address: fmt.Sprintf("e%d", i), weight: tt.weight(i, n)}
				}
				order, s := scheduleSteps(eps)
				steps[n] = s
				if bound := 4 * uint64(n+maxSchedule) * uint64(bits.Len(uint(n))); s > bound {
					t.Errorf("%d endpoints: %d steps, more than %d (4 x (endpoints + maxSchedule) x log2(endpoints))", n, s, bound)
				}
				seen := make(map[string]bool, n)
				for _, a := range order {
					seen[a] = true
				}
				if len(seen) != n {
					t.Errorf("%d endpoints: one round of the schedule picks %d of them", n, len(seen))
				}
			}
			ratio := float64(steps[large]) / float64(steps[small])
			t.Logf("%d endpoints: %d steps; %d endpoints: %d steps (x%.1f)", small, steps[small], large, steps[large], ratio)
			if ratio > 15 {
				t.Errorf("ten times the endpoints cost %.1f times the steps, want at most 15 (about linear)", ratio)
			}
		})
	}
}

// TestLargeClusterSetEndpointsScalesLinearly: SetEndpoints with ten times
// the endpoints allocates about ten times as much (allocations, unlike
// time, do not depend on the machine's load), and takes every endpoint.
// Not parallel: the allocation counters are the process's.
func TestLargeClusterSetEndpointsScalesLinearly(t *testing.T) {
	const small, large = 1_000, 10_000
	assignment := func(n int) *endpointv3.ClusterLoadAssignment {
		eps := make([]testEndpoint, n)
		for i := range eps {
			eps[i] = testEndpoint{addr: fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255), port: 80, weight: uint32(1 + i%3)}
		}
		return cla("big", eps...)
	}
	if err := mustCluster(t, edsCluster("big")).SetEndpoints(assignment(10)); err != nil { // warm-up: what is initialized once
		t.Fatal(err)
	}
	allocs := map[int]testutil.Allocation{}
	for _, n := range []int{small, large} {
		assignment := assignment(n)
		c := mustCluster(t, edsCluster("big"))
		var err error
		allocs[n] = testutil.Allocated(func() { err = c.SetEndpoints(assignment) })
		if err != nil {
			t.Fatal(err)
		}
		if got := len(c.Endpoints()); got != n {
			t.Fatalf("%d endpoints, want %d", got, n)
		}
		seen := map[string]bool{}
		for range len(c.endpoints.Load().schedule) {
			addr, _ := c.Next()
			seen[addr] = true
		}
		if len(seen) != n {
			t.Fatalf("one round of the schedule picked %d endpoints, want all %d", len(seen), n)
		}
	}
	objects := float64(allocs[large].Objects) / float64(allocs[small].Objects)
	bytes := float64(allocs[large].Bytes) / float64(allocs[small].Bytes)
	t.Logf("%d endpoints: %+v; %d endpoints: %+v (objects x%.1f, bytes x%.1f)", small, allocs[small], large, allocs[large], objects, bytes)
	if objects > 15 || bytes > 15 {
		t.Errorf("ten times the endpoints allocate x%.1f objects and x%.1f bytes, want at most 15 (about linear)", objects, bytes)
	}
}

// TestScheduleLargeUnequalKeepsProportionsAndSpreads covers the
// earliest-deadline-first path: exact proportions, and no endpoint twice in a
// row while others are due.
func TestScheduleLargeUnequalKeepsProportionsAndSpreads(t *testing.T) {
	t.Parallel()
	var eps []weightedAddress
	want := map[string]int{}
	for i := range 5000 {
		addr := fmt.Sprintf("e%d", i)
		w, slots := uint64(1), 1
		if i == 0 {
			// The 5999 total is scaled to maxSchedule: 1000*4096/5999
			// slots; the others keep their one.
			w, slots = 1000, 682
		}
		eps = append(eps, weightedAddress{addr, w})
		want[addr] = slots
	}
	order := schedule(eps)
	got := map[string]int{}
	for _, a := range order {
		got[a]++
	}
	for addr, n := range want {
		if got[addr] != n {
			t.Fatalf("%s scheduled %d times, want %d", addr, got[addr], n)
		}
	}
	if strings.Contains(strings.Join(order, ","), "e0,e0") {
		t.Fatal("the heavy endpoint is scheduled twice in a row")
	}
}
