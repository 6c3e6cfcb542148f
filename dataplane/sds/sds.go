// Package sds serves a proxy's identity to a local Envoy over the Secret
// Discovery Service (envoy.service.secret.v3, state of the world) on a Unix
// socket, as Istio's agent does: `meshgate sidecar --envoy` obtains and
// renews the certificate (its key generated in the process, never written
// to disk) and this server hands it to the Envoy beside it as the secret
// "default", with the trust bundle as "ROOTCA". The control plane
// references "default" for an Envoy node through the bootstrap's static
// cluster "sds-grpc" (docs/xds.md, "Envoy nodes").
package sds

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
)

// Secret names served, as the control plane references them.
const (
	IdentitySecretName = "default"
	RootCASecretName   = "ROOTCA"
)

// DefaultPollInterval is how often the server looks for a renewed
// certificate or a new trust bundle when Options does not say.
const DefaultPollInterval = time.Second

// Source is the identity served: the identity manager
// (dataplane/identity.Manager) in production.
type Source interface {
	// Certificate is the current certificate chain and key; nil before the
	// first one. A renewal is a new pointer.
	Certificate() *tls.Certificate
	// TrustBundlePEM is the current trust bundle; nil before the first.
	TrustBundlePEM() []byte
}

// Options configure a Server.
type Options struct {
	// Source of the certificate and trust bundle; required.
	Source Source
	// PollInterval between looks at Source; DefaultPollInterval when zero.
	PollInterval time.Duration
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

// Server is the SDS server. Its secrets follow Source: a renewed
// certificate or a new bundle is pushed to every stream within one
// PollInterval.
type Server struct {
	opts   Options
	logger *slog.Logger
	cache  cachev3.SnapshotCache

	// What the current snapshot holds, and its version.
	cert    *tls.Certificate
	bundle  []byte
	version int
}

// New returns a Server for opts.
func New(opts Options) (*Server, error) {
	if opts.Source == nil {
		return nil, errors.New("sds: a certificate source is required")
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Server{
		opts:   opts,
		logger: opts.Logger.With("component", "sds"),
		cache:  cachev3.NewSnapshotCache(false, anyNode{}, nil),
	}, nil
}

// anyNode hashes every node alike: the socket is the proxy's own, so
// whatever node connects gets the one identity.
type anyNode struct{}

func (anyNode) ID(*corev3.Node) string { return "local" }

// Listen listens on the Unix socket path, replacing a stale socket file
// left by a previous run, readable and writable by the owner only.
func Listen(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("sds socket %s: exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("sds socket %s: remove stale socket: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("sds socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("sds socket %s: %w", path, err)
	}
	return ln, nil
}

// Serve serves SDS on ln until ctx is done, then stops and closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(1 << 20))
	secretv3.RegisterSecretDiscoveryServiceServer(srv, serverv3.NewServer(ctx, s.cache, nil))
	s.refresh(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	ticker := time.NewTicker(s.opts.PollInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			srv.Stop()
			<-done
			return nil
		case err := <-done:
			return fmt.Errorf("sds: %w", err)
		case <-ticker.C:
			s.refresh(ctx)
		}
	}
}

// refresh sets a new snapshot when Source has a new certificate or bundle.
func (s *Server) refresh(ctx context.Context) {
	cert, bundle := s.opts.Source.Certificate(), s.opts.Source.TrustBundlePEM()
	if cert == nil || (cert == s.cert && bytes.Equal(bundle, s.bundle)) {
		return
	}
	secrets, err := Secrets(cert, bundle)
	if err != nil {
		s.logger.Error("certificate not served", "error", err)
		return
	}
	snap, err := cachev3.NewSnapshot(strconv.Itoa(s.version+1), map[resourcev3.Type][]types.Resource{resourcev3.SecretType: secrets})
	if err != nil {
		s.logger.Error("certificate not served", "error", err)
		return
	}
	if err := s.cache.SetSnapshot(ctx, anyNode{}.ID(nil), snap); err != nil {
		s.logger.Error("certificate not served", "error", err)
		return
	}
	s.cert, s.bundle = cert, bundle
	s.version++
	s.logger.Info("serving certificate", "version", s.version, "not_after", notAfter(cert))
}

// Secrets are the secrets of cert and bundle: "default" (the chain and the
// key, PEM) and, with a bundle, "ROOTCA".
func Secrets(cert *tls.Certificate, bundle []byte) ([]types.Resource, error) {
	if len(cert.Certificate) == 0 {
		return nil, errors.New("sds: certificate without a chain")
	}
	var chain bytes.Buffer
	for _, der := range cert.Certificate {
		if err := pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: der}); err != nil {
			return nil, fmt.Errorf("sds: certificate chain: %w", err)
		}
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("sds: private key: %w", err)
	}
	out := []types.Resource{&tlsv3.Secret{
		Name: IdentitySecretName,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(chain.Bytes()),
			PrivateKey:       inline(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
		}},
	}}
	if len(bundle) > 0 {
		out = append(out, &tlsv3.Secret{
			Name: RootCASecretName,
			Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: inline(bundle),
			}},
		})
	}
	return out, nil
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func notAfter(cert *tls.Certificate) time.Time {
	if cert.Leaf != nil {
		return cert.Leaf.NotAfter
	}
	if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil {
		return leaf.NotAfter
	}
	return time.Time{}
}
