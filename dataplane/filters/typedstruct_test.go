package filters

import (
	"strings"
	"testing"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/filters/responselimit"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

func typedStruct(t testing.TB, url string, fields map[string]any) *xdstypev3.TypedStruct {
	t.Helper()
	v, err := structpb.NewStruct(fields)
	if err != nil {
		t.Fatal(err)
	}
	return &xdstypev3.TypedStruct{TypeUrl: url, Value: v}
}

func listenerWith(t testing.TB, filters ...*hcmv3.HttpFilter) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{StatPrefix: "s", HttpFilters: filters, RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
		RouteConfigName: "r",
		ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
	}}}
	return &listenerv3.Listener{
		Name: "l",
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 1}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "hcm", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: typed(t, hcm)},
		}}}},
	}
}

// TestTypedStructFilters: a meshgate filter configured by a TypedStruct
// (the response limit) is admitted in http_filters (optional or not) and
// per route in a FilterConfig, compiled by type_url; an unknown type_url,
// a bad value, or a per-route TypedStruct outside a FilterConfig is
// refused with its path.
func TestTypedStructFilters(t *testing.T) {
	t.Parallel()
	r := Default()
	limitEntry := func(ts *xdstypev3.TypedStruct, optional bool) *hcmv3.HttpFilter {
		e := entry(t, "limit", ts)
		e.IsOptional = optional
		return e
	}
	for _, tc := range []struct {
		name    string
		entry   *hcmv3.HttpFilter
		wantErr string
	}{
		{name: "optional, no listener limit", entry: limitEntry(typedStruct(t, responselimit.TypeURL, nil), true)},
		{name: "listener limit", entry: limitEntry(typedStruct(t, responselimit.TypeURL, map[string]any{"max_response_bytes": 10}), false)},
		{name: "unknown type_url", entry: limitEntry(typedStruct(t, "example.com/other", nil), true),
			wantErr: `http_filters[0].typed_config.type_url: value "example.com/other" not supported`},
		{name: "bad value", entry: limitEntry(typedStruct(t, responselimit.TypeURL, map[string]any{"max_response_bytes": -1}), true),
			wantErr: "http_filters[0].typed_config.value.max_response_bytes: -1: want a whole number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := r.Check(listenerWith(t, tc.entry, routerEntry(t)))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("check: %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			chain, err := r.Chain([]*hcmv3.HttpFilter{tc.entry, routerEntry(t)}, httpfilter.Env{})
			if err != nil || len(chain) != 1 {
				t.Fatalf("chain %v, %v; want the filter", chain, err)
			}
			if got := r.PerRouteTypes([]*hcmv3.HttpFilter{tc.entry})["limit"]; got != xdscheck.FilterConfigType {
				t.Errorf("per-route type %s, want %s", got, xdscheck.FilterConfigType)
			}
		})
	}

	perRoute := typed(t, &routev3.FilterConfig{IsOptional: true,
		Config: typed(t, typedStruct(t, responselimit.TypeURL, map[string]any{"max_response_bytes": 4}))})
	rc := &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{
		Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{{
			Match:                &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action:               &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}},
			TypedPerFilterConfig: map[string]*anypb.Any{"limit": perRoute},
		}}}}}
	if err := r.Check(rc); err != nil {
		t.Fatalf("per-route FilterConfig: %v", err)
	}
	if _, err := r.CompilePerFilterConfig("limit", perRoute); err != nil {
		t.Fatalf("compile per-route FilterConfig: %v", err)
	}
	rc.VirtualHosts[0].Routes[0].TypedPerFilterConfig["limit"] = typed(t, typedStruct(t, responselimit.TypeURL, nil))
	if err := r.Check(rc); err == nil || !strings.Contains(err.Error(), `typed_per_filter_config["limit"]: typed config`) {
		t.Fatalf("bare per-route TypedStruct: %v, want refused", err)
	}
	bad := typed(t, &routev3.FilterConfig{Config: typed(t, typedStruct(t, "example.com/other", nil))})
	if _, err := r.CompilePerFilterConfig("limit", bad); err == nil {
		t.Fatal("per-route FilterConfig of an unknown type_url compiled")
	}
}
