package filters

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/filters/rbac"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

func typed(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func entry(t testing.TB, name string, m proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed(t, m)}}
}

func routerEntry(t testing.TB) *hcmv3.HttpFilter {
	return entry(t, "envoy.filters.http.router", &routerv3.Router{})
}

// denyAll is an RBAC config that denies every request.
func denyAll() *rbacv3.RBAC {
	return &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_ALLOW}}
}

func TestDefaultRegistry(t *testing.T) {
	t.Parallel()
	r := Default()
	want := []protoreflect.FullName{
		"envoy.extensions.filters.http.router.v3.Router",
		"envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
		"envoy.extensions.filters.http.basic_auth.v3.BasicAuth",
		"envoy.extensions.filters.http.buffer.v3.Buffer",
		"envoy.extensions.filters.http.cors.v3.Cors",
		"envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
		"envoy.extensions.filters.http.fault.v3.HTTPFault",
		"envoy.extensions.filters.http.grpc_web.v3.GrpcWeb",
		"envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
		"envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
		"envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
		"envoy.extensions.filters.http.ratelimit.v3.RateLimit",
		"envoy.extensions.filters.http.rbac.v3.RBAC",
	}
	if got := r.ConfigTypes(); !slices.Equal(got, want) {
		t.Fatalf("ConfigTypes = %v, want %v", got, want)
	}
	if snap := r.NewStats().Snapshot(); snap[rbac.StatDenied] == nil {
		t.Errorf("stats %v lack the declared family %s", snap, rbac.StatDenied)
	}
}

// TestChain: http_filters compile into the filters before the router, in
// order, under any name; errors name the entry.
func TestChain(t *testing.T) {
	t.Parallel()
	r := Default()
	t.Run("filters then router", func(t *testing.T) {
		t.Parallel()
		chain, err := r.Chain([]*hcmv3.HttpFilter{
			entry(t, "meshgate.rbac.deny", &rbacv3.RBAC{}),
			entry(t, "any.name", denyAll()),
			routerEntry(t),
		}, httpfilter.Env{})
		if err != nil {
			t.Fatal(err)
		}
		if len(chain) != 2 {
			t.Fatalf("%d filters, want 2", len(chain))
		}
		// In order: the first allows everything, the second denies.
		var reached bool
		h := chain[0].Wrap(chain[1].Wrap(httpfilter.HandlerFunc(func(http.ResponseWriter, *http.Request, *router.Route) { reached = true })))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil), nil)
		if reached || w.Code != http.StatusForbidden {
			t.Fatalf("status %d, router reached %v; want 403 from the second filter", w.Code, reached)
		}
	})
	t.Run("router only", func(t *testing.T) {
		t.Parallel()
		chain, err := r.Chain([]*hcmv3.HttpFilter{routerEntry(t)}, httpfilter.Env{})
		if err != nil || chain != nil {
			t.Fatalf("Chain = %v, %v; want no filter", chain, err)
		}
	})

	bad := []struct {
		name    string
		entries []*hcmv3.HttpFilter
		want    string
	}{
		{"empty", nil, "http_filters: the router (envoy.filters.http.router) is required"},
		{"no router", []*hcmv3.HttpFilter{entry(t, "a", &rbacv3.RBAC{})}, `http_filters[0] "a": the last filter must be the router`},
		{"router not last", []*hcmv3.HttpFilter{routerEntry(t), entry(t, "a", &rbacv3.RBAC{})}, `http_filters[0] "envoy.filters.http.router": the router must be the last filter`},
		{"router with a config", []*hcmv3.HttpFilter{entry(t, "r", &routerv3.Router{SuppressEnvoyHeaders: true})}, `http_filters[0] "r": only an empty Router`},
		{"duplicate name", []*hcmv3.HttpFilter{entry(t, "a", &rbacv3.RBAC{}), entry(t, "a", &rbacv3.RBAC{}), routerEntry(t)}, `http_filters[1] "a": duplicate filter name`},
		{"unknown type", []*hcmv3.HttpFilter{entry(t, "cors", wrapperspb.String("x")), routerEntry(t)},
			`http_filters[0] "cors": typed config "type.googleapis.com/google.protobuf.StringValue" not supported`},
		{"disabled", []*hcmv3.HttpFilter{{Name: "a", Disabled: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed(t, &rbacv3.RBAC{})}}, routerEntry(t)},
			`http_filters[0] "a": disabled: not supported`},
		{"no typed config", []*hcmv3.HttpFilter{{Name: "a"}, routerEntry(t)}, `http_filters[0] "a": typed_config: required`},
		{"refused by the factory", []*hcmv3.HttpFilter{entry(t, "meshgate.rbac.deny", &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_LOG}}), routerEntry(t)},
			`http_filters[0] "meshgate.rbac.deny": rbac: rules.action: LOG not supported`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := r.Chain(tc.entries, httpfilter.Env{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Chain = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestCompilePerFilterConfig(t *testing.T) {
	t.Parallel()
	r := Default()
	if _, err := r.CompilePerFilterConfig("x", typed(t, &rbacv3.RBACPerRoute{})); err != nil {
		t.Errorf("RBACPerRoute: %v", err)
	}
	for _, m := range []proto.Message{&rbacv3.RBAC{}, &routerv3.Router{}, wrapperspb.String("x")} {
		_, err := r.CompilePerFilterConfig("x", typed(t, m))
		if err == nil || !strings.Contains(err.Error(), "not supported") {
			t.Errorf("%T: %v, want not supported", m, err)
		}
	}
	_, err := r.CompilePerFilterConfig("x", typed(t, &rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_LOG}}}))
	if err == nil || !strings.Contains(err.Error(), "rbac.rules.action") {
		t.Errorf("bad RBACPerRoute: %v", err)
	}
}

func TestNewRefusesBadFactories(t *testing.T) {
	t.Parallel()
	ok := func() httpfilter.Factory { return rbac.Factory() }
	noop := func(string, proto.Message, httpfilter.Env) (httpfilter.Filter, error) { return nil, errors.New("x") }
	tests := []struct {
		name      string
		factories []httpfilter.Factory
		want      string
	}{
		{"twice", []httpfilter.Factory{ok(), ok()}, "registered twice"},
		{"the router", []httpfilter.Factory{{ConfigType: xdscheck.RouterType, New: noop}}, "registered twice"},
		{"no New", []httpfilter.Factory{{ConfigType: "envoy.extensions.filters.http.rbac.v3.RBAC"}}, "required"},
		{"per-route type without NewPerRoute", []httpfilter.Factory{func() httpfilter.Factory {
			f := ok()
			f.NewPerRoute = nil
			return f
		}()}, "required"},
		{"no rules", []httpfilter.Factory{{ConfigType: "envoy.extensions.filters.http.rbac.v3.RBAC", New: noop}}, "no rule for"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := New(tc.factories...); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// A registry without RBAC refuses RBAC, in the check and the chain.
	r, err := New()
	if err != nil {
		t.Fatal(err)
	}
	hcm := &hcmv3.HttpConnectionManager{HttpFilters: []*hcmv3.HttpFilter{entry(t, "a", &rbacv3.RBAC{}), routerEntry(t)}}
	if _, err := r.Chain(hcm.GetHttpFilters(), httpfilter.Env{}); err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Errorf("Chain without RBAC = %v", err)
	}
}
