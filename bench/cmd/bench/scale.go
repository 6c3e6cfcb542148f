package main

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/filters/rbac"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// The proxy's configuration at scale: how long the proxy takes, in this
// process, to take one very large xDS resource (an EDS response with 100k
// endpoints, an RDS response with 100k routes) or to refuse a hostile one.
// The unit tests prove these scale linearly by counting steps and
// allocations; the time is measured here, never asserted.

// scaleRow is one measurement.
type scaleRow struct {
	what  string
	size  int
	took  time.Duration
	alloc float64 // MiB allocated
	note  string  // an error
}

// scaleSizes are the sizes measured in a mode.
func scaleSizes(mode string) []int {
	if mode == "smoke" {
		return []int{1_000}
	}
	return []int{10_000, 100_000}
}

// configAtScale measures every case at each size of the mode.
func (r *runner) configAtScale(ctx context.Context) {
	cases := []struct {
		what string
		run  func(n int) error
	}{
		{"EDS: SetEndpoints, equal weights", func(n int) error { return setEndpoints(n, func(int) uint32 { return 1 }) }},
		{"EDS: SetEndpoints, one endpoint 1000x heavier", func(n int) error {
			return setEndpoints(n, func(i int) uint32 {
				if i == 0 {
					return uint32(min(1000*n, 1<<30))
				}
				return 1
			})
		}},
		{"RDS: router.Compile, exact paths", compileRoutes},
		{"RBAC: refuse a principal nested n deep", refuseNesting},
	}
	for _, c := range cases {
		for _, n := range scaleSizes(r.mode.name) {
			if ctx.Err() != nil {
				return
			}
			row := scaleRow{what: c.what, size: n}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			err := c.run(n)
			row.took = time.Since(start)
			runtime.ReadMemStats(&after)
			row.alloc = float64(after.TotalAlloc-before.TotalAlloc) / (1 << 20)
			if err != nil {
				row.note = "failed: " + oneLine(err)
			}
			r.log.Info("config at scale", "what", c.what, "size", n, "took", row.took, "alloc_mib", row.alloc, "error", err)
			r.table.scale = append(r.table.scale, row)
		}
	}
}

// setEndpoints takes one EDS response of n endpoints with the given weights
// into a new EDS cluster (the time includes building the response, as
// decoding it would cost the proxy).
func setEndpoints(n int, weight func(i int) uint32) error {
	c, err := upstream.NewCluster(&clusterv3.Cluster{
		Name:                 "big",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			ResourceApiVersion:    corev3.ApiVersion_V3,
		}},
		ConnectTimeout: durationpb.New(time.Second),
	}, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	lbs := make([]*endpointv3.LbEndpoint, n)
	for i := range lbs {
		lbs[i] = &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 80},
				}}},
			}},
			LoadBalancingWeight: wrapperspb.UInt32(weight(i)),
		}
	}
	return c.SetEndpoints(&endpointv3.ClusterLoadAssignment{ClusterName: "big", Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}})
}

// compileRoutes compiles one route configuration of n exact-path routes.
func compileRoutes(n int) error {
	routes := make([]*routev3.Route, n)
	for i := range routes {
		routes[i] = &routev3.Route{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: fmt.Sprintf("/r%d", i)}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: fmt.Sprintf("c%d", i%100)},
			}},
		}
	}
	_, err := router.Compile(&routev3.RouteConfiguration{Name: "big", VirtualHosts: []*routev3.VirtualHost{{
		Name: "all", Domains: []string{"*"}, Routes: routes,
	}}}, nil)
	return err
}

// refuseNesting compiles an RBAC filter whose principal is nested n deep:
// it must be refused (the error is expected).
func refuseNesting(n int) error {
	prin := &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Any{Any: true}}
	for range n {
		prin = &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_AndIds{AndIds: &rbacconfigv3.Principal_Set{Ids: []*rbacconfigv3.Principal{prin}}}}
	}
	perm := &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
		Rule: &matcherv3.PathMatcher_Path{Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/"}}},
	}}}
	_, err := rbac.Compile(&rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{
		Action:   rbacconfigv3.RBAC_ALLOW,
		Policies: map[string]*rbacconfigv3.Policy{"deep": {Permissions: []*rbacconfigv3.Permission{perm}, Principals: []*rbacconfigv3.Principal{prin}}},
	}})
	if err == nil {
		return fmt.Errorf("a principal nested %d deep was accepted", n)
	}
	if !strings.Contains(err.Error(), "nested deeper") {
		return err
	}
	return nil
}

// scaleMarkdown renders the rows.
func scaleMarkdown(rows []scaleRow) string {
	if len(rows) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n## Proxy configuration at scale (in-process)\n\n")
	b.WriteString("Time and memory for the proxy to take one large xDS resource, or refuse a hostile one, in bin/bench's own process, one at a time. The unit tests prove that these scale linearly by counting steps and allocations; the times are measured here only.\n\n")
	b.WriteString("| resource | size | ms | allocated MiB |\n| --- | ---: | ---: | ---: |\n")
	for _, r := range rows {
		if r.note != "" {
			fmt.Fprintf(&b, "| %s | %d | %s |  |\n", r.what, r.size, r.note)
			continue
		}
		fmt.Fprintf(&b, "| %s | %d | %.1f | %.1f |\n", r.what, r.size, float64(r.took.Microseconds())/1000, r.alloc)
	}
	return b.String()
}
