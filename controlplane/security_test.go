package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	grpcstatus "google.golang.org/grpc/status"

	cav1 "github.com/meshgate/meshgate/api/ca/v1"
	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/controlplane/ca"
)

// roots is the control plane's trust bundle, from GET /ca.
func (r running) roots(t *testing.T) *x509.CertPool {
	t.Helper()
	code, body := r.get(t, "/ca")
	if code != http.StatusOK {
		t.Fatalf("GET /ca: %d %s", code, body)
	}
	var st ca.Status
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, root := range st.Roots {
		pool.AppendCertsFromPEM([]byte(root.PEM))
	}
	return pool
}

// dial connects to the xDS port, presenting cert when non-nil.
func (r running) dial(t *testing.T, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{RootCAs: r.roots(t), MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(r.xds.String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// createToken makes a join token through the admin API.
func (r running) createToken(t *testing.T, service string) string {
	t.Helper()
	code, body := r.do(t, http.MethodPost, "/tokens", r.adminToken, `{"service":"`+service+`","ttl":"1h"}`)
	if code != http.StatusCreated {
		t.Fatalf("POST /tokens: %d %s", code, body)
	}
	var resp CreateTokenResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	return resp.Token
}

// enroll gets a certificate for service the way a proxy does.
func (r running) enroll(t *testing.T, service string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://meshgate.local/ns/default/svc/" + service)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	resp, err := cav1.NewCertificateAuthorityClient(r.dial(t, nil)).Sign(t.Context(), &cav1.SignRequest{CsrPem: csr, Token: r.createToken(t, service)})
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	block, _ := pem.Decode(resp.GetCertChainPem())
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key, Leaf: leaf}
}

// firstResponse opens an ADS stream as node with role/name and returns the
// stream's first answer or error.
func firstResponse(ctx context.Context, conn *grpc.ClientConn, id string, meta xdsnode.Metadata) error {
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	md := meta.Struct()
	// A refused stream may end before Send: its status comes from Recv.
	_ = stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: id, Metadata: md}, TypeUrl: resourcev3.ClusterType})
	_, err = stream.Recv()
	return err
}

func TestXDSRequiresMatchingIdentity(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	writeAtomically(t, path, strings.ReplaceAll(serviceYAML, "%s", "orders"))
	r := start(t, path)
	orders := r.enroll(t, "orders")
	edge := r.enroll(t, "edge")

	tests := []struct {
		name string
		cert *tls.Certificate
		id   string
		meta xdsnode.Metadata
		want codes.Code
	}{
		{"no client certificate", nil, "sidecar~orders~a", xdsnode.Metadata{Role: xdsnode.RoleSidecar, Service: "orders"}, codes.Unauthenticated},
		{"own identity", orders, "sidecar~orders~a", xdsnode.Metadata{Role: xdsnode.RoleSidecar, Service: "orders"}, codes.OK},
		{"another service", orders, "sidecar~users~a", xdsnode.Metadata{Role: xdsnode.RoleSidecar, Service: "users"}, codes.PermissionDenied},
		{"another namespace", orders, "sidecar~orders.prod~a", xdsnode.Metadata{Role: xdsnode.RoleSidecar, Service: "orders", Namespace: "prod"}, codes.PermissionDenied},
		{"gateway as itself", edge, "gateway~edge~a", xdsnode.Metadata{Role: xdsnode.RoleGateway, Gateway: "edge"}, codes.OK},
		{"sidecar cert as gateway", orders, "gateway~edge~a", xdsnode.Metadata{Role: xdsnode.RoleGateway, Gateway: "edge"}, codes.PermissionDenied},
		{"no role", orders, "sidecar~orders~a", xdsnode.Metadata{Service: "orders"}, codes.PermissionDenied},
		// The node id keys a proxy's configuration: another identity's id is refused.
		{"another proxy's node id", orders, "sidecar~users~a", xdsnode.Metadata{Role: xdsnode.RoleSidecar, Service: "orders"}, codes.PermissionDenied},
		{"a node id without the identity's prefix", orders, "n1", xdsnode.Metadata{Role: xdsnode.RoleSidecar, Service: "orders"}, codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err := firstResponse(ctx, r.dial(t, tt.cert), tt.id, tt.meta)
			if got := grpcstatus.Code(err); got != tt.want {
				t.Errorf("code %s (%v), want %s", got, err, tt.want)
			}
		})
	}

	// A self-signed certificate claiming the identity is refused at the
	// handshake or by the authorizer.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse("spiffe://meshgate.local/ns/default/svc/orders")
	tmpl := &x509.Certificate{SerialNumber: orders.Leaf.SerialNumber, URIs: []*url.URL{u}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	forged := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := firstResponse(ctx, r.dial(t, forged), "sidecar~orders~a", xdsnode.Metadata{Role: xdsnode.RoleSidecar, Service: "orders"}); err == nil {
		t.Error("a self-signed certificate got configuration")
	}
}

func TestAdminAPI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	writeAtomically(t, path, strings.ReplaceAll(serviceYAML, "%s", "orders"))
	r := start(t, path)

	for _, p := range []string{"/status", "/tokens", "/ca", "/config_dump?node=x"} {
		for name, tok := range map[string]string{"no token": "", "wrong token": "nope"} {
			if code, _ := r.do(t, http.MethodGet, p, tok, ""); code != http.StatusUnauthorized {
				t.Errorf("GET %s with %s = %d, want 401", p, name, code)
			}
		}
	}
	if code, _ := r.do(t, http.MethodPost, "/tokens", "", `{"service":"orders"}`); code != http.StatusUnauthorized {
		t.Errorf("POST /tokens without token = %d", code)
	}
	if code, _ := r.do(t, http.MethodGet, "/healthz", "", ""); code != http.StatusOK {
		t.Errorf("GET /healthz without token = %d", code)
	}

	// Tokens: create, list (no secret), revoke, 404.
	tok := r.createToken(t, "orders")
	id := strings.Split(tok, ".")[1]
	code, body := r.get(t, "/tokens")
	if code != http.StatusOK || !strings.Contains(string(body), id) || strings.Contains(string(body), strings.Split(tok, ".")[2]) {
		t.Errorf("GET /tokens = %d %s", code, body)
	}
	if code, body := r.do(t, http.MethodDelete, "/tokens/"+id, r.adminToken, ""); code != http.StatusOK || !strings.Contains(string(body), `"revoked": true`) {
		t.Errorf("DELETE /tokens/%s = %d %s", id, code, body)
	}
	if code, _ := r.do(t, http.MethodDelete, "/tokens/0000000000000000", r.adminToken, ""); code != http.StatusNotFound {
		t.Errorf("DELETE unknown token = %d", code)
	}
	for _, bad := range []string{`{"service":"Bad Name"}`, `{"service":"orders","ttl":"soon"}`, `{"svc":"orders"}`, `not json`} {
		if code, body := r.do(t, http.MethodPost, "/tokens", r.adminToken, bad); code != http.StatusBadRequest {
			t.Errorf("POST /tokens %s = %d %s", bad, code, body)
		}
	}

	// Rotation through the API: order errors are conflicts.
	rotate := func(step string, force bool) (int, ca.Status) {
		body := `{"step":"` + step + `","force":` + map[bool]string{true: "true", false: "false"}[force] + `}`
		code, out := r.do(t, http.MethodPost, "/ca/rotate", r.adminToken, body)
		var st ca.Status
		_ = json.Unmarshal(out, &st)
		return code, st
	}
	if code, _ := rotate("switch", false); code != http.StatusConflict {
		t.Errorf("switch before begin = %d, want 409", code)
	}
	if code, _ := rotate("sideways", false); code != http.StatusBadRequest {
		t.Errorf("unknown step = %d, want 400", code)
	}
	if code, st := rotate("begin", false); code != http.StatusOK || len(st.Roots) != 2 || st.Phase != ca.PhasePrepared {
		t.Errorf("begin = %d %+v", code, st)
	}
	if code, st := rotate("switch", false); code != http.StatusOK || st.Phase != ca.PhaseSwitched {
		t.Errorf("switch = %d %+v", code, st)
	}
	if code, _ := rotate("finish", false); code != http.StatusConflict {
		t.Errorf("finish right after switch = %d, want 409", code)
	}
	if code, st := rotate("finish", true); code != http.StatusOK || len(st.Roots) != 1 {
		t.Errorf("forced finish = %d %+v", code, st)
	}
	// The serving certificate follows the new root: a client trusting only
	// the new bundle still connects and enrols.
	r.enroll(t, "orders")
}
