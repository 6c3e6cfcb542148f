package dataplane

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// echoBackend answers with the request headers it received as JSON, and
// the response headers Server: app and X-App: 1.
func echoBackend(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "app")
		w.Header().Set("X-App", "1")
		_ = json.NewEncoder(w).Encode(r.Header)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func mutationAdd(key, value string, action corev3.HeaderValueOption_HeaderAppendAction) *mutationrulesv3.HeaderMutation {
	return &mutationrulesv3.HeaderMutation{Action: &mutationrulesv3.HeaderMutation_Append{Append: &corev3.HeaderValueOption{
		Header: &corev3.HeaderValue{Key: key, Value: value}, AppendAction: action,
	}}}
}

func mutationRemove(name string) *mutationrulesv3.HeaderMutation {
	return &mutationrulesv3.HeaderMutation{Action: &mutationrulesv3.HeaderMutation_Remove{Remove: name}}
}

// TestProxyRunsHeaderMutationFilter: a Listener whose http_filters hold the
// header_mutation filter before the router, and a RouteConfiguration with
// HeaderMutationPerRoute on a virtual host and a route, served by the proxy
// from a real ADS server, change requests and responses as Envoy does: the
// filter's mutations first, then the route's level, then the virtual
// host's; response mutations after the route's own, on local replies too.
func TestProxyRunsHeaderMutationFilter(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	p := startProxy(t, cp)
	perRoute := func(m *headermutationv3.Mutations) map[string]*anypb.Any {
		return map[string]*anypb.Any{"gateway-headers": mustAny(t, &headermutationv3.HeaderMutationPerRoute{Mutations: m})}
	}
	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: echoBackend(t),
		mutate: func(s *snapshot) {
			filter := &hcmv3.HttpFilter{Name: "gateway-headers", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &headermutationv3.HeaderMutation{
				Mutations: &headermutationv3.Mutations{
					RequestMutations: []*mutationrulesv3.HeaderMutation{
						mutationRemove("x-internal"),
						mutationAdd("x-gateway", "edge", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
						mutationAdd("x-levels", "filter", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
					},
					ResponseMutations: []*mutationrulesv3.HeaderMutation{
						mutationAdd("x-served-by", "meshgate", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
					},
				},
			})}}
			s.hcm.HttpFilters = append([]*hcmv3.HttpFilter{filter}, s.hcm.HttpFilters...)
			vh := s.routes[0].VirtualHosts[0]
			vh.TypedPerFilterConfig = perRoute(&headermutationv3.Mutations{
				RequestMutations: []*mutationrulesv3.HeaderMutation{mutationAdd("x-levels", "vhost", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)},
			})
			orders := proto.Clone(vh.Routes[0]).(*routev3.Route)
			orders.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/orders"}}
			orders.TypedPerFilterConfig = perRoute(&headermutationv3.Mutations{
				RequestMutations: []*mutationrulesv3.HeaderMutation{mutationAdd("x-levels", "route", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)},
				ResponseMutations: []*mutationrulesv3.HeaderMutation{
					mutationRemove("x-app"),
					mutationAdd("x-route-header", "set-by-route", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS),
				},
			})
			// The route's own response header mutation runs first (router).
			orders.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-route-header", Value: "route"}}}
			direct := &routev3.Route{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/health"}},
				Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}},
			}
			vh.Routes = []*routev3.Route{orders, direct, vh.Routes[0]}
		},
	}.build(t))
	var base string
	eventually(t, "the routes", func() bool {
		addr := p.ListenerAddrs()["edge"]
		if addr == "" {
			return false
		}
		base = "http://" + addr
		code, _, err := get(http.DefaultClient, base+"/orders/0")
		return err == nil && code == http.StatusOK
	})

	do := func(path string) (*http.Response, http.Header) {
		t.Helper()
		req, err := http.NewRequest("GET", base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Internal", "secret")
		req.Header.Set("X-Gateway", "spoofed")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		defer resp.Body.Close()
		var upstream http.Header
		if resp.Header.Get("Server") == "app" {
			if err := json.NewDecoder(resp.Body).Decode(&upstream); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
		}
		return resp, upstream
	}

	resp, upstream := do("/orders/1")
	if upstream.Get("X-Internal") != "" || upstream.Get("X-Gateway") != "edge" ||
		!slices.Equal(upstream["X-Levels"], []string{"filter", "route", "vhost"}) {
		t.Errorf("/orders: upstream headers %v; want no X-Internal, X-Gateway edge, X-Levels filter, route, vhost", upstream)
	}
	if resp.Header.Get("X-Served-By") != "meshgate" || resp.Header.Get("X-App") != "" || resp.Header.Get("X-Route-Header") != "set-by-route" {
		t.Errorf("/orders: response headers %v; want X-Served-By, no X-App, X-Route-Header set-by-route", resp.Header)
	}

	resp, upstream = do("/other")
	if !slices.Equal(upstream["X-Levels"], []string{"filter", "vhost"}) || resp.Header.Get("X-App") != "1" || resp.Header.Get("X-Served-By") != "meshgate" {
		t.Errorf("/other: upstream %v, response %v; want X-Levels filter, vhost, X-App kept, X-Served-By", upstream, resp.Header)
	}
	// Local replies of the router go through the filter's response mutations.
	if resp, _ := do("/health"); resp.StatusCode != http.StatusOK || resp.Header.Get("X-Served-By") != "meshgate" {
		t.Errorf("/health: %d %v", resp.StatusCode, resp.Header)
	}
}

// TestProxyNACKsUnsupportedFilterConfig: a header_mutation filter with a
// field outside the subset, or an http_filters entry of an unknown type,
// is NACKed naming the field, and the proxy keeps serving.
func TestProxyNACKsUnsupportedFilterConfig(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	p := startProxy(t, cp)
	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend(t, "a")}.build(t))
	waitServing(t, p, http.DefaultClient, "a")
	tests := []struct {
		version string
		filter  *hcmv3.HttpFilter
		want    string
	}{
		{"v2", &hcmv3.HttpFilter{Name: "hm", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &headermutationv3.HeaderMutation{
			Mutations: &headermutationv3.Mutations{ResponseTrailersMutations: []*mutationrulesv3.HeaderMutation{mutationRemove("x")}},
		})}}, "http_filters[0].typed_config.mutations.response_trailers_mutations: not supported"},
		{"v3", &hcmv3.HttpFilter{Name: "cors", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routev3.CorsPolicy{})}},
			`http_filters[0].typed_config: typed config "type.googleapis.com/envoy.config.route.v3.CorsPolicy" not supported`},
		{"v4", &hcmv3.HttpFilter{Name: "hm", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &headermutationv3.HeaderMutation{
			Mutations: &headermutationv3.Mutations{RequestMutations: []*mutationrulesv3.HeaderMutation{mutationRemove(":path")}},
		})}}, `listener "edge": http_filters[0] "hm": mutations.request_mutations[0].remove: pseudo-header ":path" cannot be modified`},
	}
	for _, tc := range tests {
		cp.set(t, config{version: tc.version, listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend(t, "b"),
			mutate: func(s *snapshot) { s.hcm.HttpFilters = append([]*hcmv3.HttpFilter{tc.filter}, s.hcm.HttpFilters...) },
		}.build(t))
		eventually(t, "the NACK of LDS "+tc.version, func() bool {
			cp.mu.Lock()
			defer cp.mu.Unlock()
			return slices.ContainsFunc(cp.nacks, func(n *discoveryv3.DiscoveryRequest) bool {
				return n.GetTypeUrl() == resourcev3.ListenerType && n.GetResponseNonce() != "" && strings.Contains(n.GetErrorDetail().GetMessage(), tc.want)
			})
		})
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if v := p.state.versions[resourcev3.ListenerType]; v != "v1" {
		t.Errorf("LDS version = %q, want v1 kept", v)
	}
}
