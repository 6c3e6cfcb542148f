package ca

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"strings"
	"testing"
)

func TestValidateCSR(t *testing.T) {
	t.Parallel()
	key := mustKey(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := newCSR(t, key, "spiffe://meshgate.local/ns/default/svc/orders")
	tamper := func(b []byte) []byte {
		block, _ := pem.Decode(b)
		der := append([]byte(nil), block.Bytes...)
		der[len(der)-5] ^= 0xff // inside the signature
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}
	tests := []struct {
		name    string
		csr     []byte
		wantErr string // substring; "" means valid
	}{
		{"valid", good, ""},
		{"valid with trailing newline", append(append([]byte{}, good...), '\n', '\n'), ""},
		{"empty", nil, "empty"},
		{"garbage", []byte("hello, world"), "not PEM"},
		{"too large", []byte(strings.Repeat("A", MaxCSRSize+1)), "more than"},
		{"wrong block", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}}), "want CERTIFICATE REQUEST"},
		{"not der", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}), "PKCS#10"},
		{"two blocks", append(append([]byte{}, good...), good...), "data after"},
		{"bad signature", tamper(good), "signature"},
		{"p384", newCSR(t, p384, "spiffe://meshgate.local/ns/default/svc/orders"), "P-256"},
		{"ed25519", newCSR(t, edKey, "spiffe://meshgate.local/ns/default/svc/orders"), "P-256"},
		{"no uri", newCSR(t, key), "want exactly one"},
		{"two uris", newCSR(t, key, "spiffe://meshgate.local/ns/default/svc/orders", "spiffe://meshgate.local/ns/default/svc/users"), "want exactly one"},
		{"not spiffe", newCSR(t, key, "https://meshgate.local/ns/default/svc/orders"), "spiffe://"},
		{"other trust domain", newCSR(t, key, "spiffe://evil.example/ns/default/svc/orders"), "trust domain"},
		{"bad path", newCSR(t, key, "spiffe://meshgate.local/svc/orders"), "path"},
		{"query", newCSR(t, key, "spiffe://meshgate.local/ns/default/svc/orders?x=1"), "DNS labels"},
		{"port", newCSR(t, key, "spiffe://meshgate.local:1/ns/default/svc/orders"), "not allowed"},
		{"upper case", newCSR(t, key, "spiffe://meshgate.local/ns/default/svc/Orders"), "DNS labels"},
		{"dns san", csrWithExtraSANs(t, key), "only the SPIFFE ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			csr, id, err := ValidateCSR(tt.csr, "meshgate.local")
			if tt.wantErr == "" {
				if err != nil || id != ordersID || csr == nil {
					t.Fatalf("ValidateCSR = %v, %v", id, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ValidateCSR error = %v, want it to mention %q", err, tt.wantErr)
			}
		})
	}
}

func csrWithExtraSANs(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{DNSNames: []string{"orders"}, URIs: []*url.URL{ordersID.URL()}}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func FuzzValidateCSR(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	good := newCSR(f, key, "spiffe://meshgate.local/ns/default/svc/orders")
	f.Add(good)
	f.Add(newCSR(f, key, "spiffe://meshgate.local/ns/default/svc/orders", "spiffe://x/ns/a/svc/b"))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{})
	block, _ := pem.Decode(good)
	f.Add(block.Bytes)
	f.Fuzz(func(t *testing.T, in []byte) {
		csr, id, err := ValidateCSR(in, "meshgate.local")
		if err != nil {
			return
		}
		// Whatever passes is exactly what the CA may sign.
		if csr.CheckSignature() != nil || len(csr.URIs) != 1 || id.String() != csr.URIs[0].String() || id.TrustDomain != "meshgate.local" {
			t.Fatalf("accepted an invalid CSR: %+v %v", id, csr.URIs)
		}
	})
}
