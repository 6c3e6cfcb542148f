package xdscheck

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestUpgradeSubset: upgrade_configs with upgrade_type websocket (any
// case), enabled or not, are accepted on the connection manager and on a
// route; another type, a filter chain of its own, a CONNECT config or two
// entries are not.
func TestUpgradeSubset(t *testing.T) {
	t.Parallel()
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		t.Fatal(err)
	}
	hcm := func(ucs ...*hcmv3.HttpConnectionManager_UpgradeConfig) proto.Message {
		return &hcmv3.HttpConnectionManager{
			StatPrefix:     "x",
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "x", ConfigSource: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}},
			HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
			UpgradeConfigs: ucs,
		}
	}
	route := func(ucs ...*routev3.RouteAction_UpgradeConfig) proto.Message {
		return &routev3.RouteConfiguration{Name: "x", VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}, UpgradeConfigs: ucs}},
		}}}}}
	}
	tests := []struct {
		name string
		msg  proto.Message
		want string // "" accepted
	}{
		{name: "websocket", msg: hcm(&hcmv3.HttpConnectionManager_UpgradeConfig{UpgradeType: "websocket"})},
		{name: "WebSocket disabled", msg: hcm(&hcmv3.HttpConnectionManager_UpgradeConfig{UpgradeType: "WebSocket", Enabled: wrapperspb.Bool(false)})},
		{name: "h2c", msg: hcm(&hcmv3.HttpConnectionManager_UpgradeConfig{UpgradeType: "h2c"}), want: `upgrade_configs[0].upgrade_type: "h2c" not supported`},
		{name: "no type", msg: hcm(&hcmv3.HttpConnectionManager_UpgradeConfig{}), want: "upgrade_configs[0].upgrade_type"},
		{name: "filters", msg: hcm(&hcmv3.HttpConnectionManager_UpgradeConfig{UpgradeType: "websocket", Filters: []*hcmv3.HttpFilter{{Name: "f"}}}),
			want: "upgrade_configs[0].filters: not supported"},
		{name: "two", msg: hcm(&hcmv3.HttpConnectionManager_UpgradeConfig{UpgradeType: "websocket"}, &hcmv3.HttpConnectionManager_UpgradeConfig{UpgradeType: "websocket"}),
			want: "upgrade_configs"},
		{name: "route websocket", msg: route(&routev3.RouteAction_UpgradeConfig{UpgradeType: "websocket", Enabled: wrapperspb.Bool(false)})},
		{name: "route CONNECT", msg: route(&routev3.RouteAction_UpgradeConfig{UpgradeType: "CONNECT", ConnectConfig: &routev3.RouteAction_UpgradeConfig_ConnectConfig{}}),
			want: "not supported"},
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
