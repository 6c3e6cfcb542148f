package xds

import (
	"bytes"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestSharingCodecWritesWhatProtoMarshalWrites(t *testing.T) {
	t.Parallel()
	shared := mustAny(t, &clusterv3.Cluster{Name: "default/a:80"})
	tests := []struct {
		name string
		msg  proto.Message
	}{
		{"empty response", &discoveryv3.DiscoveryResponse{}},
		{"no resources", &discoveryv3.DiscoveryResponse{VersionInfo: "v1", TypeUrl: resourcev3.ClusterType, Nonce: "3"}},
		{"resources and every header field", &discoveryv3.DiscoveryResponse{
			VersionInfo: "v2", TypeUrl: resourcev3.ClusterType, Nonce: "7", Canary: true,
			ControlPlane: &corev3.ControlPlane{Identifier: "meshgate"},
			Resources: []*anypb.Any{shared, mustAny(t, &clusterv3.Cluster{Name: "b"}), shared,
				{TypeUrl: resourcev3.ClusterType}, {Value: []byte{1, 2}}},
		}},
		{"large resource (multi-byte lengths)", &discoveryv3.DiscoveryResponse{
			TypeUrl:   resourcev3.ClusterType,
			Resources: []*anypb.Any{mustAny(t, &clusterv3.Cluster{Name: string(bytes.Repeat([]byte("x"), 70000))})},
		}},
		{"not a response", &discoveryv3.DiscoveryRequest{VersionInfo: "v1", ResourceNames: []string{"a"}}},
	}
	codec := newSharingCodec()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := proto.Marshal(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			for range 2 { // the second time from the prefix cache
				got, err := codec.Marshal(tt.msg)
				if err != nil {
					t.Fatal(err)
				}
				if b := got.Materialize(); !bytes.Equal(b, want) {
					t.Fatalf("codec wrote %x\nproto.Marshal writes %x", b, want)
				}
				back := tt.msg.ProtoReflect().New().Interface()
				if err := codec.Unmarshal(got, back); err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(back, tt.msg) {
					t.Fatalf("round trip: got %v, want %v", back, tt.msg)
				}
			}
		})
	}
}

func TestSharingCodecReferencesSharedValues(t *testing.T) {
	t.Parallel()
	shared := mustAny(t, &clusterv3.Cluster{Name: "default/a:80"})
	resp := &discoveryv3.DiscoveryResponse{TypeUrl: resourcev3.ClusterType, Resources: []*anypb.Any{shared}}
	got, err := newSharingCodec().Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, b := range got {
		if d := b.ReadOnlyData(); len(d) > 0 && &d[0] == &shared.Value[0] {
			found = true
		}
	}
	if !found {
		t.Fatal("the encoded response copies the resource instead of referencing it")
	}
	var _ mem.BufferSlice = got
}
