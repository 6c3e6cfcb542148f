package descriptor

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/peer"
)

func metadataRateLimit(key, ns string, path ...string) *routev3.RateLimit {
	segs := make([]*metadatav3.MetadataKey_PathSegment, len(path))
	for i, p := range path {
		segs[i] = &metadatav3.MetadataKey_PathSegment{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: p}}
	}
	return &routev3.RateLimit{Actions: []*routev3.RateLimit_Action{{ActionSpecifier: &routev3.RateLimit_Action_Metadata{
		Metadata: &routev3.RateLimit_Action_MetaData{DescriptorKey: key, MetadataKey: &metadatav3.MetadataKey{Key: ns, Path: segs}}}}}}
}

func TestMetadataAction(t *testing.T) {
	t.Parallel()
	jwt := &httpfilter.Auth{Principal: "alice", Kind: httpfilter.AuthJWT, MetadataNamespace: "envoy.filters.http.jwt_authn",
		MetadataKey: "jwt_payload", Metadata: map[string]any{"sub": "alice", "tenant": "acme", "n": 3.0}}
	apiKey := &httpfilter.Auth{Principal: "mobile", Kind: httpfilter.AuthAPIKey, MetadataNamespace: PrincipalNamespace,
		MetadataKey: "principal", Metadata: map[string]any{"name": "mobile", "kind": httpfilter.AuthAPIKey}}
	principal := metadataRateLimit("principal", PrincipalNamespace, PrincipalPath[:]...)
	tenant := metadataRateLimit("claim", "envoy.filters.http.jwt_authn", "jwt_payload", "tenant")
	tests := []struct {
		name   string
		rl     *routev3.RateLimit
		ctx    func(context.Context) context.Context
		want   string
		wantOK bool
	}{
		{"principal of a JWT", principal, func(c context.Context) context.Context { return httpfilter.WithAuth(c, jwt) }, "alice", true},
		{"principal of an API key", principal, func(c context.Context) context.Context { return httpfilter.WithAuth(c, apiKey) }, "mobile", true},
		{"principal of an mTLS peer", principal, func(c context.Context) context.Context {
			return peer.WithIdentity(c, "spiffe://mesh.local/ns/default/sa/web")
		}, "spiffe://mesh.local/ns/default/sa/web", true},
		{"no principal", principal, func(c context.Context) context.Context { return c }, "", false},
		{"claim", tenant, func(c context.Context) context.Context { return httpfilter.WithAuth(c, jwt) }, "acme", true},
		{"claim without a JWT", tenant, func(c context.Context) context.Context { return httpfilter.WithAuth(c, apiKey) }, "", false},
		{"absent claim", metadataRateLimit("claim", "envoy.filters.http.jwt_authn", "jwt_payload", "org"),
			func(c context.Context) context.Context { return httpfilter.WithAuth(c, jwt) }, "", false},
		{"claim not a string", metadataRateLimit("claim", "envoy.filters.http.jwt_authn", "jwt_payload", "n"),
			func(c context.Context) context.Context { return httpfilter.WithAuth(c, jwt) }, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			acts, err := Compile(tt.rl)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("GET", "/", nil)
			r = r.WithContext(tt.ctx(r.Context()))
			got, ok := Make(r, acts, nil)
			if ok != tt.wantOK {
				t.Fatalf("Make ok = %v, want %v (%v)", ok, tt.wantOK, got)
			}
			if ok && (len(got) != 1 || got[0].Value != tt.want || got[0].Key != tt.rl.Actions[0].GetMetadata().GetDescriptorKey()) {
				t.Errorf("Make = %v, want one entry of value %q", got, tt.want)
			}
		})
	}
}

func TestMetadataActionErrors(t *testing.T) {
	t.Parallel()
	withSource := metadataRateLimit("k", "ns", "p")
	withSource.Actions[0].GetMetadata().Source = routev3.RateLimit_Action_MetaData_ROUTE_ENTRY
	withDefault := metadataRateLimit("k", "ns", "p")
	withDefault.Actions[0].GetMetadata().DefaultValue = "x"
	tests := []struct {
		name string
		rl   *routev3.RateLimit
		want string
	}{
		{"no descriptor key", metadataRateLimit("", "ns", "p"), "metadata.descriptor_key: required"},
		{"no namespace", metadataRateLimit("k", "", "p"), "metadata.metadata_key.key: required"},
		{"no path", metadataRateLimit("k", "ns"), "metadata.metadata_key.path: 0 segments"},
		{"empty segment", metadataRateLimit("k", "ns", "a", ""), "metadata.metadata_key.path[1].key: required"},
		{"route entry source", withSource, "only DYNAMIC"},
		{"default value", withDefault, "not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Compile(tt.rl)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "actions[0].") {
				t.Errorf("Compile error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
