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
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	cav1 "github.com/meshgate/meshgate/api/ca/v1"
	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/controlplane/ca"
)

// openStream opens an ADS stream for the orders sidecar node id with cert
// and waits for its first response.
func openStream(t *testing.T, r running, cert *tls.Certificate, node string) (discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, error) {
	t.Helper()
	// Bounded: a stream that is not closed fails the test rather than
	// hanging it.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(r.dial(t, cert)).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	md := xdsnode.Metadata{Role: xdsnode.RoleSidecar, Service: "orders"}.Struct()
	_ = stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node, Metadata: md}, TypeUrl: resourcev3.ClusterType})
	if _, err := stream.Recv(); err != nil {
		return nil, err
	}
	return stream, nil
}

// renewWith renews cert with itself, as a proxy does.
func renewWith(t *testing.T, r running, cert *tls.Certificate) error {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse("spiffe://meshgate.local/ns/default/svc/orders")
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	_, err = cav1.NewCertificateAuthorityClient(r.dial(t, cert)).Sign(t.Context(), &cav1.SignRequest{CsrPem: csr})
	return err
}

// connected lists the node ids of the proxies in /status.
func connected(t *testing.T, r running) string {
	t.Helper()
	code, body := r.get(t, "/status")
	if code != http.StatusOK {
		t.Fatalf("GET /status: %d %s", code, body)
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range st.Proxies {
		ids = append(ids, p.ID+"="+p.Enrolment)
	}
	return strings.Join(ids, " ")
}

// TestRevocationClosesStreams: revoking the join token, the identity, the
// proxy (node id) or the enrolment of a connected proxy closes its
// connection and so its xDS stream, refuses the stream with
// PermissionDenied on reconnect and refuses its renewal, while another
// proxy keeps its stream (except when the whole identity is revoked).
func TestRevocationClosesStreams(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	writeAtomically(t, path, strings.ReplaceAll(serviceYAML, "%s", "orders"))
	r := start(t, path)

	tests := []struct {
		name string
		// revoke revokes victim (enrolment e); it returns the HTTP status
		// and body.
		revoke        func(e ca.Enrolment, node string) (int, []byte)
		bystanderKept bool
	}{
		{"token", func(e ca.Enrolment, _ string) (int, []byte) {
			return r.do(t, http.MethodDelete, "/tokens/"+e.TokenID, r.adminToken, "")
		}, true},
		{"proxy", func(_ ca.Enrolment, node string) (int, []byte) {
			return r.do(t, http.MethodPost, "/revocations", r.adminToken, `{"proxy":"`+node+`"}`)
		}, true},
		{"enrolment", func(e ca.Enrolment, _ string) (int, []byte) {
			return r.do(t, http.MethodPost, "/revocations", r.adminToken, `{"enrolment":"`+e.ID+`"}`)
		}, true},
		{"identity", func(ca.Enrolment, string) (int, []byte) {
			return r.do(t, http.MethodPost, "/revocations", r.adminToken, `{"service":"orders"}`)
		}, false},
	}
	// Sequential: the identity case revokes every orders certificate.
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			victim, bystander := r.enroll(t, "orders"), r.enroll(t, "orders")
			e, ok := ca.EnrolmentOf(victim.Leaf)
			if !ok {
				t.Fatal("enrolled certificate without a lineage")
			}
			victimNode, bystanderNode := fmt.Sprintf("sidecar~orders~v%d", i), fmt.Sprintf("sidecar~orders~b%d", i)
			vs, err := openStream(t, r, victim, victimNode)
			if err != nil {
				t.Fatalf("victim's stream: %v", err)
			}
			bs, err := openStream(t, r, bystander, bystanderNode)
			if err != nil {
				t.Fatalf("bystander's stream: %v", err)
			}
			if list := connected(t, r); !strings.Contains(list, victimNode+"="+e.ID) {
				t.Fatalf("status before: %s, want %s with enrolment %s", list, victimNode, e.ID)
			}

			code, body := tt.revoke(e, victimNode)
			if code != http.StatusOK {
				t.Fatalf("revoke: %d %s", code, body)
			}
			var answer struct {
				ClosedConnections int `json:"closedConnections"`
			}
			if err := json.Unmarshal(body, &answer); err != nil {
				t.Fatal(err)
			}
			wantClosed := 1
			if !tt.bystanderKept {
				wantClosed = 2
			}
			if answer.ClosedConnections != wantClosed {
				t.Errorf("closedConnections = %d, want %d: %s", answer.ClosedConnections, wantClosed, body)
			}
			// The victim's stream ends with its connection.
			for {
				if _, err = vs.Recv(); err != nil {
					break
				}
			}
			if grpcstatus.Code(err) != codes.Unavailable {
				t.Errorf("victim's stream ended with %v, want Unavailable (connection closed)", err)
			}
			if _, err := openStream(t, r, victim, victimNode); grpcstatus.Code(err) != codes.PermissionDenied {
				t.Errorf("victim reconnecting: %v, want PermissionDenied", err)
			}
			if err := renewWith(t, r, victim); grpcstatus.Code(err) != codes.PermissionDenied {
				t.Errorf("victim renewing: %v, want PermissionDenied", err)
			}
			list := connected(t, r)
			if strings.Contains(list, victimNode) {
				t.Errorf("status after: %s still lists %s", list, victimNode)
			}
			if tt.bystanderKept {
				if !strings.Contains(list, bystanderNode) {
					t.Errorf("status after: %s lost the bystander %s", list, bystanderNode)
				}
				if err := renewWith(t, r, bystander); err != nil {
					t.Errorf("bystander renewing: %v", err)
				}
			}
			_ = bs.CloseSend()
		})
	}

	code, body := r.get(t, "/revocations")
	if code != http.StatusOK || !strings.Contains(string(body), `"kind": "identity"`) || !strings.Contains(string(body), `"kind": "enrolment"`) {
		t.Errorf("GET /revocations: %d %s", code, body)
	}
	for _, bad := range []string{`{}`, `{"identity":"spiffe://meshgate.local/ns/default/svc/orders","service":"orders"}`,
		`{"identity":"spiffe://other.org/ns/default/svc/orders"}`, `{"enrolment":"../x"}`, `{"namespace":"prod"}`,
		`{"identity":"spiffe://meshgate.local/ns/meshgate-system/svc/controlplane"}`} {
		if code, body := r.do(t, http.MethodPost, "/revocations", r.adminToken, bad); code != http.StatusBadRequest {
			t.Errorf("POST /revocations %s: %d %s, want 400", bad, code, body)
		}
	}
	if code, body := r.do(t, http.MethodPost, "/revocations", r.adminToken, `{"proxy":"sidecar~orders~nobody"}`); code != http.StatusNotFound {
		t.Errorf("revoking an unknown proxy: %d %s, want 404", code, body)
	}
}
