package filters

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/internal/protofuzz"
	"github.com/meshgate/meshgate/dataplane/router"
)

// fuzzSeedChains are valid http_filters lists of the built-in filters.
func fuzzSeedChains(tb testing.TB) []*hcmv3.HttpConnectionManager {
	tb.Helper()
	policy := &rbacconfigv3.Policy{
		Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_Any{Any: true}}},
		Principals: []*rbacconfigv3.Principal{{Identifier: &rbacconfigv3.Principal_DirectRemoteIp{
			DirectRemoteIp: &corev3.CidrRange{AddressPrefix: "10.0.0.0"},
		}}},
	}
	deny := &rbacv3.RBAC{RulesStatPrefix: "p", Rules: &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_DENY, Policies: map[string]*rbacconfigv3.Policy{"d": policy}}}
	allow := &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_ALLOW, Policies: map[string]*rbacconfigv3.Policy{"a": policy}}}
	return []*hcmv3.HttpConnectionManager{
		{HttpFilters: []*hcmv3.HttpFilter{entry(tb, "meshgate.rbac.deny", deny), entry(tb, "meshgate.rbac.allow", allow), routerEntry(tb)}},
		{HttpFilters: []*hcmv3.HttpFilter{entry(tb, "headers", fuzzSeedHeaderMutation()), entry(tb, "rbac", allow), routerEntry(tb)}},
		{HttpFilters: []*hcmv3.HttpFilter{routerEntry(tb)}},
	}
}

// fuzzSeedHeaderMutation is a valid header mutation config.
func fuzzSeedHeaderMutation() *headermutationv3.HeaderMutation {
	return &headermutationv3.HeaderMutation{Mutations: &headermutationv3.Mutations{
		RequestMutations: []*mutationrulesv3.HeaderMutation{
			{Action: &mutationrulesv3.HeaderMutation_Remove{Remove: "x-internal"}},
			{Action: &mutationrulesv3.HeaderMutation_Append{Append: &corev3.HeaderValueOption{
				Header: &corev3.HeaderValue{Key: "x-gateway", Value: "edge"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}}},
		},
		ResponseMutations: []*mutationrulesv3.HeaderMutation{
			{Action: &mutationrulesv3.HeaderMutation_Append{Append: &corev3.HeaderValueOption{
				Header: &corev3.HeaderValue{Key: "x-served-by", Value: "meshgate"},
			}}},
		},
	}}
}

// checkChain runs an HttpConnectionManager's http_filters through the LDS
// path (the registry's check of the listener holding it, then Chain) and
// serves a request through what compiles.
func checkChain(t *testing.T, r *Registry, hcm *hcmv3.HttpConnectionManager) {
	hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
		RouteConfigName: "r",
		ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
	}}
	hcmAny, err := anypb.New(hcm)
	if err != nil {
		return // not valid protobuf (a string that is not UTF-8): never on the wire
	}
	listener := &listenerv3.Listener{
		Name: "l",
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 1}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "hcm", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcmAny},
		}}}},
	}
	if r.Check(listener) != nil {
		return
	}
	chain, err := r.Chain(hcm.GetHttpFilters(), httpfilter.Env{Stats: new(httpfilter.Stats)})
	if err != nil {
		if !strings.HasPrefix(err.Error(), "http_filters") {
			t.Fatalf("error does not name the field: %v", err)
		}
		return
	}
	var h httpfilter.Handler = httpfilter.HandlerFunc(func(w http.ResponseWriter, _ *http.Request, _ *router.Route) {
		w.WriteHeader(http.StatusNoContent)
	})
	for i := len(chain) - 1; i >= 0; i-- {
		h = chain[i].Wrap(h)
	}
	req := httptest.NewRequest("GET", "/x", nil)
	req.RemoteAddr = "10.1.2.3:4"
	h.ServeHTTP(httptest.NewRecorder(), req, nil)
}

// FuzzChain feeds arbitrary bytes, decoded as an HttpConnectionManager, and
// mutated valid http_filters lists, through the registry.
func FuzzChain(f *testing.F) {
	r := Default()
	seeds := fuzzSeedChains(f)
	for _, hcm := range seeds {
		b, err := proto.Marshal(hcm)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
	}
	f.Add([]byte{1, 2, 3, 4, 5}, true)
	f.Fuzz(func(t *testing.T, data []byte, mutate bool) {
		hcm := &hcmv3.HttpConnectionManager{}
		switch {
		case mutate && len(data) > 0:
			hcm = proto.Clone(seeds[int(data[0])%len(seeds)]).(*hcmv3.HttpConnectionManager)
			protofuzz.Mutate(hcm, data[1:])
		case proto.Unmarshal(data, hcm) != nil:
			return
		}
		checkChain(t, r, hcm)
	})
}

func TestFuzzSeedChainsCompile(t *testing.T) {
	t.Parallel()
	r := Default()
	for i, hcm := range fuzzSeedChains(t) {
		if _, err := r.Chain(hcm.GetHttpFilters(), httpfilter.Env{}); err != nil {
			t.Errorf("seed %d: %v", i, err)
		}
		checkChain(t, r, hcm)
	}
}
