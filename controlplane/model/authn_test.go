package model

import (
	"testing"
	"time"

	"github.com/meshgate/meshgate/policy"
)

// TestAuthentication: the policies at one point merge: JWT providers of
// all (optional only when every JWT policy is), API consumers of all, the
// policies sorted; a point without authenticating policies has none.
func TestAuthentication(t *testing.T) {
	t.Parallel()
	jwtPolicy := func(name string, optional bool) *compiledPolicy {
		a, err := compileJWT("default/"+name, &policy.JWTAuthentication{Optional: optional, Providers: []policy.JWTProvider{{
			Name: "idp", RemoteJWKS: &policy.RemoteJWKS{URI: "https://idp/jwks", CacheDuration: "1m"}, ClockSkew: "5s",
		}}})
		if err != nil {
			t.Fatal(err)
		}
		return &compiledPolicy{name: "default/" + name, authn: a}
	}
	keys := func(name, consumer string) *compiledPolicy {
		return &compiledPolicy{name: "default/" + name, authn: compileAPIKey(&policy.APIKeyAuthentication{
			Consumers: []policy.APIKeyConsumer{{Name: consumer, SHA256s: []string{"AB"}}}})}
	}
	if a := authentication([]*compiledPolicy{{name: "default/rules"}}); a != nil {
		t.Errorf("rules only: %+v", a)
	}
	a := authentication([]*compiledPolicy{jwtPolicy("b", true), jwtPolicy("a", false), keys("k1", "acme"), keys("k2", "globex")})
	if a == nil || len(a.JWT) != 2 || a.Optional || len(a.Policies) != 4 || a.Policies[0] != "default/a" {
		t.Fatalf("merged = %+v", a)
	}
	if p := a.JWT[0]; p.Name != "default/b/idp" || p.CacheDuration != time.Minute || p.FetchTimeout != DefaultJWKSFetchTimeout || p.ClockSkew != 5*time.Second {
		t.Errorf("provider = %+v", p)
	}
	if a.APIKey == nil || len(a.APIKey.Consumers) != 2 || a.APIKey.Consumers[1].Name != "globex" || a.APIKey.Consumers[0].SHA256s[0] != "ab" {
		t.Errorf("api key = %+v", a.APIKey)
	}
	if got := authentication([]*compiledPolicy{jwtPolicy("a", true), keys("k", "acme")}); !got.Optional {
		t.Errorf("every JWT policy optional: %+v", got)
	}
	if got := authentication([]*compiledPolicy{keys("k", "acme")}); got.Optional {
		t.Errorf("no JWT: optional %v", got.Optional)
	}
}
