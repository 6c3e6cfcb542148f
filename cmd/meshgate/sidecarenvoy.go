package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/meshgate/meshgate/dataplane"
	"github.com/meshgate/meshgate/dataplane/identity"
	"github.com/meshgate/meshgate/dataplane/sds"
)

// envoyAgentFlags are `meshgate sidecar --envoy`'s: run the identity agent
// of an Envoy instead of the meshgate proxy.
type envoyAgentFlags struct {
	enabled bool
	socket  string
}

// envoyAgentHelp is the sidecar help's paragraph on --envoy.
const envoyAgentHelp = `

With --envoy the sidecar runs no proxy: it is the identity agent of an Envoy
beside the app (as Istio's agent is). It obtains and renews the
certificate of --service like a sidecar (the key never leaves the process)
and serves it over SDS on the Unix socket --sds-socket as the secret
"default", with the trust bundle as "ROOTCA"; the Envoy's bootstrap
(meshgate bootstrap envoy) reaches it as the static cluster sds-grpc, and
the control plane references the certificate through it. --app, --inbound,
--outbound and the Consul flags are the Envoy's business then (see
docs/interop.md).`

// runEnvoyAgent serves the identity of namespace/service over SDS on the
// Unix socket until ctx is done.
func runEnvoyAgent(ctx context.Context, logger *slog.Logger, role dataplane.RoleOptions, namespace, service, socket string) error {
	if socket == "" {
		return &exitError{code: 2, err: errors.New("--envoy needs --sds-socket, the Unix socket the Envoy's sds-grpc cluster connects to")}
	}
	if role.Identity.Insecure {
		return &exitError{code: 2, err: errors.New("--envoy serves the sidecar's identity: it cannot run --insecure")}
	}
	if err := dataplane.CheckControlPlaneAddresses(role.XDSAddresses); err != nil {
		return &exitError{code: 2, err: err}
	}
	logger = logger.With("role", "envoy-agent", "service", service, "namespace", namespace)
	mgr, err := identity.ForProxy(identity.ManagerOptions{
		TrustDomain:           role.Identity.TrustDomain,
		Namespace:             namespace,
		Service:               service,
		ControlPlaneAddresses: role.XDSAddresses,
		Token:                 role.Identity.Token,
		CAFile:                role.Identity.CAFile,
		Logger:                logger,
	}, false)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	srv, err := sds.New(sds.Options{Source: mgr, Logger: logger})
	if err != nil {
		return err
	}
	ln, err := sds.Listen(socket)
	if err != nil {
		return err
	}
	logger.Info("serving the identity over SDS", "socket", socket)
	return mgr.Serve(ctx, func(ctx context.Context) error { return srv.Serve(ctx, ln) })
}
