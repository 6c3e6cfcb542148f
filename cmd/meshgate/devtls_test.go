package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/policy"
)

// TestEnsureDevCertificate: the first run makes the certificate and key
// (the key readable by the user only), later runs reuse them, and one that
// expires within a week is replaced.
func TestEnsureDevCertificate(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")
	now := time.Now()
	first, err := ensureDevCertificate(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, devKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, st.Mode())
	}
	again, err := ensureDevCertificate(dir, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.cert.CertPEM, again.cert.CertPEM) {
		t.Error("a second run made a new certificate; want the first reused")
	}
	late, err := ensureDevCertificate(dir, first.cert.NotAfter.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(first.cert.CertPEM, late.cert.CertPEM) {
		t.Error("a certificate expiring in a day was reused; want a new one")
	}
}

// TestDevHTTPS: an annotated Gateway gets an HTTPS listener on the port,
// presenting dev's certificate; the set given is not modified; a bad port
// is an error naming the Gateway.
func TestDevHTTPS(t *testing.T) {
	t.Parallel()
	c, err := ensureDevCertificate(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	gw := func(name, port string) *policy.Gateway {
		g := &policy.Gateway{}
		g.Name, g.Namespace = name, "default"
		if port != "" {
			g.Annotations = map[string]string{AnnotationDevHTTPSPort: port}
		}
		g.Spec.Listeners = []gwapiv1.Listener{{Name: "http", Protocol: gwapiv1.HTTPProtocolType, Port: 8080}}
		return g
	}
	set := &policy.Set{Gateways: []*policy.Gateway{gw("edge", "8443"), gw("plain", "")}}
	out := devHTTPS(set, c)
	if len(set.Gateways[0].Spec.Listeners) != 1 || set.TLSCertificates != nil {
		t.Fatal("devHTTPS modified the set it was given")
	}
	ls := out.Gateways[0].Spec.Listeners
	if len(ls) != 2 || ls[1].Protocol != gwapiv1.HTTPSProtocolType || ls[1].Port != 8443 || ls[1].Name != "https" {
		t.Fatalf("edge's listeners = %+v, want http and https on 8443", ls)
	}
	if certs := out.ListenerCertificates("default", &ls[1]); len(certs) != 1 || !bytes.Equal(certs[0].CertPEM, c.cert.CertPEM) {
		t.Errorf("the HTTPS listener's certificates = %v, want dev's", certs)
	}
	if len(out.Gateways[1].Spec.Listeners) != 1 {
		t.Error("a Gateway without the annotation got a listener")
	}
	for _, port := range []string{"x", "0", "70000", "8080"} {
		err := devHTTPSPorts(&policy.Set{Gateways: []*policy.Gateway{gw("edge", port)}})
		if err == nil || !strings.Contains(err.Error(), "gateway edge: annotation "+AnnotationDevHTTPSPort) {
			t.Errorf("port %q: %v, want an error naming the gateway and annotation", port, err)
		}
	}
}
