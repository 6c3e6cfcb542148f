package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/dataplane/identity"
	"github.com/meshgate/meshgate/policy"
)

// AnnotationDevProxylessTarget on a Service (the quickstart's grpc-client)
// asks `meshgate dev` to enrol a proxyless gRPC client of that service, as
// `meshgate bootstrap grpc` does: dev writes its key, certificate, CA
// bundle and gRPC bootstrap under its state directory, keeps the
// certificate renewed, and prints how to call the annotation's target
// (name[.namespace][:port], the host of an xds:/// URI) with it. Outside
// dev the annotation does nothing.
const AnnotationDevProxylessTarget = "meshgate.dev/dev-proxyless-target"

// devProxylessDir is the directory of dev's proxyless clients in its
// state directory: one subdirectory per client service.
const devProxylessDir = "proxyless"

// devProxylessBootstrap is the gRPC bootstrap's file name in a client's
// directory (next to key.pem, cert.pem and ca.pem).
const devProxylessBootstrap = "bootstrap.json"

// devProxylessClient is a proxyless gRPC client dev enrols for a Service
// annotated AnnotationDevProxylessTarget.
type devProxylessClient struct {
	service, namespace string
	// target is the xds:/// URI the banner calls.
	target string
	// dir holds the client's key, certificate, CA bundle and bootstrap.
	dir string
	// written is closed once the files and the bootstrap are written.
	written chan struct{}
}

// bootstrapFile is the path of the client's gRPC bootstrap.
func (c *devProxylessClient) bootstrapFile() string {
	return filepath.Join(c.dir, devProxylessBootstrap)
}

// devProxylessClients are the clients of the annotated Services of set,
// in the set's order, their files under stateDir/proxyless/<service>[.<namespace>].
// A target that is not name[.namespace][:port] is an error.
func devProxylessClients(set *policy.Set, stateDir string) ([]*devProxylessClient, error) {
	var out []*devProxylessClient
	var errs []error
	for _, svc := range set.Services {
		target, ok := svc.Annotations[AnnotationDevProxylessTarget]
		if !ok {
			continue
		}
		if err := checkProxylessTarget(target); err != nil {
			errs = append(errs, fmt.Errorf("service %s: annotation %s: %w", svc.Name, AnnotationDevProxylessTarget, err))
			continue
		}
		name := svc.Name
		if svc.Namespace != "" && svc.Namespace != xdsnode.DefaultNamespace {
			name += "." + svc.Namespace
		}
		dir, err := filepath.Abs(filepath.Join(stateDir, devProxylessDir, name))
		if err != nil {
			return nil, fmt.Errorf("--state-dir: %w", err)
		}
		out = append(out, &devProxylessClient{
			service: svc.Name, namespace: svc.Namespace, target: "xds:///" + target,
			dir: dir, written: make(chan struct{}),
		})
	}
	return out, errors.Join(errs...)
}

// checkProxylessTarget accepts name[.namespace][:port], as a proxyless
// client names a service.
func checkProxylessTarget(target string) error {
	host, port := target, ""
	if h, p, err := net.SplitHostPort(target); err == nil {
		host, port = h, p
	}
	if host == "" || strings.ContainsAny(host, "/: \t") {
		return fmt.Errorf("%q is not a target: want name[.namespace][:port], e.g. greeter:9090", target)
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: port %q is not 1-65535", target, port)
		}
	}
	return nil
}

// run enrols the client with token at the control plane, writes its
// files and bootstrap (then closes c.written), and renews its certificate
// until ctx is done, as `meshgate bootstrap grpc --out` does.
func (c *devProxylessClient) run(ctx context.Context, logger *slog.Logger, controlPlane, trustDomain, token string) error {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return fmt.Errorf("proxyless client %s: %w", c.service, err)
	}
	files := &grpcCertFiles{dir: c.dir, logger: logger}
	mgr, err := identity.ForProxy(identity.ManagerOptions{
		TrustDomain:           trustDomain,
		Namespace:             c.namespace,
		Service:               c.service,
		ControlPlaneAddresses: []string{controlPlane},
		Token:                 token,
		Logger:                logger,
		OnCertificate:         files.write,
	}, false)
	if err != nil {
		return err
	}
	if err := mgr.Start(ctx); err != nil {
		return err
	}
	if err := files.err(); err != nil {
		return err
	}
	id := xdsnode.IDPrefix(xdsnode.RoleProxyless, c.service, c.namespace) + "dev"
	bootstrap, err := grpcBootstrap(controlPlane, id, c.service, c.namespace, c.dir)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(c.bootstrapFile(), bootstrap, 0o644); err != nil {
		return err
	}
	logger.Info("gRPC bootstrap written", "file", c.bootstrapFile(), "spiffe_id", mgr.SPIFFEID(), "not_after", mgr.NotAfter())
	close(c.written)
	return mgr.Run(ctx)
}

// printDevProxyless prints how to call each client's target without a
// sidecar.
func printDevProxyless(out io.Writer, clients []*devProxylessClient) {
	if len(clients) == 0 {
		return
	}
	fmt.Fprintf(out, "gRPC without a sidecar (a proxyless grpc-go client; mTLS to the service's sidecar):\n")
	for _, c := range clients {
		fmt.Fprintf(out, "  GRPC_XDS_BOOTSTRAP=%s go run ./examples/proxyless-client %s   # as %s\n",
			c.bootstrapFile(), c.target, c.service)
	}
	fmt.Fprintln(out)
}
