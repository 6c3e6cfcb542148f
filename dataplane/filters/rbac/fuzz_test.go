package rbac

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/internal/protofuzz"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
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

// evaluateAll runs f on requests of every shape the handler passes it.
func evaluateAll(f *Engine) {
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

// checkFactory runs cfg (an RBAC or an RBACPerRoute) through the proxy's
// path: the check with the filter's subset, then its factory, and runs what
// compiles on requests, as a listener's filter and on a route.
func checkFactory(t *testing.T, cfg proto.Message) {
	factory := Factory()
	checker, err := xdscheck.New(factory.Subset())
	if err != nil {
		t.Fatal(err)
	}
	if checker.Check(cfg) != nil {
		return
	}
	switch cfg.(type) {
	case *rbacv3.RBAC:
		f, err := factory.New("f", cfg, httpfilter.Env{Stats: new(httpfilter.Stats)})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "rbac: ") {
				t.Fatalf("error does not name the config: %v", err)
			}
			return
		}
		serveAll(f, nil)
	default:
		per, err := factory.NewPerRoute(cfg)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "rbac.") {
				t.Fatalf("error does not name the field: %v", err)
			}
			return
		}
		evaluateAll(per.(*perRoute).engine)
	}
}

// serveAll runs requests of every shape through filter f.
func serveAll(f httpfilter.Filter, rt *router.Route) {
	h := f.Wrap(httpfilter.HandlerFunc(func(http.ResponseWriter, *http.Request, *router.Route) {}))
	for _, q := range []req{
		{target: "/api/x", remote: "10.1.2.3:4", identity: frontend},
		{method: "DELETE", target: "/v2/a.JSON", remote: "[::1]:80", headers: []string{"X-Block", "1"}},
	} {
		h.ServeHTTP(httptest.NewRecorder(), q.build(), rt)
	}
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

// FuzzMutateRBAC mutates valid RBAC and RBACPerRoute configs field by field
// and runs them through the filter's check and factory.
func FuzzMutateRBAC(f *testing.F) {
	configs := fuzzSeedRBAC()
	f.Add([]byte{0})
	f.Add([]byte{3, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		i := int(data[0]) % (2 * len(configs))
		cfg := proto.Clone(configs[i%len(configs)]).(*rbacv3.RBAC)
		if i < len(configs) {
			protofuzz.Mutate(cfg, data[1:])
			checkFactory(t, cfg)
			return
		}
		per := &rbacv3.RBACPerRoute{Rbac: cfg}
		protofuzz.Mutate(per, data[1:])
		checkFactory(t, per)
	})
}

func TestFuzzSeedsCompile(t *testing.T) {
	t.Parallel()
	factory := Factory()
	for i, cfg := range fuzzSeedRBAC() {
		if _, err := Compile(cfg); err != nil {
			t.Errorf("RBAC seed %d: %v", i, err)
		}
		if _, err := factory.New("f", cfg, httpfilter.Env{}); err != nil {
			t.Errorf("RBAC seed %d: New: %v", i, err)
		}
		if _, err := factory.NewPerRoute(&rbacv3.RBACPerRoute{Rbac: cfg}); err != nil {
			t.Errorf("RBAC seed %d: NewPerRoute: %v", i, err)
		}
	}
}
