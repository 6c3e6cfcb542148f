// Package gateway is what a gateway node adds to the shared proxy engine: its
// identity toward the control plane (role=gateway, the Gateway it serves);
// listeners, routes and clusters all come from xDS and run in dataplane.
package gateway

import (
	"context"
	"fmt"
	"log/slog"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane"
)

// DefaultNamespace is used when Options.Namespace is empty.
const DefaultNamespace = "default"

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
}

// Node checks opts and returns the xDS node identity of the gateway
// (docs/xds.md, "Who a proxy is").
func Node(opts Options) (*corev3.Node, error) {
	if err := dataplane.CheckName("gateway name", opts.Name); err != nil {
		return nil, err
	}
	namespace := opts.Namespace
	if namespace == "" {
		namespace = DefaultNamespace
	}
	if err := dataplane.CheckName("namespace", namespace); err != nil {
		return nil, err
	}
	metadata, err := structpb.NewStruct(map[string]any{
		"role":      "gateway",
		"namespace": namespace,
		"gateway":   opts.Name,
	})
	if err != nil {
		return nil, fmt.Errorf("gateway node metadata: %w", err)
	}
	return &corev3.Node{
		Id:       dataplane.NodeID("gateway", opts.Name, opts.ID),
		Cluster:  opts.Name,
		Metadata: metadata,
	}, nil
}

// New checks opts and returns the proxy of a gateway node, ready to Run.
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
		Logger:       logger.With("role", "gateway", "gateway", opts.Name),
	})
}

// Run runs a gateway node until ctx is done, then drains it.
func Run(ctx context.Context, opts Options) error {
	proxy, err := New(opts)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	return proxy.Run(ctx)
}
