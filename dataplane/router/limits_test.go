package router

import (
	"fmt"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// TestHugeRouteConfigurationCompilesInBoundedTime: 100k routes (one RDS
// response) compile in bounded time and route correctly; a 50 MB regex is
// refused by its length, quickly, with a short error.
func TestHugeRouteConfigurationCompilesInBoundedTime(t *testing.T) {
	t.Parallel()
	const n = 100_000
	routes := make([]*routev3.Route, n)
	for i := range routes {
		routes[i] = route(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: fmt.Sprintf("/r%d", i)}}, fmt.Sprintf("c%d", i%100))
	}
	start := time.Now()
	tbl, err := Compile(rcWith(vhost("all", []string{"*"}, routes...)))
	if err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed > 20*time.Second {
		t.Fatalf("Compile took %v", elapsed)
	}
	if got := matchedCluster(tbl, newRequest("GET", "/r99999", "x")); got != "c99" {
		t.Fatalf("last route goes to %q, want c99", got)
	}
	if got := len(tbl.Clusters()); got != 100 {
		t.Fatalf("%d clusters, want 100", got)
	}
}

func TestHugeRegexIsRefused(t *testing.T) {
	t.Parallel()
	huge := make([]byte, 50<<20)
	for i := range huge {
		huge[i] = 'a'
	}
	rc := rcWith(vhost("all", []string{"*"}, route(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: regex(string(huge))}}, "c")))
	start := time.Now()
	_, err := Compile(rc)
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Compile took %v", elapsed)
	}
	if err == nil {
		t.Fatal("a 50 MB regex compiled")
	}
	if len(err.Error()) > 1024 {
		t.Fatalf("error is %d bytes long", len(err.Error()))
	}
	t.Log(err)
}
