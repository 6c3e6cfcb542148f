package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshgate/meshgate/api/envoybootstrap"
	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/dataplane"
	"github.com/meshgate/meshgate/dataplane/identity"
)

// Files `meshgate bootstrap envoy` writes into --dir.
const (
	envoyBootstrapFile = "envoy.json"
	envoyCAFile        = "ca.pem"
	envoySDSSocket     = "sds.sock"
)

// bootstrapEnvoyFlags are the flags of `meshgate bootstrap envoy`.
type bootstrapEnvoyFlags struct {
	service, gateway, namespace string
	controlPlanes               []string
	dir, id, admin, sdsSocket   string
	app, inbound, outbound      string
	identity                    proxyIdentityFlags
	timeout                     time.Duration
}

func newBootstrapEnvoyCmd() *cobra.Command {
	var fl bootstrapEnvoyFlags
	cmd := &cobra.Command{
		Use:   "envoy",
		Short: "Enrol an Envoy with a join token and write its bootstrap",
		Long: `Enrol with the join token of --service (or --gateway) at the control plane's
CA, then write into --dir:
  envoy.json  the Envoy bootstrap: the node (id, cluster, meshgate's node
              metadata: role, namespace, service or gateway, the sidecar's
              listener addresses), ADS over gRPC with mTLS to the control plane
              (static cluster xds_cluster), the static cluster sds-grpc to the
              identity agent's Unix socket, admin on loopback;
  ca.pem      the mesh's trust bundle as received at enrolment.
The Envoy's certificate comes from the identity agent, which enrols with the
same token, renews the certificate and serves it over SDS (the key never
touches the disk):
  meshgate sidecar --envoy --service NAME --xds ADDR --token-file FILE --ca-file DIR/ca.pem --sds-socket DIR/sds.sock
  envoy -c DIR/envoy.json
See docs/interop.md for what an Envoy enforces of meshgate's policies.`,
		Example: `  meshgate bootstrap envoy --service orders --token-file orders.token --control-plane 10.0.0.5:15010 --dir /etc/meshgate-envoy`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			written, err := fl.run(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\nnext: meshgate sidecar --envoy --service %s --namespace %s --xds %s --ca-file %s --sds-socket %s --token-file <token file>\n      envoy -c %s\n",
				written, fl.name(), fl.namespace, fl.controlPlanes[0], filepath.Join(fl.dir, envoyCAFile), fl.sdsSocket, filepath.Join(fl.dir, envoyBootstrapFile))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&fl.service, "service", "", "the service the Envoy is the sidecar of (or --gateway)")
	f.StringVar(&fl.gateway, "gateway", "", "the Gateway the Envoy serves, instead of --service")
	f.StringVar(&fl.namespace, "namespace", xdsnode.DefaultNamespace, "namespace of the service or gateway")
	f.StringSliceVar(&fl.controlPlanes, "control-plane", nil, "control-plane xDS address host:port; several comma-separated or repeated (required)")
	f.StringVar(&fl.dir, "dir", "", "directory to write envoy.json and ca.pem into (required; created)")
	f.StringVar(&fl.id, "id", "", "node id (default <role>~<name>[.<namespace>]~<hostname>-envoy)")
	f.StringVar(&fl.admin, "admin", envoybootstrap.DefaultAdminAddress, "Envoy admin address (loopback only)")
	f.StringVar(&fl.sdsSocket, "sds-socket", "", "the identity agent's Unix socket (default <dir>/sds.sock)")
	f.StringVar(&fl.app, "app", "", "sidecar: ip:port of the local application (required with --service)")
	f.StringVar(&fl.inbound, "inbound", xdsnode.DefaultInboundAddress, "sidecar: ip:port of the inbound listener")
	f.StringVar(&fl.outbound, "outbound", xdsnode.DefaultOutboundAddress, "sidecar: ip:port of the outbound listener")
	f.StringVar(&fl.identity.token, "token", "", "join token (visible to other local users: prefer --token-file or $"+tokenEnv+")")
	f.StringVar(&fl.identity.tokenFile, "token-file", "", "file holding the join token")
	f.StringVar(&fl.identity.caFile, "ca-file", "", "PEM bundle of roots to verify the control plane with, instead of the token's pin")
	f.StringVar(&fl.identity.trustDomain, "trust-domain", spiffeid.DefaultTrustDomain, "trust domain of the mesh (MeshConfig spec.trustDomain)")
	f.DurationVar(&fl.timeout, "timeout", 30*time.Second, "how long enrolment may take")
	return cmd
}

// name is the service or gateway name.
func (fl *bootstrapEnvoyFlags) name() string {
	if fl.gateway != "" {
		return fl.gateway
	}
	return fl.service
}

// metadata is the node metadata of the flags.
func (fl *bootstrapEnvoyFlags) metadata() (xdsnode.Metadata, error) {
	switch {
	case fl.service != "" && fl.gateway != "":
		return xdsnode.Metadata{}, errors.New("give --service or --gateway, not both")
	case fl.gateway != "":
		return xdsnode.Metadata{Role: xdsnode.RoleGateway, Namespace: fl.namespace, Gateway: fl.gateway}, nil
	case fl.service == "":
		return xdsnode.Metadata{}, errors.New("--service (or --gateway) is required")
	case fl.app == "":
		return xdsnode.Metadata{}, errors.New("--app is required with --service: the address of the application the Envoy fronts")
	}
	return xdsnode.Metadata{Role: xdsnode.RoleSidecar, Namespace: fl.namespace, Service: fl.service,
		InboundAddress: fl.inbound, AppAddress: fl.app, OutboundAddress: fl.outbound}, nil
}

// run enrols and writes the files; it returns the bootstrap's path.
func (fl *bootstrapEnvoyFlags) run(ctx context.Context) (string, error) {
	meta, err := fl.metadata()
	if err != nil {
		return "", &exitError{code: 2, err: err}
	}
	if fl.dir == "" {
		return "", &exitError{code: 2, err: errors.New("--dir is required")}
	}
	if err := dataplane.CheckControlPlaneAddresses(fl.controlPlanes); err != nil {
		return "", &exitError{code: 2, err: fmt.Errorf("--control-plane: %w", err)}
	}
	if fl.sdsSocket == "" {
		fl.sdsSocket = filepath.Join(fl.dir, envoySDSSocket)
	}
	if fl.sdsSocket, err = filepath.Abs(fl.sdsSocket); err != nil {
		return "", &exitError{code: 2, err: fmt.Errorf("--sds-socket: %w", err)}
	}
	id := fl.id
	if id == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "localhost"
		}
		id = xdsnode.IDPrefix(meta.Role, fl.name(), fl.namespace) + host + "-envoy"
	}
	idOpts, err := fl.identity.options()
	if err != nil {
		return "", &exitError{code: 2, err: err}
	}
	boot, err := envoybootstrap.Build(envoybootstrap.Options{
		NodeID:         id,
		Metadata:       meta,
		ControlPlanes:  fl.controlPlanes,
		ControlPlaneID: spiffeid.ControlPlane(idOpts.TrustDomain).String(),
		SDSSocket:      fl.sdsSocket,
		AdminAddress:   fl.admin,
	})
	if err != nil {
		return "", &exitError{code: 2, err: err}
	}
	mgr, err := identity.ForProxy(identity.ManagerOptions{
		TrustDomain:           idOpts.TrustDomain,
		Namespace:             fl.namespace,
		Service:               fl.name(),
		ControlPlaneAddresses: fl.controlPlanes,
		Token:                 idOpts.Token,
		CAFile:                idOpts.CAFile,
	}, false)
	if err != nil {
		return "", &exitError{code: 2, err: err}
	}
	enrollCtx, cancel := context.WithTimeout(ctx, fl.timeout)
	defer cancel()
	if err := mgr.Start(enrollCtx); err != nil {
		return "", fmt.Errorf("enrolment at %v: %w", fl.controlPlanes, err)
	}
	bundle := mgr.TrustBundlePEM()
	if len(bundle) == 0 {
		return "", errors.New("enrolment: the control plane sent no trust bundle")
	}
	data, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true}.Marshal(boot)
	if err != nil {
		return "", fmt.Errorf("envoy bootstrap: %w", err)
	}
	if err := os.MkdirAll(fl.dir, 0o755); err != nil {
		return "", fmt.Errorf("--dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(fl.dir, envoyCAFile), bundle, 0o644); err != nil {
		return "", fmt.Errorf("trust bundle: %w", err)
	}
	path := filepath.Join(fl.dir, envoyBootstrapFile)
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("envoy bootstrap: %w", err)
	}
	return path, nil
}
