package headermutation

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/internal/protofuzz"
	"github.com/meshgate/meshgate/dataplane/router"
)

// fuzzSeeds are valid configs using every field of the subset.
func fuzzSeeds() []*headermutationv3.HeaderMutation {
	return []*headermutationv3.HeaderMutation{
		{MostSpecificHeaderMutationsWins: true, Mutations: muts(
			[]*mutationrulesv3.HeaderMutation{remove("x-internal"), add("x-a", "1", appendOrAdd), add("x-b", "100%%", addIfAbsent)},
			[]*mutationrulesv3.HeaderMutation{add("x-c", "v", overwriteOrAdd), add("x-d", "v", overwriteIfAny), remove("server")},
		)},
		{},
	}
}

// checkConfig runs cfg (a HeaderMutation or a HeaderMutationPerRoute)
// through the proxy's path, the check with the filter's subset then its
// factory (a per-route config through the route table), and serves a
// request through what compiles.
func checkConfig(t *testing.T, cfg proto.Message) {
	if checker(t).Check(cfg) != nil {
		return
	}
	filter := httpfilter.Filter(&filter{name: "hm"})
	var rt *router.Route
	switch cfg := cfg.(type) {
	case *headermutationv3.HeaderMutation:
		f, err := Factory().New("hm", cfg, httpfilter.Env{})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "mutations.") {
				t.Fatalf("error does not name the field: %v", err)
			}
			return
		}
		filter = f
	case *headermutationv3.HeaderMutationPerRoute:
		typed, err := anypb.New(cfg)
		if err != nil {
			return // not valid protobuf (a string that is not UTF-8): never on the wire
		}
		tbl, err := router.Compile(&routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{{
			Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{{
				Match:                &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action:               &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}},
				TypedPerFilterConfig: map[string]*anypb.Any{"hm": typed},
			}},
		}}}, perRouteCompiler{})
		if err != nil {
			if !strings.Contains(err.Error(), `typed_per_filter_config["hm"]: mutations.`) {
				t.Fatalf("error does not name the field: %v", err)
			}
			return
		}
		rt = tbl.Match(httptest.NewRequest("GET", "/", nil))
	}
	h := filter.Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, _ *http.Request, _ *router.Route) {
		w.Header().Set("Server", "upstream")
		w.WriteHeader(http.StatusOK)
	}))
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("X-A", "0")
	r.Header.Set("X-Internal", "1")
	h.ServeHTTP(httptest.NewRecorder(), r, rt)
}

// FuzzHeaderMutation mutates valid header mutation configs, and per-route
// configs made of them, field by field, and runs them through the filter's
// check, factory and handler.
func FuzzHeaderMutation(f *testing.F) {
	seeds := fuzzSeeds()
	f.Add([]byte{0})
	f.Add([]byte{1, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Add([]byte{2, 9, 8, 7, 6, 5, 4})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		i := int(data[0]) % (2 * len(seeds))
		cfg := proto.Clone(seeds[i%len(seeds)]).(*headermutationv3.HeaderMutation)
		if i < len(seeds) {
			protofuzz.Mutate(cfg, data[1:])
			checkConfig(t, cfg)
			return
		}
		per := &headermutationv3.HeaderMutationPerRoute{Mutations: cfg.GetMutations()}
		protofuzz.Mutate(per, data[1:])
		checkConfig(t, per)
	})
}

func TestFuzzSeedsCompile(t *testing.T) {
	t.Parallel()
	for i, cfg := range fuzzSeeds() {
		if err := checker(t).Check(cfg); err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		if _, err := Factory().New("hm", cfg, httpfilter.Env{}); err != nil {
			t.Errorf("seed %d: %v", i, err)
		}
		checkConfig(t, cfg)
		checkConfig(t, &headermutationv3.HeaderMutationPerRoute{Mutations: cfg.GetMutations()})
	}
}
