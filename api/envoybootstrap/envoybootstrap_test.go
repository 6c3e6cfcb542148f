package envoybootstrap

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/meshgate/meshgate/api/xdsnode"
)

func validOptions() Options {
	return Options{
		NodeID:         "gateway~edge~host-envoy",
		Metadata:       xdsnode.Metadata{Role: xdsnode.RoleGateway, Namespace: "default", Gateway: "edge"},
		ControlPlanes:  []string{"10.0.0.5:15010", "10.0.0.6:15010"},
		ControlPlaneID: "spiffe://meshgate.local/ns/meshgate-system/svc/controlplane",
		SDSSocket:      "/run/meshgate/sds.sock",
	}
}

// TestBuild: a gateway node's bootstrap passes ValidateAll, names the
// gateway as node.cluster, lists every control plane, and resolves a
// control plane given by name through DNS.
func TestBuild(t *testing.T) {
	t.Parallel()
	b, err := Build(validOptions())
	if err != nil {
		t.Fatal(err)
	}
	if b.Node.Cluster != "edge" || xdsnode.FromNode(b.Node).Gateway != "edge" {
		t.Errorf("node %v: want the gateway edge", b.Node)
	}
	xds := b.StaticResources.Clusters[0]
	if xds.Name != XDSClusterName || xds.GetType() != clusterv3.Cluster_STATIC || len(xds.LoadAssignment.Endpoints[0].LbEndpoints) != 2 {
		t.Errorf("xds cluster %v: want STATIC with both control planes", xds)
	}
	if b.Admin.GetAddress().GetSocketAddress().GetPortValue() != 15000 {
		t.Errorf("admin %v: want the default 127.0.0.1:15000", b.Admin)
	}

	byName := validOptions()
	byName.ControlPlanes = []string{"meshgate.internal:15010"}
	b, err = Build(byName)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.StaticResources.Clusters[0].GetType(); got != clusterv3.Cluster_STRICT_DNS {
		t.Errorf("control plane by name: cluster type %v, want STRICT_DNS", got)
	}
}

// TestBuildRefuses: each missing or bad option is an error naming it.
func TestBuildRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		change  func(*Options)
		wantErr string
	}{
		{"no node id", func(o *Options) { o.NodeID = "" }, "node id"},
		{"no control plane", func(o *Options) { o.ControlPlanes = nil }, "control-plane"},
		{"bad control plane", func(o *Options) { o.ControlPlanes = []string{"10.0.0.5"} }, "control-plane address"},
		{"port zero", func(o *Options) { o.ControlPlanes = []string{"10.0.0.5:0"} }, "port from 1"},
		{"no control plane id", func(o *Options) { o.ControlPlaneID = "" }, "SPIFFE ID"},
		{"no socket", func(o *Options) { o.SDSSocket = "" }, "SDS socket"},
		{"admin on every interface", func(o *Options) { o.AdminAddress = "0.0.0.0:15000" }, "loopback"},
		{"admin by name", func(o *Options) { o.AdminAddress = "localhost:15000" }, "loopback"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := validOptions()
			tt.change(&o)
			if _, err := Build(o); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Build: %v, want an error saying %q", err, tt.wantErr)
			}
		})
	}
}
