package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/xds"
)

// TestGRPCBootstrapIsAcceptedByGRPC: grpc-go's own bootstrap parser (the
// one GRPC_XDS_BOOTSTRAP feeds) accepts what `meshgate bootstrap grpc`
// writes, with its tls channel credentials and certificate provider.
func TestGRPCBootstrapIsAcceptedByGRPC(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out, err := grpcBootstrap("127.0.0.1:15010", "proxyless~web.shop~host-1", "web", "shop", dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := xds.NewXDSResolverWithConfigForTesting(out); err != nil {
		t.Fatalf("grpc-go refuses the bootstrap: %v\n%s", err, out)
	}
	var got struct {
		XDSServers []struct {
			ServerURI      string   `json:"server_uri"`
			ServerFeatures []string `json:"server_features"`
			ChannelCreds   []struct {
				Type   string            `json:"type"`
				Config map[string]string `json:"config"`
			} `json:"channel_creds"`
		} `json:"xds_servers"`
		Node struct {
			ID       string            `json:"id"`
			Metadata map[string]string `json:"metadata"`
		} `json:"node"`
		CertificateProviders map[string]struct {
			PluginName string            `json:"plugin_name"`
			Config     map[string]string `json:"config"`
		} `json:"certificate_providers"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.XDSServers) != 1 || got.XDSServers[0].ServerURI != "127.0.0.1:15010" || got.XDSServers[0].ChannelCreds[0].Type != "tls" ||
		got.XDSServers[0].ChannelCreds[0].Config["certificate_file"] != filepath.Join(dir, grpcCertFile) {
		t.Errorf("xds_servers = %+v", got.XDSServers)
	}
	if got.Node.ID != "proxyless~web.shop~host-1" || got.Node.Metadata["role"] != "proxyless" || got.Node.Metadata["service"] != "web" || got.Node.Metadata["namespace"] != "shop" {
		t.Errorf("node = %+v", got.Node)
	}
	p, ok := got.CertificateProviders["meshgate"]
	if !ok || p.PluginName != "file_watcher" || p.Config["private_key_file"] != filepath.Join(dir, grpcKeyFile) || p.Config["ca_certificate_file"] != filepath.Join(dir, grpcCAFile) {
		t.Errorf("certificate_providers = %+v", got.CertificateProviders)
	}
}

// selfSigned is a throwaway certificate and key.
func selfSigned(t *testing.T, cn string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// TestGRPCCertFilesFollowRenewals: every certificate the identity manager
// installs replaces the files (a pair tls.LoadX509KeyPair accepts, the key
// 0600), the bundle kept when a renewal comes without one; no temporary
// file stays behind.
func TestGRPCCertFilesFollowRenewals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	files := &grpcCertFiles{dir: dir, logger: slog.New(slog.DiscardHandler)}
	bundle := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: selfSigned(t, "root").Certificate[0]})
	for i, cn := range []string{"first", "renewed"} {
		cert := selfSigned(t, cn)
		var sent []byte
		if i == 0 {
			sent = bundle // a renewal's response may carry none
		}
		files.write(cert, sent)
		if err := files.err(); err != nil {
			t.Fatal(err)
		}
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, grpcCertFile), filepath.Join(dir, grpcKeyFile))
		if err != nil {
			t.Fatalf("%s: %v", cn, err)
		}
		if leaf, _ := x509.ParseCertificate(pair.Certificate[0]); leaf.Subject.CommonName != cn {
			t.Errorf("cert.pem is %q, want %q", leaf.Subject.CommonName, cn)
		}
		if ca, err := os.ReadFile(filepath.Join(dir, grpcCAFile)); err != nil || string(ca) != string(bundle) {
			t.Errorf("ca.pem = %q, %v", ca, err)
		}
		if st, err := os.Stat(filepath.Join(dir, grpcKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("key.pem mode = %v, %v", st.Mode(), err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 3 {
		t.Errorf("dir holds %v, %v; want the three files", entries, err)
	}
}

// TestBootstrapGRPCFlags: the required flags are checked before anything
// is enrolled.
func TestBootstrapGRPCFlags(t *testing.T) {
	t.Parallel()
	cmd := newRootCmd()
	cmd.SetArgs([]string{"bootstrap", "grpc", "--service", "web", "--dir", t.TempDir()})
	err := cmd.Execute()
	if err == nil || exitCode(err) != 2 {
		t.Fatalf("without --control-plane: %v (exit %d), want exit 2", err, exitCode(err))
	}
}
