// Package consulreg is how meshgate proxies register in Consul: the service
// registrations and health checks a sidecar or gateway writes to its local
// agent, and the service metadata keys that the control plane's catalog
// discovery reads back. It is shared by both sides, as api/token is.
package consulreg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshgate/meshgate/internal/backoff"
)

// Service metadata keys meshgate reads from (and its proxies write to)
// Consul registrations.
const (
	// MetaSidecar "true" marks an instance that is a meshgate sidecar's
	// inbound listener: calls to it use mTLS.
	MetaSidecar = "meshgate-sidecar"
	// MetaApp "true" marks an application registered beside its sidecar
	// (`meshgate sidecar --register-app`): it is never an endpoint while
	// that sidecar is registered, healthy or not.
	MetaApp = "meshgate-app"
	// MetaSidecarID, on an application registration, is the service ID of
	// its sidecar's registration.
	MetaSidecarID = "meshgate-sidecar-id"
	// MetaAppAddress, on a sidecar registration, is its application's
	// host:port.
	MetaAppAddress = "meshgate-app-address"
	// MetaNamespace is the meshgate namespace of the service (default
	// "default").
	MetaNamespace = "meshgate-namespace"
	// MetaPort is the port number clients call the service on (the
	// Service's port, e.g. 80 in http://orders:80/); default 80.
	MetaPort = "meshgate-port"
	// MetaProtocol is HTTP (default), HTTP2 or GRPC (HTTP2 to the endpoints).
	MetaProtocol = "meshgate-protocol"
	// MetaGateway "true" marks a gateway node's registration: it is not a
	// service endpoint.
	MetaGateway = "meshgate-gateway"
)

// Defaults of RegisterOptions.
const (
	// retryBackoff is the first delay after a failed registration; it
	// doubles up to maxRetryBackoff, or the resync interval when shorter
	// (internal/backoff).
	retryBackoff = 100 * time.Millisecond
	// maxRetryBackoff caps the delay between attempts while the agent is
	// unreachable, so that once it is back (restarted, a Consul outage
	// over) the proxy is registered again within about a second: waiting up
	// to the resync interval kept a ready proxy out of discovery for
	// seconds more (and its check still starts critical). An attempt is
	// one small request to the local agent.
	maxRetryBackoff       = time.Second
	DefaultResyncInterval = 5 * time.Second
	DefaultCheckInterval  = time.Second
	// CheckTimeout bounds one run of a registration's HTTP checks. It does
	// not follow a short interval: the checks ask the proxy's own admin
	// endpoints, which answer at once, and a timeout of a few hundred
	// milliseconds turned a loaded machine's scheduling delay into a
	// critical instance (Consul runs checks at most every second anyway).
	CheckTimeout = 2 * time.Second
	// DefaultDeregisterAfter is how long a registration may stay critical
	// (a crashed proxy) before Consul removes it; Consul's minimum is 1m.
	DefaultDeregisterAfter = time.Minute
	// GatewayService is the Consul service gateway nodes register as.
	GatewayService = "meshgate-gateway"
	// MetaGatewayName is the Gateway a gateway node serves.
	MetaGatewayName = "meshgate-gateway-name"
)

// RegisterOptions configure how a proxy keeps itself registered.
type RegisterOptions struct {
	// Client talks to the local Consul agent; required.
	Client *api.Client
	// Services to register (a sidecar, and maybe its application); each
	// needs an ID.
	Services []*api.AgentServiceRegistration
	// ResyncInterval is how often the registrations are checked and
	// restored (after an agent lost its state); DefaultResyncInterval when
	// zero.
	ResyncInterval time.Duration
	Logger         *slog.Logger
}

// Register registers the services and keeps them registered until ctx is
// done (re-registering what the agent lost, retrying with backoff while it
// is unreachable), then deregisters them, in the reverse order: an
// application registered beside its sidecar (listed after it) goes first,
// so that it is never an endpoint on its own. It returns nil once
// deregistered or when deregistration failed (logged): a proxy's
// registration never stops the proxy.
func Register(ctx context.Context, opts RegisterOptions) error {
	if opts.Client == nil || len(opts.Services) == 0 {
		return errors.New("consul registration: a client and at least one service are required")
	}
	for _, s := range opts.Services {
		if s.ID == "" {
			return fmt.Errorf("consul registration of %s: an ID is required", s.Name)
		}
	}
	if opts.ResyncInterval <= 0 {
		opts.ResyncInterval = DefaultResyncInterval
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	agent := opts.Client.Agent()
	retry := backoff.New(retryBackoff, min(opts.ResyncInterval, maxRetryBackoff))
	for {
		err := ensureRegistered(ctx, agent, opts.Services, logger)
		wait := opts.ResyncInterval
		if err != nil && ctx.Err() == nil {
			wait = retry.Next()
			if retry.Failures() == 1 {
				logger.Warn("consul registration failed: retrying", "error", err.Error())
			}
		} else {
			retry.Reset()
		}
		if !backoff.Sleep(ctx, wait) {
			break
		}
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, s := range slices.Backward(opts.Services) {
		if err := agent.ServiceDeregisterOpts(s.ID, (&api.QueryOptions{}).WithContext(dctx)); err != nil {
			logger.Warn("consul deregistration failed: the service's check removes it", "id", s.ID, "error", err.Error())
			continue
		}
		logger.Info("deregistered from consul", "service", s.Name, "id", s.ID)
	}
	return nil
}

// ensureRegistered registers those of services the agent does not have.
func ensureRegistered(ctx context.Context, agent *api.Agent, services []*api.AgentServiceRegistration, logger *slog.Logger) error {
	have, err := agent.ServicesWithFilterOpts("", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("list agent services: %w", err)
	}
	for _, s := range services {
		if _, ok := have[s.ID]; ok {
			continue
		}
		if err := agent.ServiceRegisterOpts(s, api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)); err != nil {
			return fmt.Errorf("register %s (%s): %w", s.Name, s.ID, err)
		}
		logger.Info("registered in consul", "service", s.Name, "id", s.ID, "address", net.JoinHostPort(s.Address, fmt.Sprint(s.Port)))
	}
	return nil
}

// SidecarRegistration describes a sidecar for RegisterOptions.
type SidecarRegistration struct {
	Service, Namespace string
	// InboundAddress is the sidecar's inbound listener: the endpoint.
	InboundAddress string
	// AppAddress is the application's host:port.
	AppAddress string
	// AdminAddress serves /ready, the health check.
	AdminAddress string
	// Labels become "key=value" tags.
	Labels map[string]string
	// RegisterApp also registers the application (meta MetaApp), with a
	// check that follows the sidecar's.
	RegisterApp bool
	// AppHealth adds a second check, of the admin /app_health: the health
	// of the app as the sidecar probes it. It starts critical and, unlike
	// the /ready check, never deregisters the instance: a dead app takes
	// it out of rotation until the app is back.
	AppHealth bool
	// CheckInterval of the HTTP checks; DefaultCheckInterval when zero.
	CheckInterval time.Duration
	// DeregisterAfter a critical check; DefaultDeregisterAfter when zero.
	DeregisterAfter time.Duration
}

// Registrations returns the sidecar's registration and, with RegisterApp,
// the application's.
func (r SidecarRegistration) Registrations() ([]*api.AgentServiceRegistration, error) {
	host, port, err := splitHostPort(r.InboundAddress)
	if err != nil {
		return nil, fmt.Errorf("inbound address: %w", err)
	}
	id := r.Service + "-sidecar-" + idPart(r.InboundAddress)
	meta := map[string]string{MetaSidecar: "true", MetaAppAddress: r.AppAddress}
	if r.Namespace != "" && r.Namespace != "default" {
		meta[MetaNamespace] = r.Namespace
	}
	sidecar := &api.AgentServiceRegistration{
		ID: id, Name: r.Service, Address: host, Port: port, Tags: tags(r.Labels), Meta: meta,
		Check: httpCheck("meshgate sidecar ready", r.AdminAddress, r.CheckInterval, r.DeregisterAfter),
	}
	if r.AppHealth {
		sidecar.Check.CheckID = "service:" + id
		sidecar.Checks = api.AgentServiceChecks{appHealthCheck("service:"+id+":app", r.AdminAddress, r.CheckInterval)}
	}
	out := []*api.AgentServiceRegistration{sidecar}
	if r.RegisterApp {
		appHost, appPort, err := splitHostPort(r.AppAddress)
		if err != nil {
			return nil, fmt.Errorf("app address: %w", err)
		}
		appMeta := map[string]string{MetaApp: "true", MetaSidecarID: id}
		if ns := meta[MetaNamespace]; ns != "" {
			appMeta[MetaNamespace] = ns
		}
		out = append(out, &api.AgentServiceRegistration{
			ID: id + "-app", Name: r.Service, Address: appHost, Port: appPort, Tags: tags(r.Labels), Meta: appMeta,
			Check: &api.AgentServiceCheck{
				Name: "meshgate sidecar of this app", AliasService: id,
				DeregisterCriticalServiceAfter: durationOr(r.DeregisterAfter, DefaultDeregisterAfter).String(),
			},
		})
	}
	return out, nil
}

// GatewayRegistration describes a gateway node for RegisterOptions.
type GatewayRegistration struct {
	Name, Namespace string
	// AdminAddress serves /ready, the health check, and is the
	// registration's address.
	AdminAddress    string
	Labels          map[string]string
	CheckInterval   time.Duration
	DeregisterAfter time.Duration
}

// Registration returns the gateway node's registration: service
// GatewayService, meta MetaGateway and MetaGatewayName.
func (r GatewayRegistration) Registration() (*api.AgentServiceRegistration, error) {
	host, port, err := splitHostPort(r.AdminAddress)
	if err != nil {
		return nil, fmt.Errorf("admin address: %w", err)
	}
	meta := map[string]string{MetaGateway: "true", MetaGatewayName: r.Name}
	if r.Namespace != "" && r.Namespace != "default" {
		meta[MetaNamespace] = r.Namespace
	}
	return &api.AgentServiceRegistration{
		ID: GatewayService + "-" + r.Name + "-" + idPart(r.AdminAddress), Name: GatewayService,
		Address: host, Port: port, Tags: tags(r.Labels), Meta: meta,
		Check: httpCheck("meshgate gateway ready", r.AdminAddress, r.CheckInterval, r.DeregisterAfter),
	}, nil
}

// httpCheck checks the proxy's admin /ready; it starts critical, so the
// instance gets traffic only once the proxy has its configuration.
func httpCheck(name, admin string, interval, deregister time.Duration) *api.AgentServiceCheck {
	interval = durationOr(interval, DefaultCheckInterval)
	return &api.AgentServiceCheck{
		Name: name, HTTP: "http://" + admin + "/ready", Method: "GET",
		Interval: interval.String(), Timeout: CheckTimeout.String(),
		Status:                         api.HealthCritical,
		DeregisterCriticalServiceAfter: durationOr(deregister, DefaultDeregisterAfter).String(),
	}
}

// appHealthCheck checks the sidecar's admin /app_health, which answers from
// the sidecar's own probe of its app (the agent never connects to the app).
// It starts critical, and has no DeregisterCriticalServiceAfter: a dead app
// makes the instance critical, not unregistered.
func appHealthCheck(id, admin string, interval time.Duration) *api.AgentServiceCheck {
	interval = durationOr(interval, DefaultCheckInterval)
	return &api.AgentServiceCheck{
		CheckID: id, Name: "meshgate sidecar: app health", HTTP: "http://" + admin + "/app_health", Method: "GET",
		Interval: interval.String(), Timeout: CheckTimeout.String(),
		Status: api.HealthCritical,
	}
}

func durationOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func splitHostPort(addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := net.LookupPort("tcp", portStr)
	if err != nil || port < 1 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	return host, port, nil
}

// idPart makes an address usable in a service ID.
func idPart(addr string) string {
	return strings.NewReplacer(":", "-", "[", "", "]", "").Replace(addr)
}

// tags renders labels as sorted "key=value" tags.
func tags(labels map[string]string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		out = append(out, k+"="+labels[k])
	}
	return out
}

// ProxyOptions are how a gateway node or a sidecar registers itself in
// Consul while it runs (docs/consul.md), shared by both roles.
type ProxyOptions struct {
	// Client of the local Consul agent; nil: no registration.
	Client *api.Client
	// Labels of the registration ("key=value" tags).
	Labels map[string]string
	// CheckInterval of the registration's health checks (the admin /ready;
	// a sidecar's /app_health too); DefaultCheckInterval when zero.
	CheckInterval time.Duration
}

// KeepRegistered waits until adminAddr reports the proxy's bound admin
// address, then runs Register with the registrations built for it.
func KeepRegistered(ctx context.Context, client *api.Client, adminAddr func() string,
	registrations func(admin string) ([]*api.AgentServiceRegistration, error), logger *slog.Logger) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	admin := adminAddr()
	for admin == "" {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			admin = adminAddr()
		}
	}
	regs, err := registrations(admin)
	if err != nil {
		return fmt.Errorf("consul registration: %w", err)
	}
	return Register(ctx, RegisterOptions{Client: client, Services: regs, Logger: logger})
}

// NewClient returns a Consul API client for address (host:port or a URL;
// empty: $CONSUL_HTTP_ADDR, else 127.0.0.1:8500) with token (empty:
// $CONSUL_HTTP_TOKEN).
func NewClient(address, token string) (*api.Client, error) {
	cfg := api.DefaultConfig() // reads CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, ...
	if address != "" {
		cfg.Address = address
	}
	if token != "" {
		cfg.Token = token
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", cfg.Address, err)
	}
	return client, nil
}
