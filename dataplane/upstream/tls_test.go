package upstream

import (
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/meshtls"
	"github.com/meshgate/meshgate/dataplane/meshtls/meshtlstest"
)

const (
	ordersID = "spiffe://meshgate.local/ns/default/svc/orders"
	webID    = "spiffe://meshgate.local/ns/default/svc/web"
)

// meshServer is a TLS test server presenting cert, requiring a client
// certificate from the mesh CA; it answers "<protocol> <client SPIFFE ID>".
func meshServer(t *testing.T, ca *meshtlstest.CA, cert *tls.Certificate, h2 bool) string {
	t.Helper()
	bundle, err := meshtls.ParseBundle(ca.PEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto+" "+meshtls.SPIFFEID(r.TLS.PeerCertificates[0]))
	}))
	srv.EnableHTTP2 = h2
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{*cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    bundle.Pool,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func upstreamContext(san string, alpn ...string) *tlsv3.UpstreamTlsContext {
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	return &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default"}},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext: &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
				SanType: tlsv3.SubjectAltNameMatcher_URI,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: san}},
			}}},
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA", SdsConfig: ads},
		}},
		AlpnProtocols: alpn,
	}}
}

func withMTLS(t *testing.T, c *clusterv3.Cluster, ctx *tlsv3.UpstreamTlsContext) *clusterv3.Cluster {
	t.Helper()
	a, err := anypb.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	match, err := structpb.NewStruct(map[string]any{"tlsMode": "mtls"})
	if err != nil {
		t.Fatal(err)
	}
	c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{{
		Name: "mtls", Match: match,
		TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}},
	}}
	return c
}

// endpointsOf is an assignment of addrs; those in mtls carry the mTLS
// transport socket match metadata.
func endpointsOf(t *testing.T, name string, addrs []string, mtls map[string]bool) *endpointv3.ClusterLoadAssignment {
	t.Helper()
	var eps []testEndpoint
	for _, a := range addrs {
		host, port, _ := net.SplitHostPort(a)
		n, _ := strconv.Atoi(port)
		eps = append(eps, testEndpoint{addr: host, port: uint32(n)})
	}
	out := cla(name, eps...)
	tlsMode, err := structpb.NewStruct(map[string]any{"tlsMode": "mtls"})
	if err != nil {
		t.Fatal(err)
	}
	for i, lbe := range out.Endpoints[0].LbEndpoints {
		if mtls[addrs[i]] {
			lbe.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{TransportSocketMatchKey: tlsMode}}
		}
	}
	return out
}

// trust is a TrustBundle function over a swappable bundle.
type trust struct {
	bundle atomic.Pointer[meshtls.Bundle]
}

func newTrust(t *testing.T, pem []byte) *trust {
	t.Helper()
	b, err := meshtls.ParseBundle(pem)
	if err != nil {
		t.Fatal(err)
	}
	tr := &trust{}
	tr.bundle.Store(b)
	return tr
}

func (tr *trust) get(name string) *meshtls.Bundle {
	if name != "ROOTCA" {
		return nil
	}
	return tr.bundle.Load()
}

func roundTrip(c *Cluster, endpoint string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+endpoint+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Transport().RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

func TestClusterMTLS(t *testing.T) {
	t.Parallel()
	mesh, other := meshtlstest.NewCA(t, "mesh"), meshtlstest.NewCA(t, "other")
	client := meshtlstest.NewIdentity(webID, mesh.Issue(t, webID))
	plain := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "plain "+r.Proto)
	}))
	plain.Config.Protocols = new(http.Protocols)
	plain.Config.Protocols.SetHTTP1(true)
	plain.Config.Protocols.SetUnencryptedHTTP2(true)
	plain.Start()
	t.Cleanup(plain.Close)
	plainAddr := plain.Listener.Addr().String()

	tests := []struct {
		name     string
		server   string // endpoint serving TLS
		h2c      bool   // cluster protocol
		alpn     []string
		san      string
		want     string
		wantFail string
	}{
		{name: "http/1.1 with the right SAN", server: meshServer(t, mesh, mesh.Issue(t, ordersID), false),
			alpn: []string{"http/1.1"}, san: ordersID, want: "HTTP/1.1 " + webID},
		{name: "h2 with the right SAN", server: meshServer(t, mesh, mesh.Issue(t, ordersID), true),
			h2c: true, alpn: []string{"h2"}, san: ordersID, want: "HTTP/2.0 " + webID},
		{name: "no alpn follows the cluster protocol", server: meshServer(t, mesh, mesh.Issue(t, ordersID), true),
			h2c: true, san: ordersID, want: "HTTP/2.0 " + webID},
		{name: "wrong SAN", server: meshServer(t, mesh, mesh.Issue(t, webID), false),
			san: ordersID, wantFail: "is not the expected"},
		{name: "unknown CA", server: meshServer(t, other, other.Issue(t, ordersID), false),
			san: ordersID, wantFail: "unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := edsCluster("default/orders:80")
			if tt.h2c {
				cfg = withH2C(t, cfg)
			}
			cfg = withMTLS(t, cfg, upstreamContext(tt.san, tt.alpn...))
			c, err := NewCluster(cfg, nil, WithTLS(TLS{Certificate: client.Certificate, TrustBundle: newTrust(t, mesh.PEM).get}))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			if err := c.SetEndpoints(endpointsOf(t, "default/orders:80", []string{tt.server, plainAddr}, map[string]bool{tt.server: true})); err != nil {
				t.Fatal(err)
			}
			if !c.Secure(tt.server) || c.Secure(plainAddr) {
				t.Fatalf("Secure(tls) = %v, Secure(plain) = %v; want true, false", c.Secure(tt.server), c.Secure(plainAddr))
			}
			got, err := roundTrip(c, tt.server)
			if tt.wantFail != "" {
				var opErr *net.OpError
				if !errors.As(err, &opErr) || opErr.Op != "dial" || !strings.Contains(err.Error(), tt.wantFail) {
					t.Fatalf("RoundTrip() = %q, %v; want a dial error containing %q", got, err, tt.wantFail)
				}
			} else if err != nil || got != tt.want {
				t.Fatalf("RoundTrip() = %q, %v; want %q", got, err, tt.want)
			}
			// The endpoint without the match metadata stays plaintext.
			if got, err := roundTrip(c, plainAddr); err != nil || !strings.HasPrefix(got, "plain ") {
				t.Fatalf("plaintext endpoint: %q, %v", got, err)
			}
		})
	}
}

func TestClusterMTLSPicksUpNewCertificateAndBundle(t *testing.T) {
	t.Parallel()
	mesh, next := meshtlstest.NewCA(t, "mesh"), meshtlstest.NewCA(t, "next")
	server := meshServer(t, mesh, mesh.Issue(t, ordersID), false)
	client := meshtlstest.NewIdentity(webID, mesh.Issue(t, webID))
	tr := newTrust(t, next.PEM) // a bundle without the server's root
	c, err := NewCluster(withMTLS(t, staticClusterAt(t, server), upstreamContext(ordersID)), nil,
		WithTLS(TLS{Certificate: client.Certificate, TrustBundle: tr.get}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if _, err := roundTrip(c, server); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("RoundTrip() with a bundle lacking the root = %v, want unknown authority", err)
	}
	// The new bundle applies to the next handshake: no new cluster, no flush.
	tr.bundle.Store(newTrust(t, append(append([]byte{}, next.PEM...), mesh.PEM...)).bundle.Load())
	if got, err := roundTrip(c, server); err != nil || got != "HTTP/1.1 "+webID {
		t.Fatalf("RoundTrip() after the bundle update = %q, %v", got, err)
	}
	// No certificate: the handshake fails, as a connect error.
	client.SetCertificate(nil)
	c.Close() // drop the pooled connection so the next request handshakes
	var opErr *net.OpError
	if _, err := roundTrip(c, server); !errors.As(err, &opErr) || opErr.Op != "dial" {
		t.Fatalf("RoundTrip() without a client certificate = %v, want a dial error", err)
	}
}

func staticClusterAt(t *testing.T, addr string) *clusterv3.Cluster {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	c := staticCluster("default/orders:80", testEndpoint{addr: host, port: uint32(n)})
	tlsMode, err := structpb.NewStruct(map[string]any{"tlsMode": "mtls"})
	if err != nil {
		t.Fatal(err)
	}
	c.LoadAssignment.Endpoints[0].LbEndpoints[0].Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{TransportSocketMatchKey: tlsMode}}
	return c
}

func TestNewClusterRejectsMTLSWithoutIdentity(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts []Option
		ctx  *tlsv3.UpstreamTlsContext
		want string
	}{
		{name: "no identity", ctx: upstreamContext(ordersID), want: "has none"},
		{name: "alpn without the cluster protocol", ctx: upstreamContext(ordersID, "h2", "foo"),
			opts: []Option{WithTLS(TLS{Certificate: func() *tls.Certificate { return nil }, TrustBundle: func(string) *meshtls.Bundle { return nil }})},
			want: "alpn_protocols"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewCluster(withMTLS(t, edsCluster("c"), tt.ctx), nil, tt.opts...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewCluster() = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

// TestClusterMTLSResumesSessions proves that a new connection to an endpoint
// already connected to resumes the TLS session (no full handshake), that the
// resumed session is still verified against the current trust bundle, and
// that Close forgets the sessions.
func TestClusterMTLSResumesSessions(t *testing.T) {
	t.Parallel()
	mesh, next := meshtlstest.NewCA(t, "mesh"), meshtlstest.NewCA(t, "next")
	bundle, err := meshtls.ParseBundle(mesh.PEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "resumed="+strconv.FormatBool(r.TLS.DidResume)+" "+meshtls.SPIFFEID(r.TLS.PeerCertificates[0]))
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*mesh.Issue(t, ordersID)}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: bundle.Pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	server := srv.Listener.Addr().String()

	client := meshtlstest.NewIdentity(webID, mesh.Issue(t, webID))
	tr := newTrust(t, mesh.PEM)
	c, err := NewCluster(withMTLS(t, staticClusterAt(t, server), upstreamContext(ordersID, "http/1.1")), nil,
		WithTLS(TLS{Certificate: client.Certificate, TrustBundle: tr.get}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)

	steps := []struct {
		name     string
		before   func()
		want     string
		wantFail string
	}{
		{name: "first connection: full handshake", want: "resumed=false " + webID},
		{name: "new connection: resumed", before: c.closeIdle, want: "resumed=true " + webID},
		{name: "resumed again", before: c.closeIdle, want: "resumed=true " + webID},
		{name: "a renewed client certificate: full handshake", before: func() {
			c.closeIdle()
			client.SetCertificate(mesh.Issue(t, webID))
		}, want: "resumed=false " + webID},
		{name: "resumed with the renewed certificate", before: c.closeIdle, want: "resumed=true " + webID},
		{name: "resumption still checks the current bundle", before: func() {
			c.closeIdle()
			tr.bundle.Store(newTrust(t, next.PEM).bundle.Load())
		}, wantFail: "unknown authority"},
		{name: "after Close: full handshake", before: func() {
			tr.bundle.Store(bundle)
			c.Close()
		}, want: "resumed=false " + webID},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		got, err := roundTrip(c, server)
		switch {
		case st.wantFail != "":
			if err == nil || !strings.Contains(err.Error(), st.wantFail) {
				t.Fatalf("%s: RoundTrip() = %q, %v; want an error containing %q", st.name, got, err, st.wantFail)
			}
		case err != nil || got != st.want:
			t.Fatalf("%s: RoundTrip() = %q, %v; want %q", st.name, got, err, st.want)
		}
	}
}
