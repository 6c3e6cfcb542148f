package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/dataplane/meshtls/meshtlstest"
)

// backendContext is the UpstreamTlsContext of a BackendTLSPolicy: sni,
// trusted_ca and the subject alt names (DNS unless "spiffe:" or "https:").
func backendContext(sni string, caPEM []byte, sans ...string) *tlsv3.UpstreamTlsContext {
	v := &tlsv3.CertificateValidationContext{TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: caPEM}}}
	for _, san := range sans {
		typ := tlsv3.SubjectAltNameMatcher_DNS
		if strings.Contains(san, ":") {
			typ = tlsv3.SubjectAltNameMatcher_URI
		}
		v.MatchTypedSubjectAltNames = append(v.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{
			SanType: typ, Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: san}}})
	}
	return &tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: v},
		AlpnProtocols:         []string{"http/1.1"},
	}}
}

func withBackendTLS(t *testing.T, c *clusterv3.Cluster, ctx *tlsv3.UpstreamTlsContext) *clusterv3.Cluster {
	t.Helper()
	typed, err := anypb.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: typed}}
	return c
}

// TestClusterBackendTLS: a cluster's transport_socket makes its calls TLS,
// the backend verified against the CA bundle and the subject alt names;
// the SNI is sent; a wrong CA or name fails the connection.
func TestClusterBackendTLS(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "tls "+r.TLS.ServerName)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}) // self-signed: its own CA
	addr := srv.Listener.Addr().String()
	other := meshtlstest.NewCA(t, "other")

	for _, tc := range []struct {
		name    string
		ctx     *tlsv3.UpstreamTlsContext
		want    string
		wantErr string
	}{
		{"right CA and name", backendContext("example.com", caPEM, "example.com"), "tls example.com", ""},
		{"one of several names", backendContext("example.com", caPEM, "nope.test", "example.com"), "tls example.com", ""},
		{"wrong CA", backendContext("example.com", other.PEM, "example.com"), "", "certificate signed by unknown authority"},
		{"wrong name", backendContext("example.com", caPEM, "other.test"), "", "has none of the subject alt names"},
		{"URI not in the certificate", backendContext("example.com", caPEM, "spiffe://x/y"), "", "has none of the subject alt names"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := mustCluster(t, withBackendTLS(t, staticClusterPlain(t, addr), tc.ctx))
			got, err := roundTrip(c, addr)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("round trip = %q, %v; want error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("round trip = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestClusterBackendTLSURI: a URI subject alt name (a SPIFFE ID) verifies
// a backend whose certificate has it.
func TestClusterBackendTLSURI(t *testing.T) {
	t.Parallel()
	ca := meshtlstest.NewCA(t, "backend")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*ca.IssueURIs(t, "spiffe://backend.test/svc")}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	c := mustCluster(t, withBackendTLS(t, staticClusterPlain(t, addr), backendContext("svc.backend.test", ca.PEM, "spiffe://backend.test/svc")))
	if got, err := roundTrip(c, addr); err != nil || got != "ok" {
		t.Fatalf("round trip = %q, %v; want ok", got, err)
	}
}

// TestNewClusterRejectsBackendTLSWithoutCA: a transport_socket without a
// trusted CA is refused.
func TestNewClusterRejectsBackendTLSWithoutCA(t *testing.T) {
	t.Parallel()
	ctx := backendContext("example.com", nil, "example.com")
	ctx.CommonTlsContext.GetValidationContext().TrustedCa = nil
	_, err := NewCluster(withBackendTLS(t, staticClusterPlain(t, "127.0.0.1:1"), ctx), nil)
	if err == nil || !strings.Contains(err.Error(), "trusted_ca or system_root_certs") {
		t.Fatalf("NewCluster = %v, want an error about trusted_ca", err)
	}
}

func staticClusterPlain(t *testing.T, addr string) *clusterv3.Cluster {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	return staticCluster("default/orders:80", testEndpoint{addr: host, port: uint32(n)})
}

// TestSANMatcher: a DNS name matches a SAN equal to it (any case) or a
// wildcard SAN covering its first label only; a URI matches exactly.
func TestSANMatcher(t *testing.T) {
	t.Parallel()
	u, _ := url.Parse("spiffe://td/ns/a/sa/b")
	cert := &x509.Certificate{DNSNames: []string{"Shop.Example.com", "*.example.org"}, URIs: []*url.URL{u}}
	for _, tc := range []struct {
		m    sanMatcher
		want bool
	}{
		{sanMatcher{dns: "shop.example.com"}, true},
		{sanMatcher{dns: "example.com"}, false},
		{sanMatcher{dns: "a.example.org"}, true},
		{sanMatcher{dns: "a.b.example.org"}, false},
		{sanMatcher{dns: "example.org"}, false},
		{sanMatcher{uri: "spiffe://td/ns/a/sa/b"}, true},
		{sanMatcher{uri: "spiffe://td/ns/a/sa/c"}, false},
	} {
		if got := tc.m.matches(cert); got != tc.want {
			t.Errorf("%+v matches = %v, want %v", tc.m, got, tc.want)
		}
	}
}
