package translate

import (
	"maps"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

// endpointMetadataKey is the filter metadata namespace of an endpoint's
// labels (informational).
const endpointMetadataKey = "meshgate"

// loadAssignment is the ClusterLoadAssignment of a cluster: its endpoints
// from the model's endpoint index, grouped by locality: those without a
// zone label (policy.EndpointZone) first, in one locality without a zone,
// then one locality per zone, in zone order; mtls marks the sidecar
// endpoints for the cluster's mTLS transport socket match.
func loadAssignment(cluster string, endpoints []*model.Endpoint, mtls bool) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	byZone := map[string]*endpointv3.LocalityLbEndpoints{}
	for _, ep := range endpoints {
		zone := policy.EndpointZone(ep.Labels)
		locality := byZone[zone]
		if locality == nil {
			locality = &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Zone: zone}}
			byZone[zone] = locality
		}
		locality.LbEndpoints = append(locality.LbEndpoints, lbEndpoint(ep.Host, ep.Port, ep.Labels, mtls && ep.Sidecar))
	}
	for _, zone := range slices.Sorted(maps.Keys(byZone)) {
		locality := byZone[zone]
		setLocalityWeight(locality)
		cla.Endpoints = append(cla.Endpoints, locality)
	}
	return cla
}

// localityEndpoints is a locality (without zone when nil) of endpoints,
// weighted.
func localityEndpoints(locality *corev3.Locality, endpoints ...*endpointv3.LbEndpoint) *endpointv3.LocalityLbEndpoints {
	if locality == nil {
		locality = &corev3.Locality{}
	}
	l := &endpointv3.LocalityLbEndpoints{Locality: locality, LbEndpoints: endpoints}
	setLocalityWeight(l)
	return l
}

// setLocalityWeight gives a locality its load_balancing_weight: the sum of
// its endpoints' weights (1 each unless set), so that a client that
// balances between localities by weight (grpc-go's xds_wrr_locality, an
// Envoy with locality weighted balancing) gives each endpoint the share it
// gets from one that balances over the endpoints of a priority (Envoy's
// and meshgate's default). grpc-go ignores a locality without a weight,
// and refuses one without a locality: every locality has both, the zone
// empty when the endpoints have none.
func setLocalityWeight(l *endpointv3.LocalityLbEndpoints) {
	var weight uint32
	for _, ep := range l.GetLbEndpoints() {
		weight += max(ep.GetLoadBalancingWeight().GetValue(), 1)
	}
	l.LoadBalancingWeight = wrapperspb.UInt32(max(weight, 1))
}

// lbEndpoint builds an endpoint with its labels as metadata; sidecar marks it
// for the mtls transport socket match.
func lbEndpoint(host string, port uint32, labels map[string]string, sidecar bool) *endpointv3.LbEndpoint {
	ep := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
		Address: socketAddress(host, port),
	}}}
	metadata := map[string]*structpb.Struct{}
	if len(labels) > 0 {
		fields := make(map[string]*structpb.Value, len(labels))
		for k, v := range labels {
			fields[k] = structpb.NewStringValue(v)
		}
		metadata[endpointMetadataKey] = &structpb.Struct{Fields: fields}
	}
	if sidecar {
		metadata[transportSocketMatchKey] = sidecarEndpointMetadata()
	}
	if len(metadata) > 0 {
		ep.Metadata = &corev3.Metadata{FilterMetadata: metadata}
	}
	return ep
}

// socketAddress is a TCP address.
func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}
