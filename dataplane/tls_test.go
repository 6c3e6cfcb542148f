package dataplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/identity"
	"github.com/meshgate/meshgate/dataplane/internal/h1server"
	"github.com/meshgate/meshgate/dataplane/meshtls"
	"github.com/meshgate/meshgate/dataplane/meshtls/meshtlstest"
	"github.com/meshgate/meshgate/dataplane/peer"
)

const (
	ordersID = "spiffe://meshgate.local/ns/default/svc/orders"
	webID    = "spiffe://meshgate.local/ns/default/svc/web"
)

func rootCARef() *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: "ROOTCA", SdsConfig: ads()}
}

func typedSocket(t *testing.T, m proto.Message) *corev3.TransportSocket {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
}

func downstreamSocket(t *testing.T) *corev3.TransportSocket {
	return typedSocket(t, &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default"}},
			ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: rootCARef()},
			AlpnProtocols:                  []string{"h2", "http/1.1"},
		},
	})
}

// tlsConfig is a snapshot with one listener in mode ("strict", "permissive"
// or "" for plaintext) and, when bundle is not nil, the ROOTCA secret.
type tlsConfig struct {
	config
	mode   string
	bundle []byte
	// upstreamSAN, when set, makes the cluster's endpoint an mTLS endpoint
	// whose peer must be upstreamSAN.
	upstreamSAN string
}

func (c tlsConfig) build(t *testing.T) *cachev3.Snapshot {
	t.Helper()
	base := c.config.build(t)
	res := map[resourcev3.Type][]types.Resource{}
	for _, typ := range []resourcev3.Type{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType} {
		for _, r := range base.GetResources(typ) {
			res[typ] = append(res[typ], proto.Clone(r))
		}
	}
	l := res[resourcev3.ListenerType][0].(*listenerv3.Listener)
	switch c.mode {
	case "strict":
		l.FilterChains[0].TransportSocket = downstreamSocket(t)
	case "permissive":
		plain := proto.Clone(l.FilterChains[0]).(*listenerv3.FilterChain)
		plain.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}
		l.FilterChains[0].FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "tls"}
		l.FilterChains[0].TransportSocket = downstreamSocket(t)
		l.FilterChains = append(l.FilterChains, plain)
		inspector, err := anypb.New(&tlsinspectorv3.TlsInspector{})
		if err != nil {
			t.Fatal(err)
		}
		l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.tls_inspector", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: inspector}}}
	}
	if c.upstreamSAN != "" {
		cl := res[resourcev3.ClusterType][0].(*clusterv3.Cluster)
		match, _ := structpb.NewStruct(map[string]any{"tlsMode": "mtls"})
		cl.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{{Name: "mtls", Match: match, TransportSocket: typedSocket(t, &tlsv3.UpstreamTlsContext{
			CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default"}},
				ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext: &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
						SanType: tlsv3.SubjectAltNameMatcher_URI,
						Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: c.upstreamSAN}},
					}}},
					ValidationContextSdsSecretConfig: rootCARef(),
				}},
				AlpnProtocols: []string{"http/1.1"},
			},
		})}}
		cla := res[resourcev3.EndpointType][0].(*endpointv3.ClusterLoadAssignment)
		cla.Endpoints[0].LbEndpoints[0].Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.transport_socket_match": match}}
	}
	if c.bundle != nil {
		res[resourcev3.SecretType] = []types.Resource{&tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{
			ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: c.bundle}}},
		}}}
	}
	snap, err := cachev3.NewSnapshot(c.version, res)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// startIdentityProxy runs a Proxy with id (may be nil) against cp until the
// test ends.
func startIdentityProxy(t *testing.T, cp *controlPlane, id identity.Provider, opts ...func(*Options)) *Proxy {
	t.Helper()
	o := Options{
		Node:         &corev3.Node{Id: testNode, Cluster: "edge"},
		XDSAddresses: []string{cp.addr},
		Logger:       slog.New(slog.DiscardHandler),
		Identity:     id,
	}
	testHTTP1Option(&o)
	for _, opt := range opts {
		opt(&o)
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run() = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return p
}

// meshClient is an HTTPS client presenting cert (nil: none) and verifying
// that the server is serverID from bundle's CA.
func meshClient(t *testing.T, cert *tls.Certificate, bundlePEM []byte, serverID string, h2 bool) *http.Client {
	t.Helper()
	bundle, err := meshtls.ParseBundle(bundlePEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{
		InsecureSkipVerify: true, // verified by SPIFFE ID below
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := meshtls.VerifyPeer(cs.PeerCertificates, bundle, []string{serverID}, time.Now())
			return err
		},
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: h2}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

func getProto(client *http.Client, url string) (string, string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return resp.Proto, string(body), errors.New(resp.Status)
	}
	return resp.Proto, string(body), err
}

func TestInboundListenerModes(t *testing.T) {
	t.Parallel()
	forEachHTTP1Server(t, testInboundListenerModes)
}

func testInboundListenerModes(t *testing.T, server func(*Options)) {
	mesh, other := meshtlstest.NewCA(t, "mesh"), meshtlstest.NewCA(t, "other")
	id := meshtlstest.NewIdentity(ordersID, mesh.Issue(t, ordersID))
	webCert, strangerCert := mesh.Issue(t, webID), other.Issue(t, webID)

	type attempt struct {
		name      string
		client    *http.Client
		plaintext bool
		wantOK    bool
		wantProto string
	}
	tests := []struct {
		mode     string
		attempts []attempt
	}{
		{mode: "strict", attempts: []attempt{
			{name: "mTLS from the mesh CA", client: meshClient(t, webCert, mesh.PEM, ordersID, false), wantOK: true, wantProto: "HTTP/1.1"},
			{name: "mTLS over h2", client: meshClient(t, webCert, mesh.PEM, ordersID, true), wantOK: true, wantProto: "HTTP/2.0"},
			{name: "plaintext", client: &http.Client{Timeout: 5 * time.Second}, plaintext: true},
			{name: "client cert from another CA", client: meshClient(t, strangerCert, mesh.PEM, ordersID, false)},
			{name: "no client cert", client: meshClient(t, nil, mesh.PEM, ordersID, false)},
		}},
		{mode: "permissive", attempts: []attempt{
			{name: "mTLS from the mesh CA", client: meshClient(t, webCert, mesh.PEM, ordersID, true), wantOK: true, wantProto: "HTTP/2.0"},
			{name: "plaintext", client: &http.Client{Timeout: 5 * time.Second}, plaintext: true, wantOK: true, wantProto: "HTTP/1.1"},
			{name: "client cert from another CA", client: meshClient(t, strangerCert, mesh.PEM, ordersID, false)},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			t.Parallel()
			cp := startControlPlane(t)
			p := startIdentityProxy(t, cp, id, server)
			cp.set(t, tlsConfig{
				config: config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend(t, "a")},
				mode:   tt.mode, bundle: mesh.PEM,
			}.build(t))
			good := meshClient(t, webCert, mesh.PEM, ordersID, false)
			var addr string
			eventually(t, "the TLS listener to serve", func() bool {
				addr = p.ListenerAddrs()["edge"]
				_, body, err := getProto(good, "https://"+addr+"/")
				return err == nil && body == "a"
			})
			for _, a := range tt.attempts {
				scheme := "https://"
				if a.plaintext {
					scheme = "http://"
				}
				proto, body, err := getProto(a.client, scheme+addr+"/")
				if a.wantOK {
					if err != nil || body != "a" || proto != a.wantProto {
						t.Errorf("%s: got %s %q, %v; want %s \"a\"", a.name, proto, body, err, a.wantProto)
					}
				} else if err == nil || body == "a" {
					t.Errorf("%s: got %q, want a refused connection", a.name, body)
				}
			}
		})
	}
}

func TestTrustBundleUpdateAppliesWithoutRebind(t *testing.T) {
	t.Parallel()
	mesh, next := meshtlstest.NewCA(t, "mesh"), meshtlstest.NewCA(t, "next")
	id := meshtlstest.NewIdentity(ordersID, mesh.Issue(t, ordersID))
	cp := startControlPlane(t)
	p := startIdentityProxy(t, cp, id)
	cfg := tlsConfig{config: config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend(t, "a")}, mode: "strict", bundle: mesh.PEM}
	cp.set(t, cfg.build(t))
	oldRoot := meshClient(t, mesh.Issue(t, webID), mesh.PEM, ordersID, false)
	var addr string
	eventually(t, "the TLS listener to serve", func() bool {
		addr = p.ListenerAddrs()["edge"]
		_, body, err := getProto(oldRoot, "https://"+addr+"/")
		return err == nil && body == "a"
	})
	newRoot := meshClient(t, next.Issue(t, webID), mesh.PEM, ordersID, false)
	if _, _, err := getProto(newRoot, "https://"+addr+"/"); err == nil {
		t.Fatal("a certificate of a root not yet trusted was accepted")
	}

	// Rotation, step begin: both roots are trusted.
	both := append(bytes.Clone(mesh.PEM), next.PEM...)
	cfg.version, cfg.bundle = "v2", both
	cp.set(t, cfg.build(t))
	eventually(t, "the new root to be trusted", func() bool {
		_, body, err := getProto(newRoot, "https://"+addr+"/")
		return err == nil && body == "a"
	})
	if got := p.ListenerAddrs()["edge"]; got != addr {
		t.Errorf("listener address = %s, want %s unchanged", got, addr)
	}
	// The keep-alive connection of the old root's client survived.
	if _, body, err := getProto(oldRoot, "https://"+addr+"/"); err != nil || body != "a" {
		t.Errorf("old root client after the update: %q, %v", body, err)
	}
	if bundles := id.TrustBundles(); len(bundles) < 2 || !bytes.Equal(bundles[len(bundles)-1], both) {
		t.Errorf("identity provider got %d bundles, want the last to be the new bundle", len(bundles))
	}
	_, body, err := get(http.DefaultClient, "http://"+p.AdminAddr()+"/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, `"spiffe_id": "`+ordersID+`"`) || !strings.Contains(body, `"sha256"`) || !strings.Contains(body, "CN=next") {
		t.Errorf("config_dump lacks the identity or the roots:\n%s", body)
	}
	if strings.Contains(body, "PRIVATE KEY") || strings.Contains(body, "BEGIN CERTIFICATE") {
		t.Errorf("config_dump shows key or PEM material:\n%s", body)
	}
	if _, body, err := get(http.DefaultClient, "http://"+p.AdminAddr()+"/stats"); err != nil || !strings.Contains(body, `"identity_cert_expires_in_seconds"`) || !strings.Contains(body, `"trust_bundle_roots":2`) {
		t.Errorf("/stats = %s, %v; want identity expiry and 2 roots", body, err)
	}
}

func TestTLSResourcesWithoutIdentityAreNACKed(t *testing.T) {
	t.Parallel()
	mesh := meshtlstest.NewCA(t, "mesh")
	tests := []struct {
		name    string
		cfg     tlsConfig
		typeURL string
	}{
		{"strict listener", tlsConfig{mode: "strict", bundle: mesh.PEM}, resourcev3.ListenerType},
		{"mTLS cluster", tlsConfig{upstreamSAN: ordersID, bundle: mesh.PEM}, resourcev3.ClusterType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cp := startControlPlane(t)
			startIdentityProxy(t, cp, nil)
			tt.cfg.config = config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend(t, "a")}
			cp.set(t, tt.cfg.build(t))
			eventually(t, "a NACK naming the missing identity", func() bool {
				cp.mu.Lock()
				defer cp.mu.Unlock()
				return slices.ContainsFunc(cp.nacks, func(r *discoveryv3.DiscoveryRequest) bool {
					return r.GetTypeUrl() == tt.typeURL && strings.Contains(r.GetErrorDetail().GetMessage(), "has none")
				})
			})
		})
	}
}

// tlsBackend is an mTLS server for cert requiring a client certificate of
// ca; it answers the client's SPIFFE ID.
func tlsBackend(t *testing.T, ca *meshtlstest.CA, cert *tls.Certificate) string {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "tls "+meshtls.SPIFFEID(r.TLS.PeerCertificates[0]))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func TestUpstreamMTLSThroughTheProxy(t *testing.T) {
	t.Parallel()
	mesh := meshtlstest.NewCA(t, "mesh")
	tests := []struct {
		name       string
		serverID   string
		wantStatus int
		wantBody   string
	}{
		{"right SAN", ordersID, http.StatusOK, "tls " + webID},
		{"wrong SAN", "spiffe://meshgate.local/ns/default/svc/impostor", http.StatusServiceUnavailable, "upstream connect error\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cp := startControlPlane(t)
			p := startIdentityProxy(t, cp, meshtlstest.NewIdentity(webID, mesh.Issue(t, webID)))
			cp.set(t, tlsConfig{
				config:      config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/orders:80", backend: tlsBackend(t, mesh, mesh.Issue(t, tt.serverID))},
				upstreamSAN: ordersID, bundle: mesh.PEM,
			}.build(t))
			eventually(t, "the expected answer", func() bool {
				addr := p.ListenerAddrs()["edge"]
				if addr == "" {
					return false
				}
				code, body, err := get(http.DefaultClient, "http://"+addr+"/")
				return err == nil && code == tt.wantStatus && body == tt.wantBody
			})
		})
	}
}

func TestTLSListenerPutsPeerIdentityInContext(t *testing.T) {
	t.Parallel()
	forEachHTTP1Server(t, testTLSListenerPutsPeerIdentityInContext)
}

func testTLSListenerPutsPeerIdentityInContext(t *testing.T, server func(*Options)) {
	var opts Options
	server(&opts)
	mesh := meshtlstest.NewCA(t, "mesh")
	id := meshtlstest.NewIdentity(ordersID, mesh.Issue(t, ordersID))
	p, err := New(Options{Node: &corev3.Node{Id: "n"}, XDSAddresses: []string{"127.0.0.1:1"}, Identity: id, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := meshtls.ParseBundle(mesh.PEM)
	if err != nil {
		t.Fatal(err)
	}
	p.trust.Store(&map[string]*meshtls.Bundle{"ROOTCA": bundle})
	params := serverParams{http1: true, h2c: true, tls: tlsParams{mode: modePermissive, requireClientCert: true, alpn: "h2,http/1.1", bundle: "ROOTCA"}}
	cfg, err := p.serverTLSConfig(params)
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	srv := &http.Server{
		Protocols:   protocols,
		ConnContext: connIdentity,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			_, _ = io.WriteString(w, "peer="+peer.Identity(r.Context())+string(body))
		}),
	}
	var serving servingServer = srv
	if opts.FastHTTP1 {
		serving = &h1server.Server{Fallback: srv}
	}
	go func() { _ = serving.Serve(newTLSListener(inner, cfg, true, slog.New(slog.DiscardHandler))) }()
	t.Cleanup(func() { _ = serving.Close() })
	url := inner.Addr().String() + "/"

	tests := []struct {
		name   string
		client *http.Client
		url    string
		body   string // POSTed when not empty (the fast path hands such requests over)
		want   string
	}{
		{"mTLS", meshClient(t, mesh.Issue(t, webID), mesh.PEM, ordersID, false), "https://" + url, "", "peer=" + webID},
		{"mTLS with a body", meshClient(t, mesh.Issue(t, webID), mesh.PEM, ordersID, false), "https://" + url, " body", "peer=" + webID + " body"},
		{"mTLS h2", meshClient(t, mesh.Issue(t, webID), mesh.PEM, ordersID, true), "https://" + url, "", "peer=" + webID},
		{"plaintext", &http.Client{Timeout: 5 * time.Second}, "http://" + url, "", "peer="},
		{"plaintext with a body", &http.Client{Timeout: 5 * time.Second}, "http://" + url, " body", "peer= body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var body string
			var err error
			if tt.body == "" {
				_, body, err = getProto(tt.client, tt.url)
			} else {
				var resp *http.Response
				if resp, err = tt.client.Post(tt.url, "text/plain", strings.NewReader(tt.body)); err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					body = string(b)
				}
			}
			if err != nil || body != tt.want {
				t.Fatalf("got %q, %v; want %q", body, err, tt.want)
			}
		})
	}
}

func TestTLSListenerWaitsForItsSecret(t *testing.T) {
	t.Parallel()
	mesh := meshtlstest.NewCA(t, "mesh")
	p, err := New(Options{Node: &corev3.Node{Id: "n"}, XDSAddresses: []string{"127.0.0.1:1"},
		Identity: meshtlstest.NewIdentity(ordersID, mesh.Issue(t, ordersID)), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.drainAll(ctx)
		p.serveWG.Wait()
	})
	snap := tlsConfig{config: config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend(t, "a")}, mode: "strict", bundle: mesh.PEM}.build(t)
	apply := func(typ resourcev3.Type) {
		t.Helper()
		var msgs []proto.Message
		for _, r := range snap.GetResources(typ) {
			msgs = append(msgs, r)
		}
		if err := p.apply(context.Background(), typ, msgs, "v1"); err != nil {
			t.Fatalf("apply %s: %v", typ, err)
		}
	}
	apply(resourcev3.ListenerType)
	started := func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, s := range p.servers {
			return s.started
		}
		return false
	}
	if started() {
		t.Fatal("the STRICT listener serves before its ROOTCA secret arrived")
	}
	apply(resourcev3.SecretType)
	if !started() {
		t.Fatal("the STRICT listener does not serve after its ROOTCA secret arrived")
	}
}
