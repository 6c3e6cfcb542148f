package policy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// acmeGateway is the Gateway edge with a plaintext listener and an HTTPS
// listener of hostname host whose tls is given (a flow mapping's fields).
func acmeGateway(host, tls string) string {
	return `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners:
  - {name: http, port: 8080, protocol: HTTP}
  - name: https
    port: 8443
    protocol: HTTPS
    hostname: "` + host + `"
    tls: {` + tls + `}
`
}

// acmeIssuerDoc is an ACMEIssuer document with the spec's fields given.
func acmeIssuerDoc(name, spec string) string {
	return `apiVersion: meshgate.dev/v1alpha1
kind: ACMEIssuer
metadata: {name: ` + name + `}
spec:
` + spec
}

// TestACMEListeners: an HTTPS listener naming an ACMEIssuer in its
// tls.options needs no certificateRef, and is served, its issuer
// resolved; an exact hostname is required (a wildcard needs DNS-01, which
// is said), the issuer must exist and be valid, and certificateRefs are
// not allowed beside it. Each error names the file, line and field, and
// only the listener is left out.
func TestACMEListeners(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, _ := testPair(t, "acme ca", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), []byte(cert), 0o600); err != nil {
		t.Fatal(err)
	}
	const option = `options: {meshgate.dev/acme-issuer: le}`
	valid := "  server: https://acme.example/dir\n  email: ops@example.com\n  caFile: ca.pem\n  challenges: [http-01]\n  renewalWindowRatio: 0.5\n"
	tests := []struct {
		name, host, tls, issuer string
		wantErr                 string // "file:line: field: message" prefix; "" for none
	}{
		{name: "valid", host: "shop.example.com", tls: option, issuer: valid},
		{name: "defaults", host: "shop.example.com", tls: option, issuer: "  server: https://acme.example/dir\n"},
		{name: "wildcard hostname", host: "*.example.com", tls: option, issuer: valid,
			wantErr: `gw.yaml:11: spec.listeners[1].hostname: wildcard hostname "*.example.com": a wildcard certificate needs the ACME DNS-01 challenge`},
		{name: "no hostname", host: "", tls: option, issuer: valid,
			wantErr: `gw.yaml:11: spec.listeners[1].hostname: a listener with meshgate.dev/acme-issuer needs a hostname`},
		{name: "missing issuer", host: "shop.example.com", tls: `options: {meshgate.dev/acme-issuer: nope}`, issuer: valid,
			wantErr: `gw.yaml:12: spec.listeners[1].tls.options["meshgate.dev/acme-issuer"]: ACMEIssuer default/nope does not exist`},
		{name: "certificateRefs beside", host: "shop.example.com", tls: option + `, certificateRefs: [{name: shop}]`, issuer: valid,
			wantErr: `gw.yaml:12: spec.listeners[1].tls.certificateRefs: a listener with meshgate.dev/acme-issuer has no certificateRefs`},
		{name: "plain http server", host: "shop.example.com", tls: option, issuer: "  server: http://acme.example/dir\n",
			wantErr: `issuer.yaml:5: spec.server: invalid ACME directory "http://acme.example/dir": want an https:// URL`},
		{name: "dns-01", host: "shop.example.com", tls: option, issuer: "  server: https://acme.example/dir\n  challenges: [dns-01]\n",
			wantErr: `issuer.yaml:6: spec.challenges[0]: unknown challenge type "dns-01"`},
		{name: "ratio", host: "shop.example.com", tls: option, issuer: "  server: https://acme.example/dir\n  renewalWindowRatio: 1.5\n",
			wantErr: `issuer.yaml:6: spec.renewalWindowRatio: 1.5 is not a share of the lifetime`},
		{name: "missing CA file", host: "shop.example.com", tls: option, issuer: "  server: https://acme.example/dir\n  caFile: nope.pem\n",
			wantErr: `issuer.yaml:6: spec.caFile: reading ` + filepath.Join(dir, "nope.pem")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := Evaluate(Input{Files: []File{
				{Name: filepath.Join(dir, "gw.yaml"), Data: []byte(acmeGateway(tt.host, tt.tls))},
				{Name: filepath.Join(dir, "issuer.yaml"), Data: []byte(acmeIssuerDoc("le", tt.issuer))},
			}})
			var errs []string
			for _, e := range r.Errors {
				errs = append(errs, strings.TrimPrefix(e.Error(), dir+string(filepath.Separator)))
			}
			g := r.Set.Gateways[0]
			if tt.wantErr == "" {
				if len(errs) > 0 {
					t.Fatalf("errors: %v", errs)
				}
				if len(g.Spec.Listeners) != 2 {
					t.Fatalf("served listeners %v, want both", g.Spec.Listeners)
				}
				a := r.Set.ListenerACMEIssuer("default", &g.Spec.Listeners[1])
				if a == nil || a.Name != "le" {
					t.Fatalf("ListenerACMEIssuer = %v, want le", a)
				}
				if tt.name == "defaults" && !slices.Equal(a.ChallengeTypes(), []string{ACMEChallengeHTTP01, ACMEChallengeTLSALPN01}) {
					t.Errorf("ChallengeTypes() = %v, want both", a.ChallengeTypes())
				}
				if tt.name == "valid" && a.CAFilePath() != filepath.Join(dir, "ca.pem") {
					t.Errorf("CAFilePath() = %q, want it relative to the policy file", a.CAFilePath())
				}
				return
			}
			if !slices.ContainsFunc(errs, func(e string) bool { return strings.HasPrefix(e, tt.wantErr) }) {
				t.Fatalf("errors %q, want one starting with %q", errs, tt.wantErr)
			}
			if len(g.Spec.Listeners) != 1 || g.Spec.Listeners[0].Name != "http" {
				t.Errorf("served listeners %v, want http only", g.Spec.Listeners)
			}
		})
	}
}
