package policy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestJWTValidation: every bad field of spec.jwt (declared consumers
// included), and of claims and principals in rules, is reported with its
// line.
func TestJWTValidation(t *testing.T) {
	t.Parallel()
	got := errorStrings(t, "testdata/authn/bad-jwt.yaml")
	want := []string{
		`bad-jwt.yaml:14: spec.jwt.providers[0].name: invalid provider name "Bad_Name": must be lowercase letters, digits and '-', starting and ending with a letter or digit`,
		`bad-jwt.yaml:15: spec.jwt.providers[0].remoteJWKS.uri: uri "http://idp/jwks": want https (keys must not travel in the clear)`,
		`bad-jwt.yaml:15: spec.jwt.providers[0].remoteJWKS.cacheDuration: invalid duration "1x": want up to four <number><unit> groups with units h, m, s, ms (e.g. 1m30s)`,
		`bad-jwt.yaml:16: spec.jwt.providers[1]: remoteJWKS and localJWKS are exclusive`,
		`bad-jwt.yaml:19: spec.jwt.providers[2]: remoteJWKS or localJWKS is required`,
		`bad-jwt.yaml:20: spec.jwt.providers[3].name: duplicate provider name "both" (also spec.jwt.providers[1])`,
		`bad-jwt.yaml:21: spec.jwt.providers[3].localJWKS.file: file "relative.json" must be an absolute path (on the proxies' hosts)`,
		`bad-jwt.yaml:22: spec.jwt.providers[3].clockSkew: clockSkew 1h: want whole seconds from 0s to 10m0s`,
		"bad-jwt.yaml:23: spec.jwt.providers[3].extractFrom.headers[0].name: invalid name \"bad header\": only letters, digits and !#$%&'*+-.^_`|~ are allowed",
		`bad-jwt.yaml:23: spec.jwt.providers[3].extractFrom.params[0]: invalid query parameter name "a=b"`,
		`bad-jwt.yaml:23: spec.jwt.providers[3].extractFrom.cookies[0]: invalid cookie name "c;d"`,
		`bad-jwt.yaml:24: spec.jwt.providers[3].claimToHeaders[0].claim: claim name "a..b": empty part`,
		`bad-jwt.yaml:27: spec.jwt.providers[3].consumers[1].name: invalid consumer name "Bad": must be lowercase letters, digits and '-', starting and ending with a letter or digit`,
		`bad-jwt.yaml:28: spec.jwt.providers[3].consumers[2].name: duplicate consumer "billing" (also spec.jwt.providers[3].consumers[0])`,
		`bad-jwt.yaml:28: spec.jwt.providers[3].consumers[2].subject: subject "svc-billing" is also spec.jwt.providers[3].consumers[0]'s`,
		`bad-jwt.yaml:29: spec.jwt.providers[3].consumers[3].subject: a subject (the sub claim of the consumer's tokens) is required`,
		`bad-jwt.yaml:32: spec.rules[0].from[0].principals[0]: want 1 to 256 characters`,
		`bad-jwt.yaml:32: spec.rules[0].from[0].claims[0].values: at least one value is required`,
	}
	for i := range got {
		got[i] = strings.TrimPrefix(got[i], "testdata/authn/")
	}
	if !slices.Equal(got, want) {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestAPIKeyAndBasicAuthValidation: bad consumers, hashes, key locations
// and htpasswd lines are reported with their lines; one way to
// authenticate per policy.
func TestAPIKeyAndBasicAuthValidation(t *testing.T) {
	t.Parallel()
	got := errorStrings(t, "testdata/authn/bad-apikey.yaml")
	want := []string{
		`bad-apikey.yaml:10: spec: jwt, apiKey and basicAuth are exclusive: one way to authenticate per policy`,
		"bad-apikey.yaml:13: spec.apiKey.extractFrom.headers[0]: invalid name \"bad header\": only letters, digits and !#$%&'*+-.^_`|~ are allowed",
		`bad-apikey.yaml:15: spec.apiKey.consumers[0].sha256[0]: want 64 hex digits, the SHA-256 of the key (echo -n KEY | sha256sum)`,
		`bad-apikey.yaml:16: spec.apiKey.consumers[1].name: duplicate consumer "acme" (also spec.apiKey.consumers[0])`,
		`bad-apikey.yaml:16: spec.apiKey.consumers[1].sha256: at least one key hash is required (echo -n KEY | sha256sum)`,
		`bad-apikey.yaml:18: spec.basicAuth.htpasswd: line 1: user "bob": only bcrypt ($2y$...) and {SHA} passwords are supported`,
		`bad-apikey.yaml:18: spec.basicAuth.htpasswd: line 2: want user:hash`,
	}
	for i := range got {
		got[i] = strings.TrimPrefix(got[i], "testdata/authn/")
	}
	if !slices.Equal(got, want) {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestAPIKeySecret: consumers from a Secret (data or stringData, hashes
// lowercased); a line that is not a hash is reported without its value; a
// missing Secret is an unresolved reference.
func TestAPIKeySecret(t *testing.T) {
	t.Parallel()
	got := errorStrings(t, "testdata/authn/apikey-secret.yaml")
	want := []string{`testdata/authn/apikey-secret.yaml:23: spec.apiKey.secretRef.name: secret "keys": consumer "globex": a line is not 64 hex digits (the SHA-256 of a key)`}
	if !slices.Equal(got, want) {
		t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	good, err := os.ReadFile("testdata/authn/apikey-secret.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "good.yaml")
	if err := os.WriteFile(path, []byte(strings.Replace(string(good), "  globex: NWQ0MTQwMmFiYzRiMmE3NmI5NzE5ZDkxMTAxN2M1OTI=\n", "", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	sc := set.SecurityPolicies[0].Spec.APIKey.SecretConsumers
	if len(sc) != 1 || sc[0].Name != "initech" || sc[0].SHA256s[0] != "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae" {
		t.Errorf("secret consumers = %+v", sc)
	}
}
