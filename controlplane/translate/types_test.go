package translate

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

type (
	clusterT = clusterv3.Cluster
	claT     = endpointv3.ClusterLoadAssignment
)

type routeConfigT = routev3.RouteConfiguration
