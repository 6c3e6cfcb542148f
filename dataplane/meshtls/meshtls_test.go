package meshtls_test

import (
	"bytes"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/meshgate/meshgate/dataplane/meshtls"
	"github.com/meshgate/meshgate/dataplane/meshtls/meshtlstest"
)

func TestParseBundle(t *testing.T) {
	t.Parallel()
	a, b := meshtlstest.NewCA(t, "root a"), meshtlstest.NewCA(t, "root b")
	tests := []struct {
		name      string
		pem       []byte
		wantRoots int
		wantErr   string
	}{
		{name: "one root", pem: a.PEM, wantRoots: 1},
		{name: "two roots", pem: append(bytes.Clone(a.PEM), b.PEM...), wantRoots: 2},
		{name: "empty", pem: nil, wantErr: "no PEM certificate"},
		{name: "garbage", pem: []byte("not pem"), wantErr: "data after the last PEM certificate"},
		{name: "private key block", pem: []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), wantErr: `"PRIVATE KEY"`},
		{name: "bad certificate", pem: []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), wantErr: "certificate 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := meshtls.ParseBundle(tt.pem)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseBundle() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Roots) != tt.wantRoots || len(got.Roots[0].SHA256) != 64 || !strings.Contains(got.Roots[0].Subject, "root a") {
				t.Fatalf("roots = %+v, want %d with subject and SHA-256", got.Roots, tt.wantRoots)
			}
		})
	}
}

func TestVerifyPeer(t *testing.T) {
	t.Parallel()
	mesh, other := meshtlstest.NewCA(t, "mesh"), meshtlstest.NewCA(t, "other")
	bundle, err := meshtls.ParseBundle(mesh.PEM)
	if err != nil {
		t.Fatal(err)
	}
	const orders = "spiffe://meshgate.local/ns/default/svc/orders"
	leaf := func(ca *meshtlstest.CA, id string) []*x509.Certificate {
		return []*x509.Certificate{ca.Issue(t, id).Leaf}
	}
	uris := func(ca *meshtlstest.CA, uris ...string) []*x509.Certificate {
		return []*x509.Certificate{ca.IssueURIs(t, uris...).Leaf}
	}
	const web = "spiffe://meshgate.local/ns/default/svc/web"
	tests := []struct {
		name    string
		chain   []*x509.Certificate
		bundle  *meshtls.Bundle
		allowed []string
		wantErr string
	}{
		{name: "any mesh identity", chain: leaf(mesh, orders)},
		{name: "expected identity", chain: leaf(mesh, orders), allowed: []string{"spiffe://x/other", orders}},
		{name: "wrong identity", chain: leaf(mesh, web), allowed: []string{orders}, wantErr: "is not the expected"},
		{name: "other CA", chain: leaf(other, orders), wantErr: "unknown authority"},
		{name: "no certificate", wantErr: "no certificate"},
		{name: "no bundle yet", chain: leaf(mesh, orders), bundle: &meshtls.Bundle{}, wantErr: "no trust bundle"},
		// One URI SAN, the SPIFFE ID (api/spiffeid): a certificate naming two
		// identities is refused, even when one of them is the expected one.
		{name: "two URI SANs", chain: uris(mesh, orders, web), allowed: []string{orders}, wantErr: "2 URI SANs"},
		{name: "two URI SANs, any identity", chain: uris(mesh, web, orders), wantErr: "2 URI SANs"},
		{name: "no URI SAN", chain: uris(mesh), wantErr: "0 URI SANs"},
		{name: "not a SPIFFE ID", chain: uris(mesh, "https://meshgate.local/ns/default/svc/orders"), wantErr: "spiffe://"},
		{name: "not a meshgate SPIFFE ID", chain: uris(mesh, "spiffe://meshgate.local/orders"), wantErr: "path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := bundle
			if tt.bundle != nil {
				b = nil
			}
			id, err := meshtls.VerifyPeer(tt.chain, b, tt.allowed, time.Now())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("VerifyPeer() = %q, %v; want error %q", id, err, tt.wantErr)
				}
				return
			}
			if err != nil || id != orders {
				t.Fatalf("VerifyPeer() = %q, %v; want %q", id, err, orders)
			}
		})
	}
}
