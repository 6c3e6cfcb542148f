package xdscheck

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestHTTP2OptionsSubset: a connection manager's http2_protocol_options
// may set the stream limit and the two windows, in Envoy's ranges; any
// other HTTP/2 option, and those three on a cluster, are refused.
func TestHTTP2OptionsSubset(t *testing.T) {
	t.Parallel()
	listener := func(o *corev3.Http2ProtocolOptions) proto.Message {
		h := fullHCM(t, false)
		h.Http2ProtocolOptions = o
		return listenerWith(t, h)
	}
	cluster := func(o *corev3.Http2ProtocolOptions) proto.Message {
		c := fullCluster(t, true)
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(t, &upstreamhttpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: o},
				}},
			}),
		}
		return c
	}
	tests := []struct {
		name string
		msg  proto.Message
		want string // "" accepted
	}{
		{name: "limits", msg: listener(&corev3.Http2ProtocolOptions{
			MaxConcurrentStreams:        wrapperspb.UInt32(100),
			InitialStreamWindowSize:     wrapperspb.UInt32(65536),
			InitialConnectionWindowSize: wrapperspb.UInt32(1 << 20),
		})},
		{name: "empty", msg: listener(&corev3.Http2ProtocolOptions{})},
		{name: "zero streams", msg: listener(&corev3.Http2ProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(0)}), want: "MaxConcurrentStreams"},
		{name: "window under 65535", msg: listener(&corev3.Http2ProtocolOptions{InitialStreamWindowSize: wrapperspb.UInt32(1000)}), want: "InitialStreamWindowSize"},
		{name: "other option", msg: listener(&corev3.Http2ProtocolOptions{AllowConnect: true}), want: "http2_protocol_options.allow_connect: not supported"},
		{name: "cluster without options", msg: cluster(&corev3.Http2ProtocolOptions{})},
		{name: "cluster limits", msg: cluster(&corev3.Http2ProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(100)}), want: "max_concurrent_streams: not supported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.msg)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
