package router

import (
	"fmt"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/meshgate/meshgate/dataplane/internal/match"
	"github.com/meshgate/meshgate/internal/testutil"
)

// TestHugeRouteConfigurationScalesLinearly: a route configuration with ten
// times the routes (one RDS response) allocates about ten times as much to
// compile (allocations, unlike time, do not depend on the machine's load;
// bench/ measures the time), and routes correctly. Not parallel: the
// allocation counters are the process's.
func TestHugeRouteConfigurationScalesLinearly(t *testing.T) {
	const small, large = 1_000, 10_000
	config := func(n int) *routev3.RouteConfiguration {
		routes := make([]*routev3.Route, n)
		for i := range routes {
			routes[i] = route(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: fmt.Sprintf("/r%d", i)}}, fmt.Sprintf("c%d", i%100))
		}
		return rcWith(vhost("all", []string{"*"}, routes...))
	}
	if _, err := Compile(config(10), nil); err != nil { // warm-up: what is initialized once
		t.Fatal(err)
	}
	allocs := map[int]testutil.Allocation{}
	for _, n := range []int{small, large} {
		rc := config(n)
		var tbl *Table
		var err error
		allocs[n] = testutil.Allocated(func() { tbl, err = Compile(rc, nil) })
		if err != nil {
			t.Fatal(err)
		}
		last := fmt.Sprintf("c%d", (n-1)%100)
		if got := matchedCluster(tbl, newRequest("GET", fmt.Sprintf("/r%d", n-1), "x")); got != last {
			t.Fatalf("%d routes: the last route goes to %q, want %s", n, got, last)
		}
		if got := len(tbl.Clusters()); got != 100 {
			t.Fatalf("%d routes: %d clusters, want 100", n, got)
		}
	}
	objects := float64(allocs[large].Objects) / float64(allocs[small].Objects)
	bytes := float64(allocs[large].Bytes) / float64(allocs[small].Bytes)
	t.Logf("%d routes: %+v; %d routes: %+v (objects x%.1f, bytes x%.1f)", small, allocs[small], large, allocs[large], objects, bytes)
	if objects > 15 || bytes > 15 {
		t.Errorf("ten times the routes allocate x%.1f objects and x%.1f bytes, want at most 15 (about linear)", objects, bytes)
	}
}

// TestHugeRegexIsRefused: a 50 MB regex is refused by its length, before
// anything parses it: compiling it allocates no more than for a regex just
// over the limit (a parse would allocate hundreds of megabytes); the error
// is short. Not parallel: the allocation counters are the process's.
func TestHugeRegexIsRefused(t *testing.T) {
	refused := func(pattern string) testutil.Allocation {
		rc := rcWith(vhost("all", []string{"*"}, route(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: regex(pattern)}}, "c")))
		_, _ = Compile(rc, nil) // warm-up
		var err error
		a := testutil.Allocated(func() { _, err = Compile(rc, nil) })
		if err == nil {
			t.Fatalf("a %d-byte regex compiled", len(pattern))
		}
		if len(err.Error()) > 1024 {
			t.Fatalf("error is %d bytes long", len(err.Error()))
		}
		t.Logf("%d bytes: %+v: %v", len(pattern), a, err)
		return a
	}
	justOver := refused(strings.Repeat("a", match.MaxRegexBytes+1))
	huge := refused(strings.Repeat("a", 50<<20))
	if huge.Bytes > justOver.Bytes+64<<10 || huge.Objects > justOver.Objects+100 {
		t.Errorf("refusing a 50 MB regex allocated %+v, a regex just over the limit %+v: want about the same", huge, justOver)
	}
}
