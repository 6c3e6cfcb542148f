package model

import (
	"slices"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/policy"
)

// acmeTestPolicy: the Gateway edge with a plaintext listener (no
// hostname) redirecting to HTTPS, an HTTPS listener of shop.example.com
// whose certificate is obtained over ACME, and a route of alpha on it.
const acmeTestPolicy = `apiVersion: meshgate.dev/v1alpha1
kind: ACMEIssuer
metadata: {name: le}
spec: {server: "https://acme.example/dir"}
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: alpha}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "127.0.0.1:9000"}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners:
  - {name: http, port: 8080, protocol: HTTP}
  - name: https
    port: 8443
    protocol: HTTPS
    hostname: shop.example.com
    tls: {options: {meshgate.dev/acme-issuer: le}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: site}
spec:
  parentRefs: [{name: edge, sectionName: https}]
  rules: [{backendRefs: [{name: alpha, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-https}
spec:
  parentRefs: [{name: edge, sectionName: http}]
  rules: [{filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]}]
`

// TestWithACME: the compiled model names the ACME listener and its issuer
// but has no certificate for it; WithACME leaves the listener (and a port
// left empty) out until the material has its certificate, then presents
// it; an HTTP-01 challenge is a direct response first in a virtual host
// of its name on the plaintext port (that keeps the rules that served the
// name), a TLS-ALPN-01 challenge a chain of ALPN acme-tls/1 on the HTTPS
// port; the model's version changes with the material, and m itself is
// never modified.
func TestWithACME(t *testing.T) {
	t.Parallel()
	r := policy.Evaluate(policy.Input{Files: []policy.File{{Name: "p.yaml", Data: []byte(acmeTestPolicy)}}})
	if len(r.Errors) > 0 {
		t.Fatal(r.Errors)
	}
	m, err := Compile(r.Set)
	if err != nil {
		t.Fatal(err)
	}
	ls := m.ACMEListeners()
	if len(ls) != 1 || ls[0].ACME.Hostname != "shop.example.com" || ls[0].ACME.Issuer.Server != "https://acme.example/dir" ||
		!slices.Equal(ls[0].ACME.Issuer.Challenges, []string{"http-01", "tls-alpn-01"}) || ls[0].ACME.Issuer.RenewalWindowRatio != policy.DefaultACMERenewalWindowRatio {
		t.Fatalf("ACMEListeners() = %+v", ls)
	}
	before := m.Version
	ports := func(m *Model) []int32 {
		var out []int32
		for _, p := range m.Gateways[0].Ports {
			out = append(out, p.Number)
		}
		return out
	}
	cert := NewACMECertificate("shop.example.com", []byte("cert"), []byte("key"))
	challengeCert := NewACMECertificate("shop.example.com", []byte("challenge"), []byte("challenge key"))
	challengeCert.Secret = ACMEChallengeSecret("shop.example.com")
	httpChallenge := HTTPChallenge{Hostname: "shop.example.com", Token: "tok", KeyAuthorization: "tok.thumb"}

	tests := []struct {
		name      string
		mat       ACMEMaterial
		wantPorts []int32
		// wantChains are the HTTPS port's chains as hostname/certificate
		// secret/ALPN.
		wantChains []string
		// wantShopRules are the route names of the plaintext port's
		// shop.example.com virtual host; nil: it has none.
		wantShopRules []string
	}{
		{name: "no certificate yet", wantPorts: []int32{8080}},
		{name: "certificate", mat: ACMEMaterial{Certificates: map[string]*Certificate{"shop.example.com": cert}},
			wantPorts: []int32{8080, 8443}, wantChains: []string{"shop.example.com/acme/shop.example.com/"}},
		{name: "HTTP-01 challenge", mat: ACMEMaterial{HTTPChallenges: []HTTPChallenge{httpChallenge}},
			wantPorts: []int32{8080}, wantShopRules: []string{"acme-http-01", "to-https"}},
		{name: "TLS-ALPN-01 challenge", mat: ACMEMaterial{TLSALPNChallenges: []TLSALPNChallenge{{Hostname: "shop.example.com", Certificate: challengeCert}}},
			wantPorts: []int32{8080, 8443}, wantChains: []string{"shop.example.com/acme-challenge/shop.example.com/acme-tls/1"}},
		{name: "renewal by TLS-ALPN-01", mat: ACMEMaterial{Certificates: map[string]*Certificate{"shop.example.com": cert},
			TLSALPNChallenges: []TLSALPNChallenge{{Hostname: "shop.example.com", Certificate: challengeCert}}},
			wantPorts: []int32{8080, 8443}, wantChains: []string{"shop.example.com/acme/shop.example.com/", "shop.example.com/acme-challenge/shop.example.com/acme-tls/1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := m.WithACME(tt.mat)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ports(got), tt.wantPorts) {
				t.Errorf("ports %v, want %v", ports(got), tt.wantPorts)
			}
			var chains []string
			var shop []string
			for _, p := range got.Gateways[0].Ports {
				for _, c := range p.TLS.GetChains() {
					for _, cert := range c.Certificates {
						chains = append(chains, c.Hostname+"/"+cert.Secret+"/"+strings.Join(c.ApplicationProtocols, ","))
					}
				}
				if p.TLS != nil {
					continue
				}
				for _, vh := range p.VirtualHosts {
					if vh.Hostname != "shop.example.com" {
						continue
					}
					for _, rule := range vh.Rules {
						shop = append(shop, rule.Route.Name)
					}
					if d := vh.Rules[0].Action.DirectResponse; d == nil || d.Status != 200 || d.Body != "tok.thumb" ||
						vh.Rules[0].Match.Path != (PathMatch{Kind: PathExact, Value: "/.well-known/acme-challenge/tok"}) {
						t.Errorf("challenge rule %+v %+v", vh.Rules[0].Match, vh.Rules[0].Action)
					}
				}
			}
			if !slices.Equal(chains, tt.wantChains) {
				t.Errorf("chains %v, want %v", chains, tt.wantChains)
			}
			if !slices.Equal(shop, tt.wantShopRules) {
				t.Errorf("shop.example.com rules on the plaintext port %v, want %v", shop, tt.wantShopRules)
			}
			if got.Version == before {
				t.Error("the version did not change")
			}
			if m.Version != before || !slices.Equal(ports(m), []int32{8080, 8443}) || len(m.Gateways[0].Ports[1].TLS.Chains[0].Certificates) != 0 {
				t.Error("WithACME modified the compiled model")
			}
		})
	}
}
