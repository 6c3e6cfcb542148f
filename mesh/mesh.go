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
	"maps"
	"net/netip"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/hashicorp/consul/api"

	"github.com/meshgate/meshgate/api/consulreg"
	"github.com/meshgate/meshgate/api/dnslabel"
	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/dataplane"
	"github.com/meshgate/meshgate/dataplane/identity"
	"github.com/meshgate/meshgate/mesh/meshdns"
)

// Defaults of docs/xds.md.
const (
	DefaultNamespace       = xdsnode.DefaultNamespace
	DefaultInboundAddress  = xdsnode.DefaultInboundAddress
	DefaultOutboundAddress = xdsnode.DefaultOutboundAddress
	DefaultCaptureAddress  = xdsnode.DefaultCaptureAddress
)

// Options configure a sidecar: its service and addresses, its app's health
// probe, and what every role has (dataplane.RoleOptions).
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
	// OutboundTCP are the outbound TCP listeners, each
	// "service[.namespace]:port=ip:port" (xdsnode.OutboundTCP): the app
	// reaches that TCP service port by connecting to ip:port, the sidecar
	// carrying the bytes over mTLS.
	OutboundTCP []string
	// CaptureAddress, when set, is the ip:port of the capture listener
	// the control plane sends: the application's outbound TCP, redirected
	// there by the capture rules (package capture), is routed by its
	// original destination. CaptureUnknown is what it does with a
	// destination that is no mesh service: xdsnode.CapturePassthrough
	// (default) or xdsnode.CaptureDeny.
	CaptureAddress string
	CaptureUnknown string
	// RegisterApp also registers the application in Consul, marked
	// app-only (discovery ignores it while this sidecar is registered).
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
	// DNSListen, when set (ip:port, e.g. 127.0.0.1:15053), serves the
	// sidecar's DNS resolver there, UDP and TCP (mesh/meshdns): the mesh
	// services' names answered with their virtual IPs, other names
	// forwarded to DNSUpstreams (IP or ip:port; default the nameservers of
	// /etc/resolv.conf). Empty: no resolver, at no cost.
	DNSListen    string
	DNSUpstreams []string
	dataplane.RoleOptions
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
	if opts.CaptureAddress != "" {
		if err := dataplane.CheckIPPort("capture address", opts.CaptureAddress); err != nil {
			return nil, err
		}
		if opts.CaptureAddress == opts.InboundAddress || opts.CaptureAddress == opts.OutboundAddress || opts.CaptureAddress == opts.AppAddress {
			return nil, fmt.Errorf("capture address %s is also the app's or another listener's address", opts.CaptureAddress)
		}
	}
	switch opts.CaptureUnknown {
	case "", xdsnode.CapturePassthrough, xdsnode.CaptureDeny:
	default:
		return nil, fmt.Errorf("capture unknown destinations %q: want %q or %q", opts.CaptureUnknown, xdsnode.CapturePassthrough, xdsnode.CaptureDeny)
	}
	var tcp []string
	seen := map[string]bool{opts.InboundAddress: true, opts.OutboundAddress: true, opts.AppAddress: true}
	if opts.CaptureAddress != "" {
		seen[opts.CaptureAddress] = true
	}
	if opts.DNSListen != "" {
		if err := dataplane.CheckIPPort("DNS listen address", opts.DNSListen); err != nil {
			return nil, err
		}
		if seen[opts.DNSListen] {
			return nil, fmt.Errorf("DNS listen address %s is also another address of the sidecar", opts.DNSListen)
		}
		seen[opts.DNSListen] = true
	} else if len(opts.DNSUpstreams) > 0 {
		return nil, fmt.Errorf("DNS upstreams need a DNS listen address (--dns-listen)")
	}
	for _, entry := range opts.OutboundTCP {
		o, err := xdsnode.ParseOutboundTCP(entry)
		if err != nil {
			return nil, err
		}
		if seen[o.Address] {
			return nil, fmt.Errorf("outbound TCP listener %q: address %s is used twice", entry, o.Address)
		}
		seen[o.Address] = true
		tcp = append(tcp, o.String())
	}
	meta := xdsnode.Metadata{
		Role:            xdsnode.RoleSidecar,
		Namespace:       opts.Namespace,
		Service:         opts.Service,
		AppAddress:      opts.AppAddress,
		InboundAddress:  opts.InboundAddress,
		OutboundAddress: opts.OutboundAddress,
		OutboundTCP:     strings.Join(tcp, ","),
		CaptureAddress:  opts.CaptureAddress,
	}
	if opts.CaptureAddress != "" {
		meta.CaptureUnknown = opts.CaptureUnknown
	}
	return dataplane.WithZone(meta.Node(dataplane.NodeID(xdsnode.RoleSidecar, opts.Service, opts.Namespace, opts.ID)), opts.Zone)
}

// Sidecar is a sidecar ready to Run: its proxy and, unless insecure, its
// identity.
type Sidecar struct {
	opts   Options
	logger *slog.Logger
	role   *dataplane.Role
	probe  *appProbe         // nil without Consul
	dns    *meshdns.Resolver // nil without DNSListen
}

// New checks opts and returns a sidecar; nothing touches the network before
// Run.
func New(opts Options) (*Sidecar, error) {
	node, err := Node(opts)
	if err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	logger := opts.RoleLogger("role", xdsnode.RoleSidecar, "service", opts.Service)
	if err := checkAppHealthPath(opts.AppHealthPath); err != nil {
		return nil, err
	}
	if opts.AppHealthInterval < 0 || opts.AppHealthTimeout < 0 {
		return nil, fmt.Errorf("app health interval and timeout must not be negative")
	}
	var probe *appProbe
	var appHealth func() (bool, string)
	if opts.Consul.Client != nil {
		probe = newAppProbe(appProbeOptions{
			Address: opts.AppAddress, Path: opts.AppHealthPath,
			Interval: opts.AppHealthInterval, Timeout: opts.AppHealthTimeout, Logger: logger,
		})
		appHealth = probe.healthFunc()
	}
	role, err := opts.NewRole(node, opts.Namespace, opts.Service, logger, appHealth)
	if err != nil {
		return nil, err
	}
	sc := &Sidecar{opts: opts, logger: logger, role: role, probe: probe}
	if opts.DNSListen != "" {
		sc.dns, err = meshdns.New(meshdns.Options{
			Listen: opts.DNSListen, Namespace: opts.Namespace, Upstreams: opts.DNSUpstreams,
			Ready: role.Proxy.Ready, Registerer: role.Proxy.MetricsRegisterer(), Logger: logger.With("component", "dns"),
		})
		if err != nil {
			return nil, err
		}
		role.Proxy.WatchClusters(sc.dns.SetClusters)
		if ap, err := netip.ParseAddrPort(opts.DNSListen); err == nil && !ap.Addr().IsLoopback() {
			logger.Warn("the DNS resolver listens on a non-loopback address: anyone who reaches it may resolve through it", "address", opts.DNSListen)
		}
	}
	return sc, nil
}

// DNS is the sidecar's DNS resolver; nil without Options.DNSListen.
func (s *Sidecar) DNS() *meshdns.Resolver { return s.dns }

// Proxy is the sidecar's proxy engine.
func (s *Sidecar) Proxy() *dataplane.Proxy { return s.role.Proxy }

// Identity is the sidecar's identity; nil when insecure.
func (s *Sidecar) Identity() *identity.Manager { return s.role.Identity }

// Run obtains the sidecar's certificate (unless insecure), then runs the
// proxy with renewal in the background until ctx is done, then stops it
// gracefully (dataplane.Role.Run). With a Consul client it is registered in
// Consul while it runs, and probes its app meanwhile; when ctx is done it is
// deregistered first: its listeners serve on until that is done and
// the drain delay has passed.
//
// With a DNS listen address, the resolver is bound first (an address in
// use is Run's error) and answers until the proxy has stopped.
func (s *Sidecar) Run(ctx context.Context) error {
	if s.dns == nil {
		return s.run(ctx)
	}
	if err := s.dns.Listen(); err != nil {
		return err
	}
	dnsCtx, stopDNS := context.WithCancel(context.WithoutCancel(ctx))
	dnsDone := make(chan error, 1)
	go func() {
		err := s.dns.Serve(dnsCtx)
		if err != nil {
			s.logger.Error("the DNS resolver stopped; the proxy serves on", "error", err)
		}
		dnsDone <- err
	}()
	err := s.run(ctx)
	stopDNS()
	if dnsErr := <-dnsDone; dnsErr != nil && err == nil {
		err = dnsErr
	}
	return err
}

func (s *Sidecar) run(ctx context.Context) error {
	consul := s.opts.Consul
	if consul.Client == nil {
		return s.role.Run(ctx, nil)
	}
	return s.role.Run(ctx, func(ctx context.Context) {
		probeDone := make(chan struct{})
		go func() {
			defer close(probeDone)
			s.probe.Run(ctx)
		}()
		defer func() { <-probeDone }()
		s.role.KeepRegistered(ctx, consul.Client, func(admin string) ([]*api.AgentServiceRegistration, error) {
			return consulreg.SidecarRegistration{
				Service: s.opts.Service, Namespace: s.opts.Namespace,
				InboundAddress: s.opts.InboundAddress, AppAddress: s.opts.AppAddress, AdminAddress: admin,
				Labels: withZoneLabel(consul.Labels, s.opts.Zone), RegisterApp: s.opts.RegisterApp, CheckInterval: consul.CheckInterval,
				AppHealth: true,
			}.Registrations()
		}, s.logger)
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

// zoneLabel is the endpoint label of a zone (policy.LabelZone): a sidecar
// with a zone registers its instance with it, so that its callers' proxies
// know where it is.
const zoneLabel = "topology.kubernetes.io/zone"

// withZoneLabel is labels with zoneLabel set to zone, unless zone is empty
// or labels give a zone already (zoneLabel or "zone").
func withZoneLabel(labels map[string]string, zone string) map[string]string {
	if zone == "" || labels[zoneLabel] != "" || labels["zone"] != "" {
		return labels
	}
	out := make(map[string]string, len(labels)+1)
	maps.Copy(out, labels)
	out[zoneLabel] = zone
	return out
}
