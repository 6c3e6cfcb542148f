// Package dataplane is the proxy engine shared by gateway nodes and sidecars:
// it follows the control plane over xDS (dataplane/xdsclient), checks every
// resource against the supported subset (dataplane/xdscheck), and turns each
// accepted update into a new immutable runtime (route tables, clusters,
// listeners) swapped in atomically, make before break (docs/xds.md).
package dataplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/dataplane/filters"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/identity"
	"github.com/meshgate/meshgate/dataplane/meshtls"
	"github.com/meshgate/meshgate/dataplane/upstream"
	"github.com/meshgate/meshgate/dataplane/xdsclient"
)

const (
	// DefaultAdminAddress is used when Options.AdminAddress is empty: an
	// ephemeral loopback port (see Proxy.AdminAddr).
	DefaultAdminAddress = "127.0.0.1:0"
	// holdTimeout bounds how long a new route table waits for its clusters
	// and endpoints before it replaces the previous one anyway.
	holdTimeout = 5 * time.Second
)

// Options configure a Proxy.
type Options struct {
	// Node is the identity sent to the control plane (docs/xds.md); required.
	Node *corev3.Node
	// XDSAddresses of control-plane replicas, host:port; at least one.
	XDSAddresses []string
	// AdminAddress for the admin HTTP endpoints; DefaultAdminAddress when empty.
	AdminAddress string
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
	// Identity provides the proxy's certificate for mesh mTLS (the "default"
	// SDS secret). Nil: the proxy has no identity, and resources that need one
	// are NACKed.
	Identity identity.Provider
	// XDSCredentials secure the connection to the control plane; insecure
	// (plaintext) when nil.
	XDSCredentials credentials.TransportCredentials
	// FastHTTP1 serves listeners' body-less HTTP/1.x requests on a fast
	// path (dataplane/internal/h1server) instead of net/http's server,
	// which still serves everything else; false: net/http only.
	FastHTTP1 bool
	// ReusePort binds the listeners with SO_REUSEPORT (Linux), so that
	// several proxies of one host that set it, replicas of one Gateway,
	// serve the same addresses: the kernel spreads new connections among
	// them. False: a listener's address taken by another process is a
	// bind error (NACK), as it should be between unrelated proxies.
	ReusePort bool
	// MaxConnections is the most downstream connections each listener
	// holds at a time (docs/operations.md, "Connection limits"):
	// DefaultMaxConnections when zero, no limit when negative.
	MaxConnections int
	// DrainDelay is how long, once a stop began and the proxy left service
	// discovery, the listeners keep serving before they close (see
	// stopSequence); zero: they close at once.
	DrainDelay time.Duration
	// DrainTimeout bounds how long in-flight requests may take to finish
	// once the listeners are closed, or when a listener is removed;
	// DefaultDrainTimeout when zero.
	DrainTimeout time.Duration
	// Filters is the registry of the HTTP filters the proxy runs
	// (dataplane/filters): what an HttpConnectionManager's http_filters and
	// typed_per_filter_config may hold. Nil: filters.Default(), the
	// built-in filters.
	Filters *filters.Registry
	// AppHealth, when set, reports the health of the application behind the
	// proxy (a sidecar's app, which the sidecar probes) on the admin
	// GET /app_health: 200 when healthy, else 503, detail as the body. It is
	// called per admin request, never on the proxy's request path. Unset:
	// /app_health answers 404.
	AppHealth func() (healthy bool, detail string)
}

// Proxy is one running data plane: an xDS client, its listeners and clusters.
type Proxy struct {
	opts        Options
	logger      *slog.Logger
	client      *xdsclient.Client
	filters     *filters.Registry // checks resources, compiles HTTP filters
	filterStats *httpfilter.Stats // the HTTP filters' counters, for /stats

	// mu serialises updates (xDS responses and hold timers); never taken on
	// the request path.
	mu      sync.Mutex
	state   state
	running bool // Run is active: timers may fire, servers may start
	stopped bool
	// live objects
	accepted  map[string]*liveCluster // by name: the objects of the accepted clusters
	clusters  map[string]*liveCluster // by name: accepted clusters plus those kept for active routes
	servers   map[string]*server      // by bound address as configured
	holdTimer *time.Timer
	serveWG   sync.WaitGroup // Serve goroutines and background drains

	ready     atomic.Bool
	draining  atomic.Bool // a stop began: /ready fails
	adminAddr atomic.Pointer[string]
	stats     stats
	conns     connCounters
	// abort ends on StopNow: a stop skips what it still waits for.
	abort   context.Context
	stopNow context.CancelFunc
	// trust holds the accepted trust bundles by secret name, read by every
	// TLS handshake.
	trust atomic.Pointer[map[string]*meshtls.Bundle]
	// certs holds the accepted listener certificates by secret name, read
	// by every handshake of an HTTPS listener.
	certs atomic.Pointer[map[string]*tls.Certificate]
	// tracers are the listeners' Tracers (tracing.go).
	tracers tracers
	// accessLogs are the listeners' access-log Writers (accesslog.go).
	accessLogs accessLogs
	// metrics are served on the admin GET /metrics (metrics.go).
	metrics *proxyMetrics
	// clusterWatchers are the WatchClusters hooks (clusterwatch.go).
	clusterWatchers []func(map[string]*upstream.Cluster)
}

// liveCluster is a cluster object and the endpoints last given to it.
type liveCluster struct {
	cluster  *upstream.Cluster
	endpoint string                            // name of the ClusterLoadAssignment it follows ("" for STATIC)
	applied  *endpointv3.ClusterLoadAssignment // last installed
	// prepared holds the endpoints of preparedFor compiled for this
	// cluster by the EDS update that accepted them, until sync installs it.
	prepared    *upstream.Endpoints
	preparedFor *endpointv3.ClusterLoadAssignment
	secrets     []string  // SDS secrets its TLS contexts reference
	since       time.Time // when it was accepted
}

// stats are cheap counters for /stats.
type stats struct {
	accepted, rejected atomic.Int64
}

// New checks opts and returns a Proxy; nothing is bound before Run.
func New(opts Options) (*Proxy, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.AdminAddress == "" {
		opts.AdminAddress = DefaultAdminAddress
	}
	if _, _, err := net.SplitHostPort(opts.AdminAddress); err != nil {
		return nil, fmt.Errorf("admin address %q: %w", opts.AdminAddress, err)
	}
	switch {
	case opts.DrainDelay < 0:
		return nil, fmt.Errorf("drain delay %s: must not be negative", opts.DrainDelay)
	case opts.DrainTimeout < 0:
		return nil, fmt.Errorf("drain timeout %s: must not be negative", opts.DrainTimeout)
	case opts.DrainTimeout == 0:
		opts.DrainTimeout = DefaultDrainTimeout
	}
	if opts.MaxConnections == 0 {
		opts.MaxConnections = DefaultMaxConnections
	}
	if opts.Filters == nil {
		opts.Filters = filters.Default()
	}
	p := &Proxy{
		opts:        opts,
		logger:      opts.Logger,
		filters:     opts.Filters,
		filterStats: opts.Filters.NewStats(),
		state:       newState(),
		clusters:    make(map[string]*liveCluster),
		servers:     make(map[string]*server),
		conns:       connCounters{relief: newMemoryRelief()},
	}
	p.metrics = newProxyMetrics(p)
	p.abort, p.stopNow = context.WithCancel(context.Background())
	client, err := xdsclient.New(xdsclient.Options{
		Node:      opts.Node,
		Addresses: opts.XDSAddresses,
		Apply:     p.apply,
		Logger:    opts.Logger,
		// Nil means plaintext; the client fills in the default.
		TransportCredentials: opts.XDSCredentials,
	})
	if err != nil {
		return nil, fmt.Errorf("dataplane: %w", err)
	}
	p.client = client
	return p, nil
}

// Run serves the admin endpoints, the xDS stream and every listener it
// configures until ctx is done, then stops gracefully (stopSequence):
// readiness fails, the listeners keep serving for Options.DrainDelay, then
// close, and in-flight requests have up to Options.DrainTimeout to finish;
// StopNow cuts that short. It returns nil after a clean stop, or the error
// that prevented starting.
func (p *Proxy) Run(ctx context.Context) error { return p.run(ctx, nil) }

// run is Run; leave, when set, takes the proxy out of service discovery at
// the start of the stop (Role.Run).
func (p *Proxy) run(ctx context.Context, leave func(context.Context)) error {
	p.mu.Lock()
	if p.running || p.stopped {
		p.mu.Unlock()
		return errors.New("dataplane: Run called twice")
	}
	p.running = true
	p.mu.Unlock()

	adminLn, err := net.Listen("tcp", p.opts.AdminAddress)
	if err != nil {
		p.stop()
		return fmt.Errorf("dataplane: admin listener %s: %w", p.opts.AdminAddress, err)
	}
	addr := adminLn.Addr().String()
	p.adminAddr.Store(&addr)
	p.reportAdminAddress(addr)
	admin := &http.Server{Handler: p.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	p.serveWG.Add(1)
	go func() {
		defer p.serveWG.Done()
		if err := admin.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.logger.Error("admin server stopped", "error", err)
		}
	}()
	p.logger.Info("proxy starting", "node", p.opts.Node.GetId(), "admin", addr, "xds", p.opts.XDSAddresses)

	clientCtx, cancelClient := context.WithCancel(context.WithoutCancel(ctx))
	clientDone := make(chan struct{})
	go func() {
		defer close(clientDone)
		_ = p.client.Run(clientCtx) // returns only when clientCtx is done
	}()
	<-ctx.Done()

	stopSequence{
		delay:         p.opts.DrainDelay,
		timeout:       p.opts.DrainTimeout,
		abort:         p.abort,
		logger:        p.logger,
		failReadiness: func() { p.draining.Store(true) },
		leave:         leave,
		serving:       func() bool { return len(p.ListenerAddrs()) > 0 },
		closeListeners: func(ctx context.Context) {
			// The configuration is followed until the listeners close.
			cancelClient()
			<-clientDone
			p.stop()
			p.drainAll(ctx)
			_ = admin.Close()
		},
	}.run()
	p.serveWG.Wait()
	return nil
}

// reportAdminAddress adds the bound admin address to the node's metadata
// (xdsnode.KeyAdminAddress), so that the control plane can tell operator
// tools where the proxy's /metrics are. Run calls it before the admin
// server and the xDS client start, the node's only other readers.
func (p *Proxy) reportAdminAddress(addr string) {
	node := p.opts.Node
	if node.Metadata == nil {
		node.Metadata = &structpb.Struct{}
	}
	if node.Metadata.Fields == nil {
		node.Metadata.Fields = map[string]*structpb.Value{}
	}
	node.Metadata.Fields[xdsnode.KeyAdminAddress] = structpb.NewStringValue(addr)
}

// StopNow makes a stop in progress, or the next one, skip its remaining
// waits (drain delay, service discovery, in-flight requests): listeners and
// connections close at once. It does not start a stop: Run's context does.
func (p *Proxy) StopNow() { p.stopNow() }

// Draining reports whether a stop began (/ready answers 503 "draining").
func (p *Proxy) Draining() bool { return p.draining.Load() }

// stop marks the proxy stopped so no further update or timer changes anything.
func (p *Proxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	if p.holdTimer != nil {
		p.holdTimer.Stop()
	}
}

// drainAll shuts every listener down gracefully, then closes the clusters.
func (p *Proxy) drainAll(ctx context.Context) {
	p.mu.Lock()
	servers := p.servers
	clusters := p.clusters
	p.servers = map[string]*server{}
	p.clusters = map[string]*liveCluster{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Go(func() { s.shutdown(ctx, p.logger) })
	}
	wg.Wait()
	for _, lc := range clusters {
		lc.cluster.Close()
	}
	p.closeTracers(ctx)
	p.closeAccessLogs(ctx)
}

// AdminAddr is the bound admin address, "" until Run has bound it.
func (p *Proxy) AdminAddr() string {
	if a := p.adminAddr.Load(); a != nil {
		return *a
	}
	return ""
}

// Ready reports whether the first listener update was applied and every
// listener is bound.
func (p *Proxy) Ready() bool { return p.ready.Load() }

// ListenerAddrs maps each listener name to the address it is bound to (the
// actual port when the configuration asked for port 0).
func (p *Proxy) ListenerAddrs() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]string, len(p.servers))
	for _, s := range p.servers {
		// A listener with additional_addresses has a server per address:
		// its address is the one reported.
		if _, seen := out[s.listener]; !seen || s.address == p.state.listeners[s.listener].primary() {
			out[s.listener] = s.ln.Addr().String()
		}
	}
	return out
}
