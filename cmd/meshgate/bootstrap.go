package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/controlplane/translate"
	"github.com/meshgate/meshgate/dataplane/identity"
)

// newBootstrapCmd is the parent of the commands that write the bootstrap of
// an xDS client that is not a meshgate proxy.
func newBootstrapCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bootstrap",
		Short: "Enrol an xDS client that is not a meshgate proxy and write its bootstrap",
	}
	cmd.AddCommand(newBootstrapGRPCCmd(g), newBootstrapEnvoyCmd())
	return cmd
}

// Files `meshgate bootstrap grpc` writes into --dir.
const (
	grpcCertFile = "cert.pem"
	grpcKeyFile  = "key.pem"
	grpcCAFile   = "ca.pem"
	// grpcRefreshInterval is how often grpc-go's file watchers read the
	// files again: well within a certificate's half-life, when it is renewed.
	grpcRefreshInterval = "60s"
)

// bootstrapGRPCOptions are the flags of `meshgate bootstrap grpc`.
type bootstrapGRPCOptions struct {
	service, namespace string
	controlPlane       string
	dir, out           string
	id                 string
	once               bool
	identity           proxyIdentityFlags
}

func newBootstrapGRPCCmd(g *globalFlags) *cobra.Command {
	o := &bootstrapGRPCOptions{}
	cmd := &cobra.Command{
		Use:   "grpc",
		Short: "Enrol a proxyless gRPC client and print its xDS bootstrap; keep its certificate renewed",
		Long: `Enrols a proxyless gRPC application (grpc-go's xds:/// resolver, no sidecar)
with a join token: the key is generated here, the certificate
spiffe://<trust-domain>/ns/<namespace>/svc/<service> comes from the control
plane's CA. The key, the certificate chain and the CA bundle are written to
--dir (key.pem, cert.pem, ca.pem; replaced atomically), and the gRPC bootstrap
JSON is printed (or written to --out): the control plane as xds_server over
mTLS with those files, the node (role proxyless), and the certificate
provider instance "meshgate" (file_watcher on the same files) that the
clusters' mTLS uses. Point the application at it with GRPC_XDS_BOOTSTRAP.

Unless --once, the command keeps running and renews the certificate at half
its lifetime; grpc-go's file watchers pick up the new files.

Create the join token on the control plane:
  meshgate token create --service <service> [--namespace <namespace>]`,
		Example: `  meshgate bootstrap grpc --service web --token-file web.token --control-plane 127.0.0.1:15010 --dir /var/run/web --out /var/run/web/bootstrap.json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.service == "" || o.controlPlane == "" || o.dir == "" {
				return &exitError{code: 2, err: errors.New("--service, --control-plane and --dir are required")}
			}
			return runBootstrapGRPC(cmd.Context(), g.logger(), o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.service, "service", "", "name of the service the gRPC client is (required): its identity and whose routes it gets")
	f.StringVar(&o.namespace, "namespace", xdsnode.DefaultNamespace, "namespace of the service")
	f.StringVar(&o.controlPlane, "control-plane", "", "host:port of the control plane's xDS and CA service (required)")
	f.StringVar(&o.dir, "dir", "", "directory for key.pem, cert.pem and ca.pem (required; created 0700)")
	f.StringVar(&o.out, "out", "", "write the bootstrap JSON to this file (replaced atomically) instead of printing it")
	f.StringVar(&o.id, "id", "", "node id (default proxyless~<service>~<hostname>-<pid>)")
	f.BoolVar(&o.once, "once", false, "enrol, write the files and the bootstrap, and exit (renewal is then up to you)")
	f.StringVar(&o.identity.token, "token", "", "join token (visible to other local users: prefer --token-file or $"+tokenEnv+")")
	f.StringVar(&o.identity.tokenFile, "token-file", "", "file holding the join token")
	f.StringVar(&o.identity.caFile, "ca-file", "", "PEM bundle of roots to verify the control plane with, instead of the token's pin")
	f.StringVar(&o.identity.trustDomain, "trust-domain", spiffeid.DefaultTrustDomain, "trust domain of the mesh (MeshConfig spec.trustDomain)")
	return cmd
}

// runBootstrapGRPC enrols, writes the files and the bootstrap, then renews
// until ctx is done (unless o.once).
func runBootstrapGRPC(ctx context.Context, logger *slog.Logger, o *bootstrapGRPCOptions, stdout io.Writer) error {
	idOpts, err := o.identity.options()
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return fmt.Errorf("--dir: %w", err)
	}
	files := &grpcCertFiles{dir: o.dir, logger: logger}
	mgr, err := identity.ForProxy(identity.ManagerOptions{
		TrustDomain:           idOpts.TrustDomain,
		Namespace:             o.namespace,
		Service:               o.service,
		ControlPlaneAddresses: []string{o.controlPlane},
		Token:                 idOpts.Token,
		CAFile:                idOpts.CAFile,
		Logger:                logger,
		OnCertificate:         files.write,
	}, false)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if err := mgr.Start(ctx); err != nil {
		return err
	}
	if err := files.err(); err != nil {
		return err
	}
	id := o.id
	if id == "" {
		host, _ := os.Hostname()
		id = fmt.Sprintf("%s%s-%d", xdsnode.IDPrefix(xdsnode.RoleProxyless, o.service, o.namespace), host, os.Getpid())
	}
	bootstrap, err := grpcBootstrap(o.controlPlane, id, o.service, o.namespace, o.dir)
	if err != nil {
		return err
	}
	if o.out != "" {
		if err := writeFileAtomic(o.out, bootstrap, 0o644); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
		logger.Info("gRPC bootstrap written", "file", o.out, "spiffe_id", mgr.SPIFFEID(), "not_after", mgr.NotAfter())
	} else if _, err := stdout.Write(bootstrap); err != nil {
		return err
	}
	if o.once {
		return nil
	}
	return mgr.Run(ctx)
}

// grpcBootstrap is the bootstrap JSON of a proxyless gRPC client (gRFC A27,
// A29 and A65): the control plane at controlPlane over mTLS with the files
// of dir, the node id and metadata (role proxyless), and the certificate
// provider instance translate.CertificateProviderInstance watching the
// same files.
func grpcBootstrap(controlPlane, id, service, namespace, dir string) ([]byte, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("--dir: %w", err)
	}
	files := map[string]string{
		"certificate_file":    filepath.Join(abs, grpcCertFile),
		"private_key_file":    filepath.Join(abs, grpcKeyFile),
		"ca_certificate_file": filepath.Join(abs, grpcCAFile),
		"refresh_interval":    grpcRefreshInterval,
	}
	meta := xdsnode.Metadata{Role: xdsnode.RoleProxyless, Namespace: namespace, Service: service}
	bootstrap := map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      controlPlane,
			"channel_creds":   []any{map[string]any{"type": "tls", "config": files}},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{
			"id":       id,
			"cluster":  service,
			"metadata": meta.Struct().AsMap(),
		},
		"certificate_providers": map[string]any{
			translate.CertificateProviderInstance: map[string]any{"plugin_name": "file_watcher", "config": files},
		},
	}
	out, err := json.MarshalIndent(bootstrap, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("gRPC bootstrap: %w", err)
	}
	return append(out, '\n'), nil
}

// grpcCertFiles writes each certificate the identity manager installs to
// dir, and remembers the first error (a renewal's is logged: the previous
// files stay, and grpc-go keeps the certificate it has).
type grpcCertFiles struct {
	dir    string
	logger *slog.Logger
	mu     sync.Mutex
	first  error
	bundle []byte
}

func (f *grpcCertFiles) err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.first
}

// write writes the key, then the chain, then the bundle (kept from the
// previous certificate when the CA sent none), each replaced atomically: a
// file watcher that reads between two of them sees a key that does not
// match the certificate, refuses that pair and keeps its previous one
// until its next read.
func (f *grpcCertFiles) write(cert *tls.Certificate, bundle []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(bundle) > 0 {
		f.bundle = bundle
	}
	err := writeCertFiles(f.dir, cert, f.bundle)
	if err != nil {
		f.logger.Error("cannot write the certificate files: grpc-go keeps the previous ones", "dir", f.dir, "error", err)
		if f.first == nil {
			f.first = err
		}
		return
	}
	f.logger.Info("certificate files written", "dir", f.dir, "not_after", cert.Leaf.NotAfter)
}

// writeCertFiles writes key.pem (0600), cert.pem and ca.pem into dir.
func writeCertFiles(dir string, cert *tls.Certificate, bundle []byte) error {
	if len(bundle) == 0 {
		return errors.New("the certificate authority sent no trust bundle")
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	var chain strings.Builder
	for _, der := range cert.Certificate {
		chain.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	for _, w := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{grpcKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600},
		{grpcCertFile, []byte(chain.String()), 0o644},
		{grpcCAFile, bundle, 0o644},
	} {
		if err := writeFileAtomic(filepath.Join(dir, w.name), w.data, w.mode); err != nil {
			return err
		}
	}
	return nil
}

// writeFileAtomic replaces path with data: written to a temporary file of
// the same directory, synced, then renamed over it.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
