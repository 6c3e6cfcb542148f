// Package mesh is what a sidecar adds to the shared proxy engine: its
// identity toward the control plane (role=sidecar, the service it fronts and
// the inbound, outbound and application addresses the control plane builds
// its listeners and inbound cluster from) and its SPIFFE identity
// spiffe://<trust-domain>/ns/<namespace>/svc/<service>, obtained with a join
// token; the proxying itself is dataplane's.
package mesh

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

// Defaults of docs/xds.md.
const (
	DefaultNamespace       = xdsnode.DefaultNamespace
	DefaultInboundAddress  = xdsnode.DefaultInboundAddress
	DefaultOutboundAddress = xdsnode.DefaultOutboundAddress
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

	// Token is the join token of the service's identity
	// (`meshgate token create --service <service> --namespace <namespace>`);
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
	// RegisterApp also registers the application, marked app-only
	// (discovery ignores it while this sidecar is registered).
	RegisterApp bool
	// With Consul, the sidecar probes its application every
	// AppHealthInterval (DefaultAppHealthInterval when zero), each probe
	// bounded by AppHealthTimeout (DefaultAppHealthTimeout when zero): a TCP
	// connect to AppAddress, or, with AppHealthPath ("/healthz"), an HTTP
	// GET of that path (2xx and 3xx are healthy). The result is served on
	// the admin /app_health, which a second check of the registration
	// follows: a dead app takes the instance out of rotation. Without
	// Consul there is no probe.
	AppHealthPath     string
	AppHealthInterval time.Duration
	AppHealthTimeout  time.Duration
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
	if err := dnslabel.CheckName("service", opts.Service); err != nil {
		return nil, err
	}
	if err := dnslabel.CheckName("namespace", opts.Namespace); err != nil {
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
	meta := xdsnode.Metadata{
		Role:            xdsnode.RoleSidecar,
		Namespace:       opts.Namespace,
		Service:         opts.Service,
		AppAddress:      opts.AppAddress,
		InboundAddress:  opts.InboundAddress,
		OutboundAddress: opts.OutboundAddress,
	}
	return meta.Node(dataplane.NodeID(xdsnode.RoleSidecar, opts.Service, opts.Namespace, opts.ID)), nil
}

// Sidecar is a sidecar ready to Run: its proxy and, unless insecure, its
// identity.
type Sidecar struct {
	opts   Options
	logger *slog.Logger
	role   *dataplane.Role
	probe  *appProbe // nil without Consul
}

// New checks opts and returns a sidecar; nothing touches the network before
// Run.
func New(opts Options) (*Sidecar, error) {
	node, err := Node(opts)
	if err != nil {
		return nil, err
	}
	if err := dataplane.CheckControlPlaneAddresses(opts.XDSAddresses); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("role", "sidecar", "service", opts.Service)
	if err := checkAppHealthPath(opts.AppHealthPath); err != nil {
		return nil, err
	}
	if opts.AppHealthInterval < 0 || opts.AppHealthTimeout < 0 {
		return nil, fmt.Errorf("app health interval and timeout must not be negative")
	}
	mgr, err := newIdentity(opts, logger)
	if err != nil {
		return nil, err
	}
	dopts := dataplane.Options{
		Node:           node,
		XDSAddresses:   opts.XDSAddresses,
		AdminAddress:   opts.AdminAddress,
		Logger:         logger,
		FastHTTP1:      opts.FastHTTP1,
		MaxConnections: opts.MaxConnections,
		DrainDelay:     opts.DrainDelay,
		DrainTimeout:   opts.DrainTimeout,
	}
	var probe *appProbe
	if opts.Consul != nil {
		probe = newAppProbe(appProbeOptions{
			Address: opts.AppAddress, Path: opts.AppHealthPath,
			Interval: opts.AppHealthInterval, Timeout: opts.AppHealthTimeout, Logger: logger,
		})
		dopts.AppHealth = probe.healthFunc()
	}
	role, err := dataplane.NewRole(dopts, mgr)
	if err != nil {
		return nil, err
	}
	return &Sidecar{opts: opts, logger: logger, role: role, probe: probe}, nil
}

// newIdentity returns the identity manager of the sidecar, nil when insecure.
func newIdentity(opts Options, logger *slog.Logger) (*identity.Manager, error) {
	return identity.ForProxy(identity.ManagerOptions{
		TrustDomain:           opts.TrustDomain,
		Namespace:             opts.Namespace,
		Service:               opts.Service,
		ControlPlaneAddresses: opts.XDSAddresses,
		Token:                 opts.Token,
		CAFile:                opts.CAFile,
		Logger:                logger,
	}, opts.Insecure)
}

// Proxy is the sidecar's proxy engine.
func (s *Sidecar) Proxy() *dataplane.Proxy { return s.role.Proxy }

// Identity is the sidecar's identity; nil when insecure.
func (s *Sidecar) Identity() *identity.Manager { return s.role.Identity }

// Run obtains the sidecar's certificate (unless insecure), then runs the
// proxy with renewal in the background until ctx is done, then stops it
// gracefully (dataplane.Role.Run). With Options.Consul it is registered in
// Consul while it runs, and probes its app meanwhile; when ctx is done it is
// deregistered first: its listeners serve on until that is done and
// Options.DrainDelay has passed.
func (s *Sidecar) Run(ctx context.Context) error {
	if s.opts.Consul == nil {
		return s.role.Run(ctx, nil)
	}
	return s.role.Run(ctx, func(ctx context.Context) {
		probeDone := make(chan struct{})
		go func() {
			defer close(probeDone)
			s.probe.Run(ctx)
		}()
		defer func() { <-probeDone }()
		err := consulreg.KeepRegistered(ctx, s.opts.Consul, s.role.Proxy.AdminAddr, func(admin string) ([]*api.AgentServiceRegistration, error) {
			return consulreg.SidecarRegistration{
				Service: s.opts.Service, Namespace: s.opts.Namespace,
				InboundAddress: s.opts.InboundAddress, AppAddress: s.opts.AppAddress, AdminAddress: admin,
				Labels: s.opts.Labels, RegisterApp: s.opts.RegisterApp, CheckInterval: s.opts.ConsulCheckInterval,
				AppHealth: true,
			}.Registrations()
		}, s.logger)
		if err != nil {
			s.logger.Error("not registered in consul", "error", err)
		}
	})
}

// Run runs a sidecar until ctx is done, then drains it.
func Run(ctx context.Context, opts Options) error {
	sc, err := New(opts)
	if err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	if err := sc.Run(ctx); err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	return nil
}
