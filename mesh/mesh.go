// Package mesh is what a sidecar adds to the shared proxy engine: its
// identity toward the control plane (role=sidecar, the service it fronts and
// the inbound, outbound and application addresses the control plane builds
// its listeners and inbound cluster from); the proxying itself is dataplane's.
package mesh

import (
	"context"
	"fmt"
	"log/slog"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane"
)

// Defaults of docs/xds.md.
const (
	DefaultNamespace       = "default"
	DefaultInboundAddress  = "127.0.0.1:15006"
	DefaultOutboundAddress = "127.0.0.1:15001"
)

// Options configure a sidecar.
type Options struct {
	// Service this sidecar fronts; required.
	Service string
	// Namespace of the service; DefaultNamespace when empty.
	Namespace string
	// AppAddress is ip:port of the local application; required.
	AppAddress string
	// InboundAddress is ip:port the inbound listener binds; DefaultInboundAddress when empty.
	InboundAddress string
	// OutboundAddress is ip:port the outbound listener binds; DefaultOutboundAddress when empty.
	OutboundAddress string
	// XDSAddresses of control-plane replicas (host:port); at least one.
	XDSAddresses []string
	// AdminAddress of the admin endpoints; dataplane.DefaultAdminAddress when empty.
	AdminAddress string
	// ID overrides the node id (default sidecar~<service>~<hostname>-<pid>).
	ID string
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

// withDefaults fills the optional fields.
func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.InboundAddress == "" {
		o.InboundAddress = DefaultInboundAddress
	}
	if o.OutboundAddress == "" {
		o.OutboundAddress = DefaultOutboundAddress
	}
	return o
}

// Node checks opts and returns the xDS node identity of the sidecar
// (docs/xds.md, "Who a proxy is").
func Node(opts Options) (*corev3.Node, error) {
	opts = opts.withDefaults()
	if err := dataplane.CheckName("service", opts.Service); err != nil {
		return nil, err
	}
	if err := dataplane.CheckName("namespace", opts.Namespace); err != nil {
		return nil, err
	}
	if opts.AppAddress == "" {
		return nil, fmt.Errorf("app address (--app) is required")
	}
	for _, a := range []struct{ what, addr string }{
		{"app address", opts.AppAddress},
		{"inbound address", opts.InboundAddress},
		{"outbound address", opts.OutboundAddress},
	} {
		if err := dataplane.CheckIPPort(a.what, a.addr); err != nil {
			return nil, err
		}
	}
	if opts.InboundAddress == opts.OutboundAddress {
		return nil, fmt.Errorf("inbound and outbound address are both %s; they must differ", opts.InboundAddress)
	}
	if opts.AppAddress == opts.InboundAddress || opts.AppAddress == opts.OutboundAddress {
		return nil, fmt.Errorf("app address %s is also a listener address of the sidecar", opts.AppAddress)
	}
	metadata, err := structpb.NewStruct(map[string]any{
		"role":             "sidecar",
		"namespace":        opts.Namespace,
		"service":          opts.Service,
		"app_address":      opts.AppAddress,
		"inbound_address":  opts.InboundAddress,
		"outbound_address": opts.OutboundAddress,
	})
	if err != nil {
		return nil, fmt.Errorf("sidecar node metadata: %w", err)
	}
	return &corev3.Node{
		Id:       dataplane.NodeID("sidecar", opts.Service, opts.ID),
		Cluster:  opts.Service,
		Metadata: metadata,
	}, nil
}

// New checks opts and returns the proxy of a sidecar, ready to Run.
func New(opts Options) (*dataplane.Proxy, error) {
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
	return dataplane.New(dataplane.Options{
		Node:         node,
		XDSAddresses: opts.XDSAddresses,
		AdminAddress: opts.AdminAddress,
		Logger:       logger.With("role", "sidecar", "service", opts.Service),
	})
}

// Run runs a sidecar until ctx is done, then drains it.
func Run(ctx context.Context, opts Options) error {
	proxy, err := New(opts)
	if err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	return proxy.Run(ctx)
}
