package rbac

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/peer"
)

// Builders for the protos under test.

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func prefix(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

func suffix(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: s}}
}

func regex(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: s}}}
}

func ignoreCase(sm *matcherv3.StringMatcher) *matcherv3.StringMatcher {
	sm.IgnoreCase = true
	return sm
}

func header(name string, sm *matcherv3.StringMatcher) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}
}

func permAny() *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Any{Any: true}}
}

func permPath(sm *matcherv3.StringMatcher) *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: sm}}}}
}

func permHeader(hm *routev3.HeaderMatcher) *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Header{Header: hm}}
}

func permAnd(rules ...*rbacconfigv3.Permission) *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_AndRules{AndRules: &rbacconfigv3.Permission_Set{Rules: rules}}}
}

func permOr(rules ...*rbacconfigv3.Permission) *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_OrRules{OrRules: &rbacconfigv3.Permission_Set{Rules: rules}}}
}

func permNot(rule *rbacconfigv3.Permission) *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_NotRule{NotRule: rule}}
}

func prinAny() *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Any{Any: true}}
}

func prinID(sm *matcherv3.StringMatcher) *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Authenticated_{
		Authenticated: &rbacconfigv3.Principal_Authenticated{PrincipalName: sm}}}
}

func prinIP(addr string, bits uint32) *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_DirectRemoteIp{
		DirectRemoteIp: &corev3.CidrRange{AddressPrefix: addr, PrefixLen: wrapperspb.UInt32(bits)}}}
}

func prinHeader(hm *routev3.HeaderMatcher) *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Header{Header: hm}}
}

func prinAnd(ids ...*rbacconfigv3.Principal) *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_AndIds{AndIds: &rbacconfigv3.Principal_Set{Ids: ids}}}
}

func prinOr(ids ...*rbacconfigv3.Principal) *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_OrIds{OrIds: &rbacconfigv3.Principal_Set{Ids: ids}}}
}

func prinNot(id *rbacconfigv3.Principal) *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_NotId{NotId: id}}
}

func pol(perm *rbacconfigv3.Permission, prin *rbacconfigv3.Principal) *rbacconfigv3.Policy {
	return &rbacconfigv3.Policy{Permissions: []*rbacconfigv3.Permission{perm}, Principals: []*rbacconfigv3.Principal{prin}}
}

func rules(action rbacconfigv3.RBAC_Action, policies map[string]*rbacconfigv3.Policy) *rbacv3.RBAC {
	return &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{Action: action, Policies: policies}}
}

const (
	frontend = "spiffe://meshgate.local/ns/default/svc/frontend"
	ops      = "spiffe://meshgate.local/ns/ops/svc/tool"
)

// req is a request as a listener hands it to the handler.
type req struct {
	method, target, remote, identity string
	headers                          []string // name, value pairs
}

func (q req) build() *http.Request {
	method := q.method
	if method == "" {
		method = http.MethodGet
	}
	r := httptest.NewRequest(method, q.target, nil)
	if q.remote != "" {
		r.RemoteAddr = q.remote
	}
	for i := 0; i+1 < len(q.headers); i += 2 {
		r.Header.Add(q.headers[i], q.headers[i+1])
	}
	if q.identity != "" {
		r = r.WithContext(peer.WithIdentity(r.Context(), q.identity))
	}
	return r
}

func mustCompile(t testing.TB, cfg *rbacv3.RBAC) *Engine {
	t.Helper()
	f, err := Compile(cfg)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return f
}

// TestMatchers runs one ALLOW policy per case: allowed means the permission
// and principal matched.
func TestMatchers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		perm  *rbacconfigv3.Permission
		prin  *rbacconfigv3.Principal
		req   req
		match bool
	}{
		{"any any", permAny(), prinAny(), req{target: "/"}, true},

		// url_path.
		{"path exact", permPath(exact("/orders")), prinAny(), req{target: "/orders"}, true},
		{"path exact ignores query", permPath(exact("/orders")), prinAny(), req{target: "/orders?x=1"}, true},
		{"path exact other", permPath(exact("/orders")), prinAny(), req{target: "/orders/1"}, false},
		{"path exact case", permPath(exact("/orders")), prinAny(), req{target: "/Orders"}, false},
		{"path exact ignore_case", permPath(ignoreCase(exact("/orders"))), prinAny(), req{target: "/ORDERS"}, true},
		{"path prefix", permPath(prefix("/admin/")), prinAny(), req{target: "/admin/users"}, true},
		{"path prefix miss", permPath(prefix("/admin/")), prinAny(), req{target: "/admin"}, false},
		{"path prefix ignore_case", permPath(ignoreCase(prefix("/admin/"))), prinAny(), req{target: "/ADMIN/x"}, true},
		{"path suffix", permPath(suffix(".json")), prinAny(), req{target: "/a/b.json?v=2"}, true},
		{"path suffix miss", permPath(suffix(".json")), prinAny(), req{target: "/a/b.xml"}, false},
		{"path regex full match", permPath(regex(`/orders/[0-9]+`)), prinAny(), req{target: "/orders/42"}, true},
		{"path regex is anchored", permPath(regex(`/orders/[0-9]+`)), prinAny(), req{target: "/orders/42/items"}, false},
		{"path escaped as received", permPath(exact("/a%20b")), prinAny(), req{target: "/a%20b"}, true},

		// header.
		{"method", permHeader(header(":method", exact("POST"))), prinAny(), req{method: "POST", target: "/"}, true},
		{"method miss", permHeader(header(":method", exact("POST"))), prinAny(), req{target: "/"}, false},
		{"header exact", permHeader(header("x-env", exact("prod"))), prinAny(), req{target: "/", headers: []string{"X-Env", "prod"}}, true},
		{"header absent", permHeader(header("x-env", exact("prod"))), prinAny(), req{target: "/"}, false},
		{"header joined values", permHeader(header("x-env", exact("a,b"))), prinAny(), req{target: "/", headers: []string{"X-Env", "a", "X-Env", "b"}}, true},
		{"header present", permHeader(&routev3.HeaderMatcher{Name: "x-env", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}), prinAny(),
			req{target: "/", headers: []string{"X-Env", ""}}, true},
		{"header invert", permHeader(&routev3.HeaderMatcher{Name: "x-env", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("prod")}}), prinAny(),
			req{target: "/", headers: []string{"X-Env", "dev"}}, true},
		{"principal header", permAny(), prinHeader(header("x-caller", prefix("front"))), req{target: "/", headers: []string{"X-Caller", "frontend"}}, true},

		// and / or / not permissions.
		{"and all", permAnd(permPath(prefix("/orders")), permHeader(header(":method", exact("GET")))), prinAny(), req{target: "/orders"}, true},
		{"and one fails", permAnd(permPath(prefix("/orders")), permHeader(header(":method", exact("GET")))), prinAny(), req{method: "POST", target: "/orders"}, false},
		{"or one", permOr(permPath(exact("/a")), permPath(exact("/b"))), prinAny(), req{target: "/b"}, true},
		{"or none", permOr(permPath(exact("/a")), permPath(exact("/b"))), prinAny(), req{target: "/c"}, false},
		{"not", permNot(permPath(prefix("/admin"))), prinAny(), req{target: "/orders"}, true},
		{"not miss", permNot(permPath(prefix("/admin"))), prinAny(), req{target: "/admin"}, false},
		{"nested", permAnd(permOr(permPath(exact("/a")), permPath(exact("/b"))), permNot(permHeader(header(":method", exact("DELETE"))))), prinAny(),
			req{method: "PUT", target: "/a"}, true},

		// authenticated.
		{"identity exact", permAny(), prinID(exact(frontend)), req{target: "/", identity: frontend}, true},
		{"identity other", permAny(), prinID(exact(frontend)), req{target: "/", identity: ops}, false},
		{"identity plaintext", permAny(), prinID(exact(frontend)), req{target: "/"}, false},
		{"identity prefix", permAny(), prinID(prefix("spiffe://meshgate.local/ns/ops/")), req{target: "/", identity: ops}, true},
		{"identity regex", permAny(), prinID(regex(`spiffe://meshgate\.local/ns/[^/]+/svc/frontend`)), req{target: "/", identity: frontend}, true},
		{"identity suffix", permAny(), prinID(suffix("/svc/tool")), req{target: "/", identity: ops}, true},
		{"plaintext never matches even an empty-matching regex", permAny(), prinID(regex(`.*`)), req{target: "/"}, false},
		{"authenticated without name: any mTLS peer", permAny(),
			&rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Authenticated_{Authenticated: &rbacconfigv3.Principal_Authenticated{}}},
			req{target: "/", identity: ops}, true},
		{"authenticated without name: not plaintext", permAny(),
			&rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Authenticated_{Authenticated: &rbacconfigv3.Principal_Authenticated{}}},
			req{target: "/"}, false},
		{"not plaintext-only identity", permAny(), prinNot(prinID(exact(frontend))), req{target: "/"}, true},

		// direct_remote_ip.
		{"ip in v4 range", permAny(), prinIP("10.0.0.0", 8), req{target: "/", remote: "10.1.2.3:5555"}, true},
		{"ip outside v4 range", permAny(), prinIP("10.0.0.0", 8), req{target: "/", remote: "11.1.2.3:5555"}, false},
		{"ip exact /32", permAny(), prinIP("127.0.0.1", 32), req{target: "/", remote: "127.0.0.1:1"}, true},
		{"ip unmasked prefix", permAny(), prinIP("10.9.9.9", 8), req{target: "/", remote: "10.1.2.3:5555"}, true},
		{"ip v4-mapped v6 peer", permAny(), prinIP("10.0.0.0", 8), req{target: "/", remote: "[::ffff:10.0.0.1]:80"}, true},
		{"ip v6", permAny(), prinIP("2001:db8::", 32), req{target: "/", remote: "[2001:db8::1]:80"}, true},
		{"ip v6 vs v4 range", permAny(), prinIP("10.0.0.0", 8), req{target: "/", remote: "[2001:db8::1]:80"}, false},
		{"ip without port", permAny(), prinIP("10.0.0.0", 8), req{target: "/", remote: "10.0.0.1"}, true},
		{"ip unparsable", permAny(), prinIP("0.0.0.0", 0), req{target: "/", remote: "pipe"}, false},
		{"ip /0 matches all v4", permAny(), prinIP("0.0.0.0", 0), req{target: "/", remote: "192.0.2.1:1"}, true},

		// and / or / not principals.
		{"and ids", permAny(), prinAnd(prinID(exact(frontend)), prinIP("127.0.0.0", 8)), req{target: "/", identity: frontend, remote: "127.0.0.1:1"}, true},
		{"and ids one fails", permAny(), prinAnd(prinID(exact(frontend)), prinIP("127.0.0.0", 8)), req{target: "/", identity: frontend, remote: "10.0.0.1:1"}, false},
		{"or ids", permAny(), prinOr(prinID(exact(frontend)), prinIP("10.0.0.0", 8)), req{target: "/", remote: "10.0.0.1:1"}, true},
		{"or ids none", permAny(), prinOr(prinID(exact(frontend)), prinIP("10.0.0.0", 8)), req{target: "/", remote: "192.0.2.1:1"}, false},
		{"not id", permAny(), prinNot(prinIP("10.0.0.0", 8)), req{target: "/", remote: "192.0.2.1:1"}, true},

		// permission and principal both needed.
		{"permission ok principal not", permPath(exact("/a")), prinID(exact(frontend)), req{target: "/a", identity: ops}, false},
		{"principal ok permission not", permPath(exact("/a")), prinID(exact(frontend)), req{target: "/b", identity: frontend}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := mustCompile(t, rules(rbacconfigv3.RBAC_ALLOW, map[string]*rbacconfigv3.Policy{"p": pol(tc.perm, tc.prin)}))
			allowed, policy := f.Evaluate(tc.req.build())
			if allowed != tc.match {
				t.Fatalf("allowed = %v (policy %q), want %v", allowed, policy, tc.match)
			}
			wantPolicy := NoAllowMatch
			if tc.match {
				wantPolicy = "p"
			}
			if policy != wantPolicy {
				t.Errorf("policy = %q, want %q", policy, wantPolicy)
			}
		})
	}
}

func TestActions(t *testing.T) {
	t.Parallel()
	policies := func() map[string]*rbacconfigv3.Policy {
		return map[string]*rbacconfigv3.Policy{
			"default/p/b-admin": pol(permPath(prefix("/admin")), prinAny()),
			"default/p/a-ops":   pol(permAny(), prinID(exact(ops))),
			"default/p/c-multi": {
				Permissions: []*rbacconfigv3.Permission{permPath(exact("/x")), permPath(exact("/y"))},
				Principals:  []*rbacconfigv3.Principal{prinID(exact(frontend)), prinIP("10.0.0.0", 8)},
			},
		}
	}
	tests := []struct {
		name        string
		cfg         *rbacv3.RBAC
		req         req
		wantAllowed bool
		wantPolicy  string
	}{
		{"no rules allows", &rbacv3.RBAC{}, req{target: "/admin"}, true, ""},
		{"no rules with stat prefix allows", &rbacv3.RBAC{RulesStatPrefix: "default/p"}, req{target: "/admin"}, true, ""},
		{"ALLOW without policies denies all", rules(rbacconfigv3.RBAC_ALLOW, nil), req{target: "/", identity: ops}, false, NoAllowMatch},
		{"DENY without policies allows all", rules(rbacconfigv3.RBAC_DENY, nil), req{target: "/admin"}, true, ""},
		{"DENY matched", rules(rbacconfigv3.RBAC_DENY, policies()), req{target: "/admin/x"}, false, "default/p/b-admin"},
		{"DENY unmatched", rules(rbacconfigv3.RBAC_DENY, policies()), req{target: "/orders"}, true, ""},
		{"DENY first in name order", rules(rbacconfigv3.RBAC_DENY, policies()), req{target: "/admin", identity: ops}, false, "default/p/a-ops"},
		{"ALLOW matched", rules(rbacconfigv3.RBAC_ALLOW, policies()), req{target: "/admin"}, true, "default/p/b-admin"},
		{"ALLOW first in name order", rules(rbacconfigv3.RBAC_ALLOW, policies()), req{target: "/admin", identity: ops}, true, "default/p/a-ops"},
		{"ALLOW any of several permissions and principals", rules(rbacconfigv3.RBAC_ALLOW, policies()), req{target: "/y", remote: "10.0.0.7:1"}, true, "default/p/c-multi"},
		{"ALLOW unmatched", rules(rbacconfigv3.RBAC_ALLOW, policies()), req{target: "/x", identity: "spiffe://meshgate.local/ns/default/svc/other"}, false, NoAllowMatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := mustCompile(t, tc.cfg)
			// Repeat: the order must be deterministic whatever the map order.
			for range 20 {
				allowed, policy := f.Evaluate(tc.req.build())
				if allowed != tc.wantAllowed || policy != tc.wantPolicy {
					t.Fatalf("Evaluate = %v %q, want %v %q", allowed, policy, tc.wantAllowed, tc.wantPolicy)
				}
			}
		})
	}
}

func TestNilEngineAllows(t *testing.T) {
	t.Parallel()
	var f *Engine
	if allowed, policy := f.Evaluate(req{target: "/"}.build()); !allowed || policy != "" {
		t.Fatalf("nil filter: Evaluate = %v %q", allowed, policy)
	}
	if f.Enforces() {
		t.Error("nil filter enforces")
	}
}

func TestStatKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, prefix, policy, want string
		action                     rbacconfigv3.RBAC_Action
	}{
		{"allow with prefix", "default/orders-callers", NoAllowMatch, "default/orders-callers/no-allow-match", rbacconfigv3.RBAC_ALLOW},
		{"allow without prefix", "", NoAllowMatch, NoAllowMatch, rbacconfigv3.RBAC_ALLOW},
		{"deny is the policy", "default/x", "default/x/no-admin", "default/x/no-admin", rbacconfigv3.RBAC_DENY},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := rules(tc.action, nil)
			cfg.RulesStatPrefix = tc.prefix
			f := mustCompile(t, cfg)
			if got := f.StatKey(tc.policy); got != tc.want {
				t.Errorf("StatKey = %q, want %q", got, tc.want)
			}
			if f.StatPrefix() != tc.prefix {
				t.Errorf("StatPrefix = %q", f.StatPrefix())
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	allowAll := func(perm *rbacconfigv3.Permission, prin *rbacconfigv3.Principal) *rbacv3.RBAC {
		return rules(rbacconfigv3.RBAC_ALLOW, map[string]*rbacconfigv3.Policy{"p": pol(perm, prin)})
	}
	deep := permAny()
	for range 40 {
		deep = permNot(deep)
	}
	tests := []struct {
		name string
		cfg  *rbacv3.RBAC
		want []string
	}{
		{"nil", nil, []string{"nil config"}},
		{"LOG action", rules(rbacconfigv3.RBAC_LOG, nil), []string{"action", "LOG"}},
		{"shadow rules", &rbacv3.RBAC{ShadowRules: &rbacconfigv3.RBAC{}}, []string{"shadow_rules", "not supported"}},
		{"track_per_rule_stats", &rbacv3.RBAC{TrackPerRuleStats: true}, []string{"track_per_rule_stats"}},
		{"destination_port", allowAll(&rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_DestinationPort{DestinationPort: 80}}, prinAny()),
			[]string{`policies["p"]`, "permissions[0].destination_port", "not supported"}},
		{"requested_server_name", allowAll(&rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_RequestedServerName{RequestedServerName: exact("x")}}, prinAny()),
			[]string{"requested_server_name"}},
		{"remote_ip", allowAll(permAny(), &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_RemoteIp{RemoteIp: &corev3.CidrRange{AddressPrefix: "10.0.0.0"}}}),
			[]string{"principals[0].remote_ip", "not supported"}},
		{"principal url_path", allowAll(permAny(), &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: exact("/")}}}}),
			[]string{"principals[0].url_path"}},
		{"path contains", allowAll(permPath(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "x"}}), prinAny()),
			[]string{"url_path.path.contains", "not supported"}},
		{"principal_name contains", allowAll(permAny(), prinID(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "x"}})),
			[]string{"principal_name.contains"}},
		{"bad regex", allowAll(permPath(regex("(")), prinAny()), []string{`policies["p"]`, "permissions[0]", "safe_regex"}},
		{"regex ignore_case", allowAll(permPath(ignoreCase(regex("a"))), prinAny()), []string{"ignore_case"}},
		{"bad cidr", allowAll(permAny(), prinIP("10.0.0.300", 8)), []string{"direct_remote_ip", "address_prefix"}},
		{"cidr too long", allowAll(permAny(), prinIP("10.0.0.0", 33)), []string{"direct_remote_ip", "prefix_len 33"}},
		{"condition", rules(rbacconfigv3.RBAC_ALLOW, map[string]*rbacconfigv3.Policy{"p": {
			Permissions: []*rbacconfigv3.Permission{permAny()}, Principals: []*rbacconfigv3.Principal{prinAny()},
			CelConfig: &corev3.CelExpressionConfig{}}}), []string{"cel_config"}},
		{"no principals", rules(rbacconfigv3.RBAC_ALLOW, map[string]*rbacconfigv3.Policy{"p": {Permissions: []*rbacconfigv3.Permission{permAny()}}}),
			[]string{"Principals"}},
		{"any false", allowAll(&rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Any{Any: false}}, prinAny()), []string{"Any"}},
		{"bad pseudo-header", allowAll(permHeader(header(":protocol", exact("x"))), prinAny()), []string{":protocol"}},
		{"too deep", allowAll(deep, prinAny()), []string{"deeper"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Compile(tc.cfg)
			if err == nil {
				t.Fatal("Compile succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func typed(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// benchFilter is a realistic SecurityPolicy: a DENY-style path rule and an
// ALLOW of two services by identity, method and path.
func benchFilter(b testing.TB) *Engine {
	return mustCompile(b, rules(rbacconfigv3.RBAC_ALLOW, map[string]*rbacconfigv3.Policy{
		"default/orders-callers/0": {
			Permissions: []*rbacconfigv3.Permission{permAnd(
				permOr(permHeader(header(":method", exact("GET"))), permHeader(header(":method", exact("POST")))),
				permOr(permPath(exact("/orders")), permPath(prefix("/orders/"))),
				permHeader(header("x-env", exact("prod"))),
			)},
			Principals: []*rbacconfigv3.Principal{
				prinID(exact("spiffe://meshgate.local/ns/default/svc/edge")),
				prinID(exact(frontend)),
				prinIP("10.0.0.0", 8),
			},
		},
		"default/orders-callers/1": pol(permPath(regex(`/health/[a-z]+`)), prinAny()),
	}))
}

func TestEvaluateDoesNotAllocate(t *testing.T) {
	f := benchFilter(t)
	allowed := req{method: "POST", target: "/orders/42?x=1", identity: frontend, remote: "10.1.1.1:3456", headers: []string{"X-Env", "prod"}}.build()
	denied := req{method: "DELETE", target: "/orders/42", identity: ops, remote: "192.0.2.1:3456"}.build()
	for _, r := range []*http.Request{allowed, denied} {
		if a := testing.AllocsPerRun(100, func() { f.Evaluate(r) }); a != 0 {
			t.Fatalf("Evaluate allocates %v times per call, want 0", a)
		}
	}
	if ok, _ := f.Evaluate(allowed); !ok {
		t.Fatal("allowed request denied")
	}
	if ok, _ := f.Evaluate(denied); ok {
		t.Fatal("denied request allowed")
	}
}

func BenchmarkEvaluate(b *testing.B) {
	f := benchFilter(b)
	cases := map[string]*http.Request{
		"allowed-by-identity": req{method: "GET", target: "/orders/42", identity: frontend, remote: "192.0.2.1:1", headers: []string{"X-Env", "prod"}}.build(),
		"no-allow-match":      req{method: "DELETE", target: "/orders/42", identity: ops, remote: "192.0.2.1:1"}.build(),
	}
	for name, r := range cases {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f.Evaluate(r)
			}
		})
	}
}

// Ensure the context plumbing is the peer package's.
func TestIdentityFromContext(t *testing.T) {
	t.Parallel()
	f := mustCompile(t, rules(rbacconfigv3.RBAC_ALLOW, map[string]*rbacconfigv3.Policy{"p": pol(permAny(), prinID(exact(frontend)))}))
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if ok, _ := f.Evaluate(r); ok {
		t.Fatal("plaintext allowed")
	}
	r = r.WithContext(peer.WithIdentity(context.Background(), frontend))
	if ok, p := f.Evaluate(r); !ok || p != "p" {
		t.Fatalf("mTLS peer: %v %q", ok, p)
	}
}
