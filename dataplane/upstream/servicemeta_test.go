package upstream

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/api/servicemeta"
)

// TestClusterServiceAddresses: NewCluster reads the mesh service's VIP and
// hostnames from metadata.filter_metadata["meshgate.dev/service"]; a
// cluster without it has none; a malformed one is refused, naming the
// field.
func TestClusterServiceAddresses(t *testing.T) {
	t.Parallel()
	withMeta := func(fields map[string]any) *corev3.Metadata {
		st, err := structpb.NewStruct(fields)
		if err != nil {
			t.Fatal(err)
		}
		return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{servicemeta.Key: st}}
	}
	c := edsCluster("default/orders:80")
	c.Metadata = withMeta(map[string]any{"vip": "240.240.1.2", "hostnames": []any{"orders", "orders.default", "orders.default.svc.meshgate.local"}})
	cl := mustCluster(t, c)
	if cl.ServiceVIP != netip.MustParseAddr("240.240.1.2") ||
		!slices.Equal(cl.Hostnames, []string{"orders", "orders.default", "orders.default.svc.meshgate.local"}) {
		t.Errorf("cluster service addresses: VIP %v, hostnames %v", cl.ServiceVIP, cl.Hostnames)
	}
	if plain := mustCluster(t, edsCluster("plain")); plain.ServiceVIP.IsValid() || plain.Hostnames != nil {
		t.Errorf("a cluster without metadata: VIP %v, hostnames %v; want none", plain.ServiceVIP, plain.Hostnames)
	}
	bad := edsCluster("bad")
	bad.Metadata = withMeta(map[string]any{"vip": "not-an-ip"})
	if _, err := NewCluster(bad, nil); err == nil || !strings.Contains(err.Error(), "meshgate.dev/service.vip") {
		t.Errorf("a malformed VIP: error %v; want one naming meshgate.dev/service.vip", err)
	}
	other := edsCluster("other")
	other.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"something.else": {}}}
	if _, err := NewCluster(other, nil); err == nil {
		t.Error("a cluster with another filter_metadata key was accepted; the subset allows meshgate.dev/service only")
	}
}
