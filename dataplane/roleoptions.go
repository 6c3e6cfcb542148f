package dataplane

import (
	"context"
	"log/slog"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/hashicorp/consul/api"

	"github.com/meshgate/meshgate/api/consulreg"
	"github.com/meshgate/meshgate/dataplane/identity"
)

// RoleOptions configure what a gateway node and a sidecar have alike: where
// the control plane is, the admin endpoints, the identity, the Consul
// registration and how the proxy serves and stops. gateway.Options and
// mesh.Options embed them; `meshgate gateway` and `meshgate sidecar` fill
// them from the same flags.
type RoleOptions struct {
	// XDSAddresses of control-plane replicas (host:port); at least one.
	XDSAddresses []string
	// AdminAddress of the admin endpoints; DefaultAdminAddress when empty.
	AdminAddress string
	// ID overrides the node id (default NodeID's <role>~<name>~<hostname>-<pid>).
	ID string
	// Zone is the proxy's zone, sent as node.locality.zone (WithZone): the
	// control plane puts the endpoints of that zone first for the clusters
	// whose TrafficPolicy prefers local endpoints. Empty: none.
	Zone string
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
	// Identity is how the proxy obtains its SPIFFE identity.
	Identity identity.ProxyOptions
	// Consul, with a client, is the local agent the proxy registers itself
	// with while it runs (docs/consul.md).
	Consul consulreg.ProxyOptions
	// Serving is how the proxy serves and stops (Options).
	Serving ServingOptions
}

// ServingOptions are the Options fields a role sets from its flags.
type ServingOptions struct {
	// FastHTTP1 is Options.FastHTTP1.
	FastHTTP1 bool
	// ReusePort is Options.ReusePort.
	ReusePort bool
	// MaxConnections, DrainDelay and DrainTimeout are Options': connections
	// per listener, and the graceful stop.
	MaxConnections int
	DrainDelay     time.Duration
	DrainTimeout   time.Duration
}

// RoleLogger is o.Logger (slog.Default() when nil) with args.
func (o RoleOptions) RoleLogger(args ...any) *slog.Logger {
	logger := o.Logger
	if logger == nil {
		logger = slog.Default()
	}
	return logger.With(args...)
}

// NewRole checks o and builds the role of the proxy that sends node and
// whose identity is namespace/name: its identity manager (none when
// insecure) and its proxy. appHealth is Options.AppHealth (nil for a
// gateway node).
func (o RoleOptions) NewRole(node *corev3.Node, namespace, name string, logger *slog.Logger, appHealth func() (bool, string)) (*Role, error) {
	if err := CheckControlPlaneAddresses(o.XDSAddresses); err != nil {
		return nil, err
	}
	mgr, err := identity.ForProxy(identity.ManagerOptions{
		TrustDomain:           o.Identity.TrustDomain,
		Namespace:             namespace,
		Service:               name,
		ControlPlaneAddresses: o.XDSAddresses,
		Token:                 o.Identity.Token,
		CAFile:                o.Identity.CAFile,
		Logger:                logger,
	}, o.Identity.Insecure)
	if err != nil {
		return nil, err
	}
	return NewRole(Options{
		Node:           node,
		XDSAddresses:   o.XDSAddresses,
		AdminAddress:   o.AdminAddress,
		Logger:         logger,
		FastHTTP1:      o.Serving.FastHTTP1,
		ReusePort:      o.Serving.ReusePort,
		MaxConnections: o.Serving.MaxConnections,
		DrainDelay:     o.Serving.DrainDelay,
		DrainTimeout:   o.Serving.DrainTimeout,
		AppHealth:      appHealth,
	}, mgr)
}

// KeepRegistered keeps the proxy registered with the Consul agent of client
// until ctx is done, with the registrations built for its bound admin
// address (consulreg.KeepRegistered), then deregisters it. A failure is
// logged: a registration never stops the proxy. It is what a role runs
// beside its proxy (Run's beside).
func (r *Role) KeepRegistered(ctx context.Context, client *api.Client,
	registrations func(admin string) ([]*api.AgentServiceRegistration, error), logger *slog.Logger) {
	if err := consulreg.KeepRegistered(ctx, client, r.Proxy.AdminAddr, registrations, logger); err != nil {
		logger.Error("not registered in consul", "error", err)
	}
}
