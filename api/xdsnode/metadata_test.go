package xdsnode

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestStructKeys pins the wire spelling of docs/xds.md: the keys, and only
// the non-empty fields.
func TestStructKeys(t *testing.T) {
	tests := []struct {
		name string
		meta Metadata
		want map[string]string
	}{
		{
			name: "gateway",
			meta: Metadata{Role: RoleGateway, Namespace: "prod", Gateway: "edge"},
			want: map[string]string{"role": "gateway", "namespace": "prod", "gateway": "edge"},
		},
		{
			name: "sidecar",
			meta: Metadata{Role: RoleSidecar, Namespace: "shop", Service: "orders", InboundAddress: "127.0.0.1:15006",
				AppAddress: "127.0.0.1:8080", OutboundAddress: "127.0.0.1:15001"},
			want: map[string]string{"role": "sidecar", "namespace": "shop", "service": "orders",
				"inbound_address": "127.0.0.1:15006", "app_address": "127.0.0.1:8080", "outbound_address": "127.0.0.1:15001"},
		},
		{
			name: "admin address",
			meta: Metadata{Role: RoleGateway, Gateway: "edge", AdminAddress: "127.0.0.1:15100"},
			want: map[string]string{"role": "gateway", "gateway": "edge", "admin_address": "127.0.0.1:15100"},
		},
		{name: "empty", want: map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.meta.Struct().GetFields()
			if len(got) != len(tt.want) {
				t.Fatalf("Struct() has %d keys %v, want %v", len(got), got, tt.want)
			}
			for k, v := range tt.want {
				if got[k].GetStringValue() != v {
					t.Errorf("Struct()[%q] = %v, want %q", k, got[k], v)
				}
			}
			if back := Decode(tt.meta.Struct()); back != tt.meta {
				t.Errorf("Decode(Struct()) = %+v, want %+v", back, tt.meta)
			}
		})
	}
}

func TestDecodeIgnoresOtherValues(t *testing.T) {
	s, err := structpb.NewStruct(map[string]any{"role": "sidecar", "service": 7.0, "other": "x"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := Decode(s), (Metadata{Role: RoleSidecar}); got != want {
		t.Errorf("Decode = %+v, want %+v", got, want)
	}
	if got := Decode(nil); got != (Metadata{}) {
		t.Errorf("Decode(nil) = %+v", got)
	}
}

func TestFromNode(t *testing.T) {
	tests := []struct {
		name string
		node *corev3.Node
		want Metadata
	}{
		{
			name: "sidecar defaults",
			node: Metadata{Role: RoleSidecar, InboundAddress: "127.0.0.1:1", AppAddress: "127.0.0.1:2"}.Node("sidecar~orders~h"),
			want: Metadata{Role: RoleSidecar, Namespace: DefaultNamespace, InboundAddress: "127.0.0.1:1", AppAddress: "127.0.0.1:2",
				OutboundAddress: DefaultOutboundAddress},
		},
		{
			name: "sidecar name from the cluster",
			node: &corev3.Node{Cluster: "orders", Metadata: Metadata{Role: RoleSidecar}.Struct()},
			want: Metadata{Role: RoleSidecar, Namespace: DefaultNamespace, Service: "orders", OutboundAddress: DefaultOutboundAddress},
		},
		{
			name: "gateway name from the cluster",
			node: &corev3.Node{Cluster: "edge", Metadata: Metadata{Role: RoleGateway, Namespace: "prod"}.Struct()},
			want: Metadata{Role: RoleGateway, Namespace: "prod", Gateway: "edge"},
		},
		{
			name: "as sent",
			node: Metadata{Role: RoleGateway, Namespace: "prod", Gateway: "edge"}.Node("gateway~edge.prod~h"),
			want: Metadata{Role: RoleGateway, Namespace: "prod", Gateway: "edge"},
		},
		{
			name: "proxyless name from the cluster",
			node: &corev3.Node{Cluster: "web", Metadata: Metadata{Role: RoleProxyless}.Struct()},
			want: Metadata{Role: RoleProxyless, Namespace: DefaultNamespace, Service: "web"},
		},
		{
			name: "a gRPC client without a role is proxyless",
			node: &corev3.Node{Cluster: "web", UserAgentName: "gRPC Go", Metadata: Metadata{Namespace: "shop"}.Struct()},
			want: Metadata{Role: RoleProxyless, Namespace: "shop", Service: "web"},
		},
		{
			name: "another client without a role has none",
			node: &corev3.Node{Cluster: "web", UserAgentName: "envoy"},
			want: Metadata{Namespace: DefaultNamespace},
		},
		{name: "no node", want: Metadata{Namespace: DefaultNamespace}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FromNode(tt.node); got != tt.want {
				t.Errorf("FromNode = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestNode(t *testing.T) {
	n := Metadata{Role: RoleSidecar, Service: "orders"}.Node("sidecar~orders~h")
	if n.GetId() != "sidecar~orders~h" || n.GetCluster() != "orders" || Decode(n.GetMetadata()).Service != "orders" {
		t.Errorf("Node = %v", n)
	}
}
