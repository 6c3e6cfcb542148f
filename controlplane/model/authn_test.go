package model

import (
	"os"
	"path/filepath"
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
			Consumers: []policy.APIKeyConsumer{{Name: consumer, SHA256s: []string{"AB"}}}}, nil)}
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

// TestAPIKeyConsumersFileCompiled: the consumers of a policy's
// consumersFile, as the set read them, join its inline ones.
func TestAPIKeyConsumersFileCompiled(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const a, b = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae", "fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9"
	if err := os.WriteFile(filepath.Join(dir, "consumers.txt"), []byte("globex:"+b+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := policy.LoadFiles(policy.File{Name: filepath.Join(dir, "p.yaml"), Data: []byte(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: keys}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  apiKey:
    consumers: [{name: acme, sha256: [` + a + `]}]
    consumersFile: consumers.txt
`)})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Gateways) != 1 || m.Gateways[0].Authentication == nil || m.Gateways[0].Authentication.APIKey == nil {
		t.Fatalf("gateways = %+v", m.Gateways)
	}
	got := m.Gateways[0].Authentication.APIKey.Consumers
	if len(got) != 2 || got[0].Name != "acme" || got[1].Name != "globex" || got[1].SHA256s[0] != b {
		t.Errorf("consumers = %+v, want acme (inline) and globex (file)", got)
	}
}
