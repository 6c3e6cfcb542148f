package rbac

import (
	"net/http/httptest"
	"testing"

	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
)

func metadataPrincipal(list bool, value string, path ...string) *rbacconfigv3.Principal {
	mm := &matcherv3.MetadataMatcher{Filter: "envoy.filters.http.jwt_authn"}
	for _, k := range path {
		mm.Path = append(mm.Path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
	}
	vm := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: exact(value)}}
	if list {
		vm = &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
			MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: vm}}}}
	}
	mm.Value = vm
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_SourcedMetadata{SourcedMetadata: &rbacconfigv3.SourcedMetadata{MetadataMatcher: mm}}}
}

// TestMetadataPrincipal: metadata principals match the request's
// authentication payload (a JWT's claims): a string, an element of a list,
// a nested claim; nothing matches a request without authentication.
func TestMetadataPrincipal(t *testing.T) {
	t.Parallel()
	auth := &httpfilter.Auth{Principal: "alice", MetadataNamespace: "envoy.filters.http.jwt_authn", MetadataKey: "jwt_payload",
		Metadata: map[string]any{"sub": "alice", "scope": []any{"orders:read", "orders:write"}, "org": map[string]any{"id": "acme"}}}
	for _, tc := range []struct {
		name      string
		principal *rbacconfigv3.Principal
		authn     bool
		want      bool
	}{
		{"sub equals", metadataPrincipal(false, "alice", "jwt_payload", "sub"), true, true},
		{"sub differs", metadataPrincipal(false, "bob", "jwt_payload", "sub"), true, false},
		{"scope holds", metadataPrincipal(true, "orders:write", "jwt_payload", "scope"), true, true},
		{"scope lacks", metadataPrincipal(true, "orders:admin", "jwt_payload", "scope"), true, false},
		{"a list is not a string", metadataPrincipal(false, "orders:write", "jwt_payload", "scope"), true, false},
		{"nested", metadataPrincipal(false, "acme", "jwt_payload", "org", "id"), true, true},
		{"other key", metadataPrincipal(false, "alice", "other", "sub"), true, false},
		{"unauthenticated", metadataPrincipal(false, "alice", "jwt_payload", "sub"), false, false},
	} {
		e, err := Compile(&rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_ALLOW, Policies: map[string]*rbacconfigv3.Policy{
			"p": {Permissions: []*rbacconfigv3.Permission{permAny()}, Principals: []*rbacconfigv3.Principal{tc.principal}},
		}}})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		r := httptest.NewRequest("GET", "/", nil)
		if tc.authn {
			r = r.WithContext(httpfilter.WithAuth(r.Context(), auth))
		}
		if got, _ := e.Evaluate(r); got != tc.want {
			t.Errorf("%s: allowed %v, want %v", tc.name, got, tc.want)
		}
	}
}
