package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/dataplane/identity/identitytest"
)

// TestBootstrapEnvoy: the command enrolls with the join token at a real CA
// server and writes a bootstrap that passes ValidateAll, with the node the
// control plane expects, ADS with mTLS by SDS to the control plane, the
// sds-grpc cluster on the agent's socket, admin on loopback, and the
// trust bundle received.
func TestBootstrapEnvoy(t *testing.T) {
	t.Parallel()
	ca := identitytest.NewCA(t, spiffeid.DefaultTrustDomain)
	tok := ca.Token(t)
	srv := identitytest.StartServer(t, identitytest.ServerOptions{CA: ca, Token: tok, BoundID: "spiffe://meshgate.local/ns/shop/svc/orders"})
	dir := filepath.Join(t.TempDir(), "envoy")

	cmd := newBootstrapEnvoyCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--service", "orders", "--namespace", "shop", "--token", tok, "--control-plane", srv.Addr,
		"--dir", dir, "--app", "127.0.0.1:8080", "--id", "sidecar~orders.shop~host-1"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("bootstrap envoy: %v", err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "envoy.json"))
	if err != nil {
		t.Fatal(err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(data, b); err != nil {
		t.Fatalf("envoy.json: %v", err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("envoy.json does not validate: %v", err)
	}

	meta := xdsnode.FromNode(b.Node)
	want := xdsnode.Metadata{Role: "sidecar", Namespace: "shop", Service: "orders", InboundAddress: xdsnode.DefaultInboundAddress,
		AppAddress: "127.0.0.1:8080", OutboundAddress: xdsnode.DefaultOutboundAddress}
	if meta != want || b.Node.Id != "sidecar~orders.shop~host-1" || b.Node.Cluster != "orders" {
		t.Errorf("node %v, metadata %+v; want id sidecar~orders.shop~host-1, cluster orders, %+v", b.Node, meta, want)
	}
	if ads := b.DynamicResources.GetAdsConfig(); ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != "xds_cluster" ||
		b.DynamicResources.GetLdsConfig().GetAds() == nil || b.DynamicResources.GetCdsConfig().GetAds() == nil {
		t.Errorf("dynamic resources %v: want ADS over xds_cluster for LDS and CDS", b.DynamicResources)
	}
	clusters := map[string]int{}
	for i, c := range b.StaticResources.Clusters {
		clusters[c.Name] = i
	}
	xds := b.StaticResources.Clusters[clusters["xds_cluster"]]
	if got := xds.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress(); got.GetAddress() != "127.0.0.1" {
		t.Errorf("xds_cluster endpoint %v, want the control plane %s", got, srv.Addr)
	}
	upstream := &tlsv3.UpstreamTlsContext{}
	if err := xds.GetTransportSocket().GetTypedConfig().UnmarshalTo(upstream); err != nil {
		t.Fatalf("xds_cluster transport socket: %v", err)
	}
	common := upstream.CommonTlsContext
	if sds := common.TlsCertificateSdsSecretConfigs[0]; sds.Name != "default" ||
		sds.SdsConfig.GetApiConfigSource().GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != "sds-grpc" {
		t.Errorf("xds_cluster certificate %v, want default from sds-grpc", sds)
	}
	if san := common.GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames()[0].GetMatcher().GetExact(); san != "spiffe://meshgate.local/ns/meshgate-system/svc/controlplane" {
		t.Errorf("xds_cluster verifies the control plane as %q", san)
	}
	sds, ok := clusters["sds-grpc"]
	if !ok {
		t.Fatal("no sds-grpc cluster")
	}
	if path := b.StaticResources.Clusters[sds].LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetPipe().GetPath(); path != filepath.Join(dir, "sds.sock") {
		t.Errorf("sds-grpc reaches %q, want %s", path, filepath.Join(dir, "sds.sock"))
	}
	if addr := b.Admin.GetAddress().GetSocketAddress(); addr.GetAddress() != "127.0.0.1" {
		t.Errorf("admin on %v, want loopback", addr)
	}
	bundle, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil || !bytes.Equal(bundle, ca.RootPEM) {
		t.Errorf("ca.pem %q %v, want the CA's root", bundle, err)
	}
	if !strings.Contains(out.String(), "meshgate sidecar --envoy") {
		t.Errorf("output %q does not say how to run the agent", out.String())
	}
}

// TestBootstrapEnvoyRefuses: bad flags and a refused enrolment write
// nothing.
func TestBootstrapEnvoyRefuses(t *testing.T) {
	t.Parallel()
	ca := identitytest.NewCA(t, spiffeid.DefaultTrustDomain)
	tok := ca.Token(t)
	srv := identitytest.StartServer(t, identitytest.ServerOptions{CA: ca, Token: tok, BoundID: "spiffe://meshgate.local/ns/default/svc/orders"})
	other := identitytest.NewCA(t, spiffeid.DefaultTrustDomain).Token(t)
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no app", []string{"--service", "orders", "--token", tok, "--control-plane", srv.Addr}, "--app is required"},
		{"service and gateway", []string{"--service", "orders", "--gateway", "edge", "--token", tok, "--control-plane", srv.Addr}, "not both"},
		{"admin not on loopback", []string{"--service", "orders", "--app", "127.0.0.1:8080", "--admin", "0.0.0.0:15000", "--token", tok, "--control-plane", srv.Addr}, "loopback"},
		{"no control plane", []string{"--service", "orders", "--app", "127.0.0.1:8080", "--token", tok}, "--control-plane"},
		{"token of another mesh", []string{"--service", "orders", "--app", "127.0.0.1:8080", "--token", other, "--control-plane", srv.Addr, "--timeout", "5s"}, "enrolment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "envoy")
			cmd := newBootstrapEnvoyCmd()
			cmd.SetOut(&bytes.Buffer{})
			cmd.SetErr(&bytes.Buffer{})
			cmd.SetArgs(append(tt.args, "--dir", dir))
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one saying %q", err, tt.wantErr)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("%s written after a refusal", dir)
			}
		})
	}
}
