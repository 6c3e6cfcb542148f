// Package gateway is what a gateway node adds to the shared proxy engine: its
// identity toward the control plane (role=gateway, the Gateway it serves, and
// its SPIFFE identity spiffe://<trust-domain>/ns/<namespace>/svc/<gateway>,
// obtained with a join token); listeners, routes and clusters all come from
// xDS and run in dataplane.
package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/hashicorp/consul/api"

	"github.com/meshgate/meshgate/api/consulreg"
	"github.com/meshgate/meshgate/api/dnslabel"
	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/dataplane"
	"github.com/meshgate/meshgate/dataplane/identity"
)

// DefaultNamespace is used when Options.Namespace is empty.
const DefaultNamespace = xdsnode.DefaultNamespace

// Options configure a gateway node.
type Options struct {
	// Name of the Gateway resource this node serves; required.
	Name string
	// Namespace of the Gateway; DefaultNamespace when empty.
	Namespace string
	// XDSAddresses of control-plane replicas (host:port); at least one.
	XDSAddresses []string
	// AdminAddress of the admin endpoints; dataplane.DefaultAdminAddress when empty.
	AdminAddress string
	// ID overrides the node id (default gateway~<name>~<hostname>-<pid>).
	ID string
	// Logger; slog.Default() when nil.
	Logger *slog.Logger

	// Token is the join token of the gateway's identity
	// (`meshgate token create --service <name> --namespace <namespace>`);
	// required unless Insecure.
	Token string
	// CAFile is a PEM bundle that verifies the control plane on the first
	// connection instead of the token's pin; optional.
	CAFile string
	// TrustDomain of the mesh; spiffeid.DefaultTrustDomain when empty.
	TrustDomain string
	// Insecure runs without an identity over plaintext xDS, for control
	// planes without TLS (tests of the pre-mTLS behaviour only).
	Insecure bool

	// Consul, when set, is the local Consul agent the proxy registers
	// itself with while it runs (docs/consul.md).
	Consul *api.Client
	// Labels of the registration ("key=value" tags).
	Labels map[string]string
	// ConsulCheckInterval is the interval of the registration's health
	// check (the admin /ready); consulreg.DefaultCheckInterval when zero.
	ConsulCheckInterval time.Duration
	// FastHTTP1 serves the listeners' body-less HTTP/1.x requests on the
	// proxy's fast path instead of net/http's server
	// (dataplane.Options.FastHTTP1).
	FastHTTP1 bool
	// MaxConnections, DrainDelay and DrainTimeout are the proxy's
	// (dataplane.Options): connections per listener, and the graceful stop.
	MaxConnections int
	DrainDelay     time.Duration
	DrainTimeout   time.Duration
}

// Node checks opts and returns the xDS node identity of the gateway
// (docs/xds.md, "Who a proxy is").
func Node(opts Options) (*corev3.Node, error) {
	if err := dnslabel.CheckName("gateway name", opts.Name); err != nil {
		return nil, err
	}
	namespace := opts.Namespace
	if namespace == "" {
		namespace = DefaultNamespace
	}
	if err := dnslabel.CheckName("namespace", namespace); err != nil {
		return nil, err
	}
	meta := xdsnode.Metadata{Role: xdsnode.RoleGateway, Namespace: namespace, Gateway: opts.Name}
	return meta.Node(dataplane.NodeID(xdsnode.RoleGateway, opts.Name, namespace, opts.ID)), nil
}

// Gateway is a gateway node ready to Run: its proxy and, unless insecure,
// its identity.
type Gateway struct {
	opts   Options
	logger *slog.Logger
	role   *dataplane.Role
}

// New checks opts and returns a gateway node; nothing touches the network
// before Run.
func New(opts Options) (*Gateway, error) {
	node, err := Node(opts)
	if err != nil {
		return nil, err
	}
	if err := dataplane.CheckControlPlaneAddresses(opts.XDSAddresses); err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("role", "gateway", "gateway", opts.Name)
	namespace := opts.Namespace
	if namespace == "" {
		namespace = DefaultNamespace
	}
	mgr, err := newIdentity(opts, namespace, logger)
	if err != nil {
		return nil, err
	}
	role, err := dataplane.NewRole(dataplane.Options{
		Node:           node,
		XDSAddresses:   opts.XDSAddresses,
		AdminAddress:   opts.AdminAddress,
		Logger:         logger,
		FastHTTP1:      opts.FastHTTP1,
		MaxConnections: opts.MaxConnections,
		DrainDelay:     opts.DrainDelay,
		DrainTimeout:   opts.DrainTimeout,
	}, mgr)
	if err != nil {
		return nil, err
	}
	opts.Namespace = namespace
	return &Gateway{opts: opts, logger: logger, role: role}, nil
}

// newIdentity returns the identity manager of the gateway, nil when insecure.
func newIdentity(opts Options, namespace string, logger *slog.Logger) (*identity.Manager, error) {
	return identity.ForProxy(identity.ManagerOptions{
		TrustDomain:           opts.TrustDomain,
		Namespace:             namespace,
		Service:               opts.Name,
		ControlPlaneAddresses: opts.XDSAddresses,
		Token:                 opts.Token,
		CAFile:                opts.CAFile,
		Logger:                logger,
	}, opts.Insecure)
}

// Proxy is the gateway's proxy engine.
func (g *Gateway) Proxy() *dataplane.Proxy { return g.role.Proxy }

// Identity is the gateway's identity; nil when insecure.
func (g *Gateway) Identity() *identity.Manager { return g.role.Identity }

// Run obtains the gateway's certificate (unless insecure), then runs the
// proxy with renewal in the background until ctx is done, then stops it
// gracefully (dataplane.Role.Run). With Options.Consul it is registered in
// Consul (service consulreg.GatewayService) while it runs, and deregistered
// first when ctx is done: its listeners serve on until that is done and
// Options.DrainDelay has passed.
func (g *Gateway) Run(ctx context.Context) error {
	if g.opts.Consul == nil {
		return g.role.Run(ctx, nil)
	}
	return g.role.Run(ctx, func(ctx context.Context) {
		err := consulreg.KeepRegistered(ctx, g.opts.Consul, g.role.Proxy.AdminAddr, func(admin string) ([]*api.AgentServiceRegistration, error) {
			reg, err := consulreg.GatewayRegistration{
				Name: g.opts.Name, Namespace: g.opts.Namespace, AdminAddress: admin,
				Labels: g.opts.Labels, CheckInterval: g.opts.ConsulCheckInterval,
			}.Registration()
			return []*api.AgentServiceRegistration{reg}, err
		}, g.logger)
		if err != nil {
			g.logger.Error("not registered in consul", "error", err)
		}
	})
}

// Run runs a gateway node until ctx is done, then drains it.
func Run(ctx context.Context, opts Options) error {
	gw, err := New(opts)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if err := gw.Run(ctx); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	return nil
}
