package translate

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/api/servicemeta"
	"github.com/meshgate/meshgate/controlplane/model"
)

const (
	httpProtocolOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	// connectTimeout bounds a connection to an endpoint.
	connectTimeout = 5 * time.Second
)

// buildCluster builds the EDS cluster of a service port and its load
// assignment (endpoint.go). With a trust bundle, a port with sidecar
// endpoints gets the mTLS transport socket match (tls.go). The first error
// is returned with the cluster (as the translation fails anyway).
func buildCluster(m *model.Model, in Inputs, svc *model.Service, port *model.ServicePort) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, error) {
	var firstErr error
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	c := &clusterv3.Cluster{
		Name:                 port.Cluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsConfigSource()},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		Metadata:             serviceMetadata(svc),
	}
	if port.Protocol == model.ProtocolHTTP2 {
		if err := setHTTP2(c); err != nil {
			fail(err)
		}
	}
	if err := setClusterTraffic(c, port); err != nil {
		fail(err)
	}
	mtls := in.mtls() && m.HasSidecarEndpoints(port)
	if mtls {
		if err := setMTLSMatch(c, m.Mesh.SPIFFEID(svc.Namespace, svc.Name), port.Protocol); err != nil {
			fail(err)
		}
	}
	endpoints := m.Endpoints(port)
	if bt := port.BackendTLS; bt != nil {
		if err := setBackendTLS(c, bt, port.Protocol); err != nil {
			fail(err)
		}
		if bt.FailClosed() {
			// No valid CA: no endpoint may be called (503, no healthy
			// upstream), as the Gateway API requires.
			endpoints = nil
		}
	}
	return c, loadAssignment(port.Cluster, endpoints, mtls), firstErr
}

// serviceMetadata is the cluster metadata naming the addresses of the
// service (servicemeta): its virtual IP and DNS names, what a sidecar
// resolves the names to and routes a captured connection to that address by.
func serviceMetadata(svc *model.Service) *corev3.Metadata {
	meta := servicemeta.Service{VIP: svc.VIP, Hostnames: svc.Hostnames}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{servicemeta.Key: meta.Struct()}}
}

// setHTTP2 makes the cluster speak HTTP/2 without TLS (h2c) to its
// endpoints, or with mTLS to sidecars.
func setHTTP2(c *clusterv3.Cluster) error {
	opts, err := anypb.New(&upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		},
	})
	if err != nil {
		return fmt.Errorf("cluster %q: protocol options: %w", c.Name, err)
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsName: opts}
	return nil
}

// ownCluster is a cluster and its load assignment (nil for a STATIC
// cluster, whose endpoints are inline).
type ownCluster struct {
	cluster   *clusterv3.Cluster
	endpoints *endpointv3.ClusterLoadAssignment
}

// clusterSet is a list of clusters and their load assignments sorted by
// name, added to a node's resources whole: at 1000 services, a map of them
// per node, then its sorted keys, was most of a sidecar's translation.
type clusterSet struct {
	names     []string
	clusters  []*clusterv3.Cluster
	endpoints []*endpointv3.ClusterLoadAssignment
}

func newClusterSet(list []*ownCluster) *clusterSet {
	sorted := slices.SortedFunc(slices.Values(list), func(a, b *ownCluster) int { return cmp.Compare(a.cluster.Name, b.cluster.Name) })
	set := &clusterSet{
		names:     make([]string, len(sorted)),
		clusters:  make([]*clusterv3.Cluster, len(sorted)),
		endpoints: make([]*endpointv3.ClusterLoadAssignment, len(sorted)),
	}
	for i, oc := range sorted {
		set.names[i], set.clusters[i], set.endpoints[i] = oc.cluster.Name, oc.cluster, oc.endpoints
	}
	return set
}

// mergeClusters returns the clusters of own and of the sets (which replace
// a cluster of own of the same name) in name order, with the load
// assignments of those that have one. One set and a few clusters of the
// node's own (a sidecar's inbound) are merged without a map.
func mergeClusters(own []*ownCluster, sets []*clusterSet) ([]*clusterv3.Cluster, []*endpointv3.ClusterLoadAssignment) {
	slices.SortFunc(own, func(a, b *ownCluster) int { return cmp.Compare(a.cluster.Name, b.cluster.Name) }) // the node's own: sorted in place
	if len(sets) == 0 {
		sets = []*clusterSet{{}}
	}
	if len(sets) == 1 && !slices.ContainsFunc(own, func(oc *ownCluster) bool {
		_, found := slices.BinarySearch(sets[0].names, oc.cluster.Name)
		return found
	}) {
		set := sets[0]
		if len(own)+len(set.names) == 0 {
			return nil, nil
		}
		clusters := make([]*clusterv3.Cluster, 0, len(own)+len(set.names))
		endpoints := make([]*endpointv3.ClusterLoadAssignment, 0, len(own)+len(set.names))
		add := func(c *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment) {
			clusters = append(clusters, c)
			if cla != nil {
				endpoints = append(endpoints, cla)
			}
		}
		i := 0
		for j, name := range set.names {
			for ; i < len(own) && own[i].cluster.Name < name; i++ {
				add(own[i].cluster, own[i].endpoints)
			}
			add(set.clusters[j], set.endpoints[j])
		}
		for ; i < len(own); i++ {
			add(own[i].cluster, own[i].endpoints)
		}
		return clusters, endpoints
	}
	byName := make(map[string]*ownCluster, len(own))
	for _, oc := range own {
		byName[oc.cluster.Name] = oc
	}
	for _, set := range sets {
		for j, name := range set.names {
			byName[name] = &ownCluster{cluster: set.clusters[j], endpoints: set.endpoints[j]}
		}
	}
	var clusters []*clusterv3.Cluster
	var endpoints []*endpointv3.ClusterLoadAssignment
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		clusters = append(clusters, byName[name].cluster)
		if cla := byName[name].endpoints; cla != nil {
			endpoints = append(endpoints, cla)
		}
	}
	return clusters, endpoints
}
