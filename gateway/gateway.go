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

// Options configure a gateway node: its Gateway, and what every role has
// (dataplane.RoleOptions).
type Options struct {
	// Name of the Gateway resource this node serves; required.
	Name string
	// Namespace of the Gateway; DefaultNamespace when empty.
	Namespace string
	dataplane.RoleOptions
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
	return dataplane.WithZone(meta.Node(dataplane.NodeID(xdsnode.RoleGateway, opts.Name, namespace, opts.ID)), opts.Zone)
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
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	logger := opts.RoleLogger("role", xdsnode.RoleGateway, "gateway", opts.Name)
	role, err := opts.NewRole(node, opts.Namespace, opts.Name, logger, nil)
	if err != nil {
		return nil, err
	}
	return &Gateway{opts: opts, logger: logger, role: role}, nil
}

// Proxy is the gateway's proxy engine.
func (g *Gateway) Proxy() *dataplane.Proxy { return g.role.Proxy }

// Identity is the gateway's identity; nil when insecure.
func (g *Gateway) Identity() *identity.Manager { return g.role.Identity }

// Run obtains the gateway's certificate (unless insecure), then runs the
// proxy with renewal in the background until ctx is done, then stops it
// gracefully (dataplane.Role.Run). With a Consul client it is registered in
// Consul (service consulreg.GatewayService) while it runs, and deregistered
// first when ctx is done: its listeners serve on until that is done and
// the drain delay has passed.
func (g *Gateway) Run(ctx context.Context) error {
	consul := g.opts.Consul
	if consul.Client == nil {
		return g.role.Run(ctx, nil)
	}
	return g.role.Run(ctx, func(ctx context.Context) {
		g.role.KeepRegistered(ctx, consul.Client, func(admin string) ([]*api.AgentServiceRegistration, error) {
			reg, err := consulreg.GatewayRegistration{
				Name: g.opts.Name, Namespace: g.opts.Namespace, AdminAddress: admin,
				Labels: consul.Labels, CheckInterval: consul.CheckInterval,
			}.Registration()
			return []*api.AgentServiceRegistration{reg}, err
		}, g.logger)
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
