package upstream

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestLargeClusterSetEndpointsIsBounded: one EDS response with tens of
// thousands of endpoints is taken in bounded time (the weighted schedule
// used to cost endpoints x slots), and the picks keep the weights.
func TestLargeClusterSetEndpointsIsBounded(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		n      int
		weight func(i int) uint32
	}{
		{"100k equal weights", 100_000, func(int) uint32 { return 0 }},
		{"50k unequal weights", 50_000, func(i int) uint32 { return uint32(1 + i%3) }},
		{"20k huge weights", 20_000, func(i int) uint32 { return uint32(1_000_000 + i) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			eps := make([]testEndpoint, tt.n)
			for i := range eps {
				eps[i] = testEndpoint{addr: fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255), port: 80, weight: tt.weight(i)}
			}
			c := mustCluster(t, edsCluster("big"))
			start := time.Now()
			if err := c.SetEndpoints(cla("big", eps...)); err != nil {
				t.Fatal(err)
			}
			if elapsed := time.Since(start); elapsed > 10*time.Second {
				t.Fatalf("SetEndpoints took %v", elapsed)
			}
			if got := len(c.Endpoints()); got != tt.n {
				t.Fatalf("%d endpoints, want %d", got, tt.n)
			}
			seen := map[string]bool{}
			for range len(c.endpoints.Load().schedule) {
				addr, _ := c.Next()
				seen[addr] = true
			}
			if len(seen) != tt.n {
				t.Fatalf("one round of the schedule picked %d endpoints, want all %d", len(seen), tt.n)
			}
		})
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
