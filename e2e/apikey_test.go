package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"
)

// apiKeyPolicy: the gateway edge routes /api to app behind API keys (the
// consumers acme, in the policy, and globex, in a Secret, by the SHA-256
// of their keys), /admin behind
// basic auth (bob, bcrypt), with acme denied DELETE by a rule on its
// principal; / is open.
func apiKeyPolicy() string {
	acme, globex := sha256.Sum256([]byte("acme-key")), sha256.Sum256([]byte("globex-key"))
	return yamlDocs(edgeGateway, staticServices("app"), `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: edge}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /api}}]
      backendRefs: [{name: app, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: admin}
spec:
  parentRefs: [{name: edge}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /admin}}]
      backendRefs: [{name: app, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: open}
spec:
  parentRefs: [{name: edge}]
  rules: [{backendRefs: [{name: app, port: 80}]}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: api-keys}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}]
  apiKey:
    forwardConsumerHeader: X-Consumer
    consumers:
      - {name: acme, sha256: ["`+hex.EncodeToString(acme[:])+`"]}
    secretRef: {name: more-consumers}
  rules:
    - name: acme-no-delete
      action: DENY
      from: [{principals: [acme]}]
      to: [{methods: [DELETE]}]
---
apiVersion: v1
kind: Secret
metadata: {name: more-consumers}
type: Opaque
stringData:
  globex: "`+hex.EncodeToString(globex[:])+`"
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: admin-users}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: admin}]
  basicAuth:
    htpasswd: |
      bob:$2a$04$dtDjAYmQA4BCqO9/Cr/MKuzcOu9.c0HM9Nf3GoVUQoVLCK1JgHl0K
    forwardUsernameHeader: X-User
`)
}

// TestAPIKeyAndBasicAuth: API keys (hashed in the policy) and basic auth
// per route at the gateway, through the real binary: good and bad
// credentials, the consumer forwarded, a rule on the consumer.
func TestAPIKeyAndBasicAuth(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("edge.yaml", apiKeyPolicy())
	c.startApp("app", "app", "v1", "")
	c.startControlPlane()
	c.gateway("edge")
	gw := "http://" + c.addr("gw")
	eventually(t, 20*time.Second, "the gateway serves /api with a key", func() error {
		r, err := get(gw+"/api/x", "X-API-Key: acme-key")
		if err != nil {
			return err
		}
		if r.status != 200 || r.reply.Headers["x-consumer"] != "acme" || r.reply.Headers["x-api-key"] != "" {
			return fmt.Errorf("status %d, headers %v", r.status, r.reply.Headers)
		}
		return nil
	})
	basic := func(user, password string) string {
		return "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	}
	for _, tc := range []struct {
		name, method, path string
		headers            []string
		want               int
	}{
		{"open route", "GET", "/", nil, 200},
		{"api: acme", "GET", "/api/x", []string{"X-API-Key: acme-key"}, 200},
		{"api: globex", "DELETE", "/api/x", []string{"X-API-Key: globex-key"}, 200},
		{"api: no key", "GET", "/api/x", nil, 401},
		{"api: bad key", "GET", "/api/x", []string{"X-API-Key: nope"}, 401},
		{"api: the hash as the key", "GET", "/api/x", []string{"X-API-Key: sha256:" + fmt.Sprintf("%x", sha256.Sum256([]byte("acme-key")))}, 401},
		{"api: acme may not delete", "DELETE", "/api/x", []string{"X-API-Key: acme-key"}, 403},
		{"admin: bob", "GET", "/admin", []string{basic("bob", "pw")}, 200},
		{"admin: wrong password", "GET", "/admin", []string{basic("bob", "nope")}, 401},
		{"admin: none", "GET", "/admin", nil, 401},
	} {
		r, err := do(tc.method, gw+tc.path, tc.headers...)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if r.status != tc.want {
			t.Errorf("%s: status %d, want %d: %s", tc.name, r.status, tc.want, r.body)
		}
		if tc.name == "admin: bob" && r.reply.Headers["x-user"] != "bob" {
			t.Errorf("admin: X-User %q, want bob", r.reply.Headers["x-user"])
		}
	}

	t.Run("requests by consumer in the metrics", func(t *testing.T) {
		families, err := scrapeMetrics(c.addr("gateway-admin-edge"), "", acceptText)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		if f := families["meshgate_proxy_consumer_requests_total"]; f != nil {
			for _, m := range f.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				got[labels["kind"]+"/"+labels["consumer"]] = m.GetCounter().GetValue()
			}
		}
		// acme: the request the gateway first served (at least once),
		// one GET and the denied DELETE (authenticated, then denied);
		// globex one; bob one; no label for unknown keys.
		if got["apikey/acme"] < 3 || got["apikey/globex"] != 1 || got["basic/bob"] != 1 || len(got) != 3 {
			t.Errorf("consumer requests = %v", got)
		}
	})
}

// TestAPIKeyConsumersFile: API consumers from a file next to the policy,
// read by the control plane and watched: a key of the file works; the
// file edited (a consumer removed, another added), the new key works and
// the removed one gets 401 without a restart; the file broken, the last
// good keys keep working and the control plane names the file and line.
func TestAPIKeyConsumersFile(t *testing.T) {
	t.Parallel()
	hash := func(key string) string {
		sum := sha256.Sum256([]byte(key))
		return hex.EncodeToString(sum[:])
	}
	c := newCluster(t)
	consumers := c.policy("consumers.txt", "# NAME:SHA256 of a key\nacme:"+hash("acme-key")+"\n")
	c.policy("edge.yaml", yamlDocs(edgeGateway, staticServices("app"), `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: edge}]
  rules: [{backendRefs: [{name: app, port: 80}]}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: api-keys}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}]
  apiKey:
    forwardConsumerHeader: X-Consumer
    consumersFile: consumers.txt
`))
	c.startApp("app", "app", "v1", "")
	c.startControlPlane()
	c.gateway("edge")
	gw := "http://" + c.addr("gw")
	status := func(key string) (int, string, error) {
		r, err := get(gw+"/x", "X-API-Key: "+key)
		if err != nil {
			return 0, "", err
		}
		return r.status, r.reply.Headers["x-consumer"], nil
	}
	eventually(t, 20*time.Second, "acme's key from the file", func() error {
		if code, consumer, err := status("acme-key"); err != nil || code != 200 || consumer != "acme" {
			return fmt.Errorf("status %d, consumer %q, %v", code, consumer, err)
		}
		return nil
	})
	if code, _, err := status("globex-key"); err != nil || code != 401 {
		t.Fatalf("globex's key before it is in the file: %d %v, want 401", code, err)
	}

	writeFile(t, consumers, "globex:"+hash("globex-key")+"\n")
	eventually(t, 20*time.Second, "the edited file applied", func() error {
		if code, consumer, err := status("globex-key"); err != nil || code != 200 || consumer != "globex" {
			return fmt.Errorf("globex: status %d, consumer %q, %v", code, consumer, err)
		}
		if code, _, err := status("acme-key"); err != nil || code != 401 {
			return fmt.Errorf("acme, removed: status %d, %v; want 401", code, err)
		}
		return nil
	})

	writeFile(t, consumers, "globex:"+hash("globex-key")+"\ninitech\n")
	eventually(t, 20*time.Second, "the broken file reported", func() error {
		s, err := c.status()
		if err != nil {
			return err
		}
		if want := consumers + `:2: want NAME:SHA256`; !strings.Contains(s.LastError, want) {
			return fmt.Errorf("lastError %q, want one containing %q", s.LastError, want)
		}
		return nil
	})
	if code, consumer, err := status("globex-key"); err != nil || code != 200 || consumer != "globex" {
		t.Errorf("globex after the file broke: %d %q %v, want 200: the last good keys stay", code, consumer, err)
	}
}
