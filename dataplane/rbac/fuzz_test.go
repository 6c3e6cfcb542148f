package rbac

import (
	"strings"
	"testing"

	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/dataplane/internal/protofuzz"
)

// fuzzSeedRBAC are valid RBAC configs using every matcher of the subset.
func fuzzSeedRBAC() []*rbacv3.RBAC {
	full := rules(rbacconfigv3.RBAC_ALLOW, map[string]*rbacconfigv3.Policy{
		"a": {
			Permissions: []*rbacconfigv3.Permission{
				permAnd(permPath(prefix("/api")), permNot(permHeader(header(":method", exact("DELETE"))))),
				permOr(permPath(regex("/v[0-9]+/.*")), permPath(ignoreCase(suffix(".json")))),
			},
			Principals: []*rbacconfigv3.Principal{
				prinOr(prinID(exact(frontend)), prinID(prefix("spiffe://meshgate.local/ns/ops/"))),
				prinAnd(prinIP("10.0.0.0", 8), prinNot(prinHeader(header("x-block", exact("1"))))),
			},
		},
		"b": pol(permAny(), prinAny()),
	})
	full.RulesStatPrefix = "svc."
	deny := rules(rbacconfigv3.RBAC_DENY, map[string]*rbacconfigv3.Policy{"d": pol(permPath(exact("/admin")), prinIP("::1", 128))})
	return []*rbacv3.RBAC{full, deny, {}}
}

// fuzzSeedFilters are valid http_filters lists.
func fuzzSeedFilters(tb testing.TB) []*hcmv3.HttpConnectionManager {
	tb.Helper()
	filter := func(name string, m proto.Message) *hcmv3.HttpFilter {
		a, err := anypb.New(m)
		if err != nil {
			tb.Fatal(err)
		}
		return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}
	}
	seeds := fuzzSeedRBAC()
	router := filter("envoy.filters.http.router", &routerv3.Router{})
	return []*hcmv3.HttpConnectionManager{
		{HttpFilters: []*hcmv3.HttpFilter{filter(DenyFilterName, seeds[1]), filter(AllowFilterName, seeds[0]), router}},
		{HttpFilters: []*hcmv3.HttpFilter{router}},
	}
}

// evaluateAll runs f on requests of every shape the handler passes it.
func evaluateAll(f *Filter) {
	for _, q := range []req{
		{target: "/api/x", remote: "10.1.2.3:4", identity: frontend},
		{method: "DELETE", target: "/v2/a.JSON", remote: "[::1]:80", headers: []string{"X-Block", "1"}},
		{target: "/admin", remote: "bad"},
	} {
		allowed, policy := f.Evaluate(q.build())
		if !allowed && policy != "" {
			_ = f.StatKey(policy)
		}
	}
}

// checkRBAC runs cfg through Compile as the proxy does (the RBAC of an
// http_filter or of an RBACPerRoute), and evaluates what compiles.
func checkRBAC(t *testing.T, cfg *rbacv3.RBAC) {
	f, err := Compile(cfg)
	if err != nil {
		if !strings.HasPrefix(err.Error(), "rbac") {
			t.Fatalf("error does not name the resource: %v", err)
		}
		return
	}
	evaluateAll(f)
}

// checkFilters runs an HttpConnectionManager's http_filters through
// FromHTTPFilters as the listener parse does.
func checkFilters(t *testing.T, hcm *hcmv3.HttpConnectionManager) {
	deny, allow, err := FromHTTPFilters(hcm.GetHttpFilters())
	if err != nil {
		if !strings.HasPrefix(err.Error(), "http_filters") {
			t.Fatalf("error does not name the field: %v", err)
		}
		return
	}
	evaluateAll(deny)
	evaluateAll(allow)
}

// FuzzCompileRBAC feeds arbitrary bytes, decoded as an RBAC filter config,
// through Compile.
func FuzzCompileRBAC(f *testing.F) {
	for _, cfg := range fuzzSeedRBAC() {
		b, err := proto.Marshal(cfg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := &rbacv3.RBAC{}
		if err := proto.Unmarshal(data, cfg); err != nil {
			return
		}
		checkRBAC(t, cfg)
	})
}

// FuzzFromHTTPFilters feeds arbitrary bytes, decoded as an
// HttpConnectionManager, through FromHTTPFilters.
func FuzzFromHTTPFilters(f *testing.F) {
	for _, hcm := range fuzzSeedFilters(f) {
		b, err := proto.Marshal(hcm)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		hcm := &hcmv3.HttpConnectionManager{}
		if err := proto.Unmarshal(data, hcm); err != nil {
			return
		}
		checkFilters(t, hcm)
	})
}

// FuzzMutateRBAC mutates valid RBAC configs and http_filters lists field by
// field (into their typed configs) and compiles them.
func FuzzMutateRBAC(f *testing.F) {
	configs, hcms := fuzzSeedRBAC(), fuzzSeedFilters(f)
	f.Add([]byte{0})
	f.Add([]byte{3, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		i := int(data[0]) % (len(configs) + len(hcms))
		if i < len(configs) {
			cfg := proto.Clone(configs[i]).(*rbacv3.RBAC)
			protofuzz.Mutate(cfg, data[1:])
			checkRBAC(t, cfg)
			return
		}
		hcm := proto.Clone(hcms[i-len(configs)]).(*hcmv3.HttpConnectionManager)
		protofuzz.Mutate(hcm, data[1:])
		checkFilters(t, hcm)
	})
}

func TestFuzzSeedsCompile(t *testing.T) {
	t.Parallel()
	for i, cfg := range fuzzSeedRBAC() {
		if _, err := Compile(cfg); err != nil {
			t.Errorf("RBAC seed %d: %v", i, err)
		}
	}
	for i, hcm := range fuzzSeedFilters(t) {
		if _, _, err := FromHTTPFilters(hcm.GetHttpFilters()); err != nil {
			t.Errorf("filters seed %d: %v", i, err)
		}
	}
}
