package upstream

import (
	"crypto/tls"
	"fmt"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/internal/protofuzz"
	"github.com/meshgate/meshgate/dataplane/meshtls"
)

// fuzzTLS is an identity that has no certificate or bundle yet: enough to
// build clusters with transport_socket_matches.
var fuzzTLS = WithTLS(TLS{
	Certificate: func() *tls.Certificate { return nil },
	TrustBundle: func(string) *meshtls.Bundle { return nil },
})

// fuzzSeedClusters are valid clusters (STATIC h2c, EDS with mTLS matches)
// and assignments for them.
func fuzzSeedClusters(tb testing.TB) ([]*clusterv3.Cluster, []*endpointv3.ClusterLoadAssignment) {
	tb.Helper()
	static := staticCluster("static",
		testEndpoint{addr: "127.0.0.1", port: 8080, weight: 3},
		testEndpoint{addr: "::1", port: 8081, health: corev3.HealthStatus_DRAINING})
	eds := edsCluster("eds")
	ctx, err := anypb.New(upstreamContext("spiffe://meshgate.local/ns/default/svc/web", "http/1.1"))
	if err != nil {
		tb.Fatal(err)
	}
	match, err := structpb.NewStruct(map[string]any{"tlsMode": "mtls"})
	if err != nil {
		tb.Fatal(err)
	}
	eds.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{{
		Name: "mtls", Match: match,
		TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: ctx}},
	}}
	assignment := cla("eds",
		testEndpoint{addr: "10.0.0.1", port: 80, weight: 1},
		testEndpoint{addr: "10.0.0.2", port: 80, weight: 7})
	assignment.Endpoints[0].LbEndpoints[0].Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{TransportSocketMatchKey: match}}
	return []*clusterv3.Cluster{static, eds}, []*endpointv3.ClusterLoadAssignment{static.GetLoadAssignment(), assignment}
}

// checkCluster runs c and then cla through the CDS and EDS paths of the
// proxy: NewCluster, then SetEndpoints, then a round of picks. A rejection
// must name the resource.
func checkCluster(t *testing.T, c *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment) {
	cl, err := NewCluster(c, nil, fuzzTLS)
	if err != nil {
		if want := fmt.Sprintf("cluster %q", c.GetName()); !strings.Contains(err.Error(), want) {
			t.Fatalf("error does not name the resource (%s): %v", want, err)
		}
		return
	}
	defer cl.Close()
	if cla != nil {
		cla.ClusterName = c.GetName() // as the proxy pairs them
		if err := cl.SetEndpoints(cla); err != nil {
			if want := fmt.Sprintf("cluster load assignment %q", cla.GetClusterName()); !strings.Contains(err.Error(), want) {
				t.Fatalf("error does not name the resource (%s): %v", want, err)
			}
		}
	}
	for range len(cl.endpoints.Load().schedule) + 1 {
		if addr, ok := cl.Next(); ok {
			_ = cl.Secure(addr)
		}
	}
}

// FuzzCluster feeds arbitrary bytes, decoded as a Cluster and a
// ClusterLoadAssignment, through the CDS and EDS paths.
func FuzzCluster(f *testing.F) {
	clusters, assignments := fuzzSeedClusters(f)
	for i := range clusters {
		cb, err := proto.Marshal(clusters[i])
		if err != nil {
			f.Fatal(err)
		}
		ab, err := proto.Marshal(assignments[i])
		if err != nil {
			f.Fatal(err)
		}
		f.Add(cb, ab)
	}
	f.Fuzz(func(t *testing.T, clusterBytes, assignmentBytes []byte) {
		c := &clusterv3.Cluster{}
		if err := proto.Unmarshal(clusterBytes, c); err != nil {
			return
		}
		cla := &endpointv3.ClusterLoadAssignment{}
		if err := proto.Unmarshal(assignmentBytes, cla); err != nil {
			cla = nil
		}
		checkCluster(t, c, cla)
	})
}

// FuzzMutateCluster mutates valid clusters and assignments field by field
// (into their typed configs) and runs them through the CDS and EDS paths.
func FuzzMutateCluster(f *testing.F) {
	clusters, assignments := fuzzSeedClusters(f)
	f.Add([]byte{0}, []byte{})
	f.Add([]byte{1, 2, 3, 4, 5}, []byte{1, 2, 3, 4, 5, 6})
	f.Fuzz(func(t *testing.T, clusterMutation, assignmentMutation []byte) {
		if len(clusterMutation) == 0 {
			return
		}
		i := int(clusterMutation[0]) % len(clusters)
		c := proto.Clone(clusters[i]).(*clusterv3.Cluster)
		cla := proto.Clone(assignments[i]).(*endpointv3.ClusterLoadAssignment)
		protofuzz.Mutate(c, clusterMutation[1:])
		protofuzz.Mutate(cla, assignmentMutation)
		if c.GetType() == clusterv3.Cluster_STATIC {
			cla = nil
		}
		checkCluster(t, c, cla)
	})
}

func TestFuzzSeedClustersAreValid(t *testing.T) {
	t.Parallel()
	clusters, assignments := fuzzSeedClusters(t)
	for i, c := range clusters {
		cl, err := NewCluster(c, nil, fuzzTLS)
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		if c.GetType() == clusterv3.Cluster_EDS {
			if err := cl.SetEndpoints(assignments[i]); err != nil {
				t.Errorf("seed %d: %v", i, err)
			}
		}
		cl.Close()
	}
}
