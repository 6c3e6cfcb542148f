package main

import (
	"errors"
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/dataplane/xdsclient"
)

// xdsload reads Clusters and RouteConfigurations straight from their wire
// encoding, taking only what a stream needs to follow references and check
// a watch: unmarshaling 2000 streams' lists of 1000 clusters and a
// 1000-host route configuration into Go messages took about as much CPU as
// the control plane spent serving them, and the two share the machine.

// Field numbers read from the wire.
const (
	clusterNameField        protowire.Number = 1
	clusterType             protowire.Number = 2
	clusterEDSConfig        protowire.Number = 3
	clusterTransportSocket  protowire.Number = 24
	clusterSocketMatches    protowire.Number = 43
	edsServiceName          protowire.Number = 2
	socketMatchSocket       protowire.Number = 3
	routeConfigName         protowire.Number = 1
	routeConfigVirtualHosts protowire.Number = 2
	virtualHostRoutes       protowire.Number = 3
	routeRouteAction        protowire.Number = 2
	actionCluster           protowire.Number = 1
	actionWeightedClusters  protowire.Number = 3
	weightedClusterClusters protowire.Number = 1
	clusterWeightName       protowire.Number = 1
)

// errMalformed is a resource that is not valid protobuf.
var errMalformed = errors.New("malformed protobuf")

// eachField calls fn with every field of the message b: its number, wire
// type and, for length-delimited fields, its content (else the varint).
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, content []byte, varint uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %w", errMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		var content []byte
		var varint uint64
		switch typ {
		case protowire.BytesType:
			content, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			varint, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("%w: %w", errMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(num, typ, content, varint); err != nil {
			return err
		}
	}
	return nil
}

// clusterRefs is what a stream reads of one Cluster.
type clusterRefs struct {
	name string
	// eds is the ClusterLoadAssignment name of an EDS cluster, else "".
	eds string
	// sockets are the encoded TransportSockets the cluster uses.
	sockets [][]byte
}

// readCluster reads a Cluster's name, EDS service name and transport sockets.
func readCluster(b []byte) (clusterRefs, error) {
	var c clusterRefs
	isEDS := false
	err := eachField(b, func(num protowire.Number, typ protowire.Type, content []byte, varint uint64) error {
		switch {
		case num == clusterNameField && typ == protowire.BytesType:
			c.name = string(content)
		case num == clusterType && typ == protowire.VarintType:
			isEDS = clusterv3.Cluster_DiscoveryType(varint) == clusterv3.Cluster_EDS
		case num == clusterEDSConfig && typ == protowire.BytesType:
			return eachField(content, func(num protowire.Number, typ protowire.Type, content []byte, _ uint64) error {
				if num == edsServiceName && typ == protowire.BytesType {
					c.eds = string(content)
				}
				return nil
			})
		case num == clusterTransportSocket && typ == protowire.BytesType:
			c.sockets = append(c.sockets, content)
		case num == clusterSocketMatches && typ == protowire.BytesType:
			return eachField(content, func(num protowire.Number, typ protowire.Type, content []byte, _ uint64) error {
				if num == socketMatchSocket && typ == protowire.BytesType {
					c.sockets = append(c.sockets, content)
				}
				return nil
			})
		}
		return nil
	})
	if !isEDS {
		c.eds = ""
	} else if c.eds == "" {
		c.eds = c.name
	}
	return c, err
}

// socketSecrets returns the SDS secret names a cluster transport socket
// references (xdsclient.SecretNames, as the proxy computes them), decoding
// each distinct socket once per memo.
func socketSecrets(memo map[string][]string, socket []byte) ([]string, error) {
	if names, ok := memo[string(socket)]; ok {
		return names, nil
	}
	var ts corev3.TransportSocket
	if err := proto.Unmarshal(socket, &ts); err != nil {
		return nil, fmt.Errorf("transport socket: %w", err)
	}
	names := xdsclient.SecretNames([]proto.Message{&clusterv3.Cluster{TransportSocket: &ts}})
	memo[string(socket)] = names
	return names, nil
}

// readRouteConfig returns a RouteConfiguration's name and adds every cluster
// its routes' actions name to refs.
func readRouteConfig(b []byte, refs map[string]bool) (string, error) {
	var name string
	// Levels below the configuration: virtual host, route, action, weighted
	// clusters, cluster weight.
	var action, weighted, weight func(protowire.Number, protowire.Type, []byte, uint64) error
	weight = func(num protowire.Number, typ protowire.Type, content []byte, _ uint64) error {
		if num == clusterWeightName && typ == protowire.BytesType {
			refs[string(content)] = true
		}
		return nil
	}
	weighted = func(num protowire.Number, typ protowire.Type, content []byte, _ uint64) error {
		if num == weightedClusterClusters && typ == protowire.BytesType {
			return eachField(content, weight)
		}
		return nil
	}
	action = func(num protowire.Number, typ protowire.Type, content []byte, _ uint64) error {
		switch {
		case typ != protowire.BytesType:
		case num == actionCluster:
			refs[string(content)] = true
		case num == actionWeightedClusters:
			return eachField(content, weighted)
		}
		return nil
	}
	route := func(num protowire.Number, typ protowire.Type, content []byte, _ uint64) error {
		if num == routeRouteAction && typ == protowire.BytesType {
			return eachField(content, action)
		}
		return nil
	}
	virtualHost := func(num protowire.Number, typ protowire.Type, content []byte, _ uint64) error {
		if num == virtualHostRoutes && typ == protowire.BytesType {
			return eachField(content, route)
		}
		return nil
	}
	err := eachField(b, func(num protowire.Number, typ protowire.Type, content []byte, _ uint64) error {
		switch {
		case typ != protowire.BytesType:
		case num == routeConfigName:
			name = string(content)
		case num == routeConfigVirtualHosts:
			return eachField(content, virtualHost)
		}
		return nil
	})
	return name, err
}
