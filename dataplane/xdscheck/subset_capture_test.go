package xdscheck

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestCaptureListenerConnectionManagers: a capture listener's HTTP chains
// may each carry their own HttpConnectionManager (a route configuration per
// service); one that is not alone in its chain is refused.
func TestCaptureListenerConnectionManagers(t *testing.T) {
	t.Parallel()
	hcmOn := func(route string) *listenerv3.Filter {
		h := fullHCM(t, false)
		h.GetRds().RouteConfigName = route
		return &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, h)}}
	}
	chain := func(addr string, filters ...*listenerv3.Filter) *listenerv3.FilterChain {
		return &listenerv3.FilterChain{Filters: filters, FilterChainMatch: &listenerv3.FilterChainMatch{
			PrefixRanges:    []*corev3.CidrRange{{AddressPrefix: addr, PrefixLen: wrapperspb.UInt32(32)}},
			DestinationPort: wrapperspb.UInt32(80),
		}}
	}
	capture := func(chains ...*listenerv3.FilterChain) *listenerv3.Listener {
		l := listenerWith(t, fullHCM(t, false))
		l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.original_dst",
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(t, &originaldstv3.OriginalDst{})}}}
		l.FilterChains = chains
		return l
	}
	for _, tc := range []struct {
		name    string
		msg     proto.Message
		wantErr string // "" accepted
	}{
		{name: "a route configuration per chain", msg: capture(chain("10.0.0.1", hcmOn("capture|a")), chain("10.0.0.2", hcmOn("capture|b")))},
		{name: "chains sharing one", msg: capture(chain("10.0.0.1", hcmOn("capture|a")), chain("10.0.0.2", hcmOn("capture|a")))},
		{name: "not alone", msg: capture(chain("10.0.0.1", hcmOn("capture|a"), hcmOn("capture|a"))),
			wantErr: "filter_chains[0].filters: an http_connection_manager comes alone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.msg)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Check() = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Check() = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
