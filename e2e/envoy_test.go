package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
)

// TestEnvoyBootstrapAndSDS plays an Envoy with the real binary around it:
// `meshgate bootstrap envoy` enrolls with a join token and writes
// envoy.json; `meshgate sidecar --envoy` serves the certificate over SDS on
// the socket the bootstrap names; with that certificate, and the node of
// envoy.json (user agent "envoy"), an ADS stream to the control plane over
// mTLS gets the inbound listener, whose certificate is referenced through
// the bootstrap's sds-grpc cluster.
func TestEnvoyBootstrapAndSDS(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("mesh.yaml", `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: orders}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${orders-in}", sidecar: true}]
`)
	c.startControlPlane()
	tok := c.token("orders")
	dir := filepath.Join(t.TempDir(), "envoy")
	out, err := execCommand(binary, "bootstrap", "envoy", "--service", "orders", "--token", tok, "--control-plane", c.xds,
		"--dir", dir, "--app", "127.0.0.1:8080", "--inbound", c.addr("orders-in")).CombinedOutput()
	if err != nil {
		t.Fatalf("meshgate bootstrap envoy: %v\n%s", err, out)
	}
	data, err := os.ReadFile(filepath.Join(dir, "envoy.json"))
	if err != nil {
		t.Fatal(err)
	}
	boot := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(data, boot); err != nil {
		t.Fatalf("envoy.json: %v", err)
	}
	if err := boot.ValidateAll(); err != nil {
		t.Fatalf("envoy.json: %v", err)
	}
	var socket string
	for _, cl := range boot.StaticResources.Clusters {
		if cl.Name == "sds-grpc" {
			socket = cl.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetPipe().GetPath()
		}
	}
	if socket == "" {
		t.Fatal("envoy.json has no sds-grpc cluster on a Unix socket")
	}
	start(t, "envoy-agent", "sidecar", "--envoy", "--service", "orders", "--xds", c.xds, "--token", tok,
		"--ca-file", filepath.Join(dir, "ca.pem"), "--sds-socket", socket, "--admin", freeAddr(t))

	// The agent's secrets, as Envoy's sds-grpc cluster asks for them.
	ctx := ctxTimeout(t, 60*time.Second)
	sdsConn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer sdsConn.Close()
	secrets := map[string]*tlsv3.Secret{}
	eventually(t, 30*time.Second, "the agent serves default and ROOTCA", func() error {
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := secretv3.NewSecretDiscoveryServiceClient(sdsConn).FetchSecrets(callCtx, &discoveryv3.DiscoveryRequest{
			Node: boot.Node, TypeUrl: resourcev3.SecretType, ResourceNames: []string{"default", "ROOTCA"}})
		if err != nil {
			return err
		}
		for _, r := range resp.Resources {
			s := &tlsv3.Secret{}
			if err := r.UnmarshalTo(s); err != nil {
				return err
			}
			secrets[s.Name] = s
		}
		if secrets["default"] == nil || secrets["ROOTCA"] == nil {
			return fmt.Errorf("secrets %v", secrets)
		}
		return nil
	})
	tc := secrets["default"].GetTlsCertificate()
	cert, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(secrets["ROOTCA"].GetValidationContext().GetTrustedCa().GetInlineBytes()) {
		t.Fatal("ROOTCA holds no certificate")
	}

	// ADS to the control plane with that certificate, as the xds_cluster.
	cpConn, err := grpc.NewClient(c.xds, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "controlplane", MinVersion: tls.VersionTLS12,
		InsecureSkipVerify: true, // the SAN is checked below, as Envoy's match_typed_subject_alt_names does
		VerifyConnection: func(cs tls.ConnectionState) error {
			opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
			for _, ic := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(ic)
			}
			if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
				return err
			}
			if uris := cs.PeerCertificates[0].URIs; len(uris) != 1 || uris[0].String() != "spiffe://meshgate.local/ns/meshgate-system/svc/controlplane" {
				return fmt.Errorf("control plane identity %v", uris)
			}
			return nil
		},
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer cpConn.Close()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cpConn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := boot.Node
	node.UserAgentName = "envoy" // Envoy sets it itself
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ListenerType}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("ADS as %s: %v", node.Id, err)
	}
	var inbound *listenerv3.Listener
	for _, r := range resp.Resources {
		l := &listenerv3.Listener{}
		if err := r.UnmarshalTo(l); err != nil {
			t.Fatal(err)
		}
		if l.Name == "inbound" {
			inbound = l
		}
	}
	if inbound == nil {
		t.Fatalf("no inbound listener in %d listeners", len(resp.Resources))
	}
	down := &tlsv3.DownstreamTlsContext{}
	if err := inbound.FilterChains[0].GetTransportSocket().GetTypedConfig().UnmarshalTo(down); err != nil {
		t.Fatalf("inbound transport socket: %v", err)
	}
	sds := down.CommonTlsContext.TlsCertificateSdsSecretConfigs[0]
	if sds.Name != "default" || sds.GetSdsConfig().GetApiConfigSource().GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != "sds-grpc" {
		t.Errorf("inbound certificate %v, want default from the bootstrap's sds-grpc", sds)
	}
}
