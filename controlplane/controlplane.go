// Package controlplane runs meshgate's control plane: it loads the policy
// (files, or a PolicySource such as Consul KV) and the services of a
// Discovery source (the Consul catalog), validates them as one set, compiles
// them into a model, serves that model to proxies over xDS, watches every
// source and reloads on change (keeping the previous model when a reload is
// invalid or a source is unreachable), and answers the admin HTTP API. It runs the mesh
// certificate authority: xDS and the CA service share one TLS port, xDS
// streams must present a client certificate whose SPIFFE ID matches the
// node, and the admin API requires the admin token outside dev mode.
//
// What proxies serve is protected from sources that are not there yet or
// that empty by accident:
//   - until every source it is configured with has synced once (the policy
//     read and valid, the discovery's first snapshot in), the control plane
//     pushes nothing: proxies keep the configuration they have, new ones
//     wait (Status.Serving, Status.WaitingFor);
//   - a destructive policy change (a file that becomes empty, no document
//     left, a Gateway losing every route) is applied only once the policy
//     has stayed the same for Options.DestructiveHold (Status.HeldPolicyChange);
//   - a push that would take every route or every endpoint from a proxy
//     without a policy change is held for that proxy (see package xds).
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshgate/meshgate/controlplane/acme"
	"github.com/meshgate/meshgate/controlplane/ca"
	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/controlplane/state"
	"github.com/meshgate/meshgate/controlplane/tokens"
	"github.com/meshgate/meshgate/controlplane/xds"
	"github.com/meshgate/meshgate/policy"
)

// Defaults for Options.
const (
	DefaultXDSAddress   = "127.0.0.1:15010"
	DefaultAdminAddress = "127.0.0.1:15000"
	DefaultDebounce     = 200 * time.Millisecond
	// DefaultDiscoveryDebounce is short: endpoint changes must reach the
	// proxies fast.
	DefaultDiscoveryDebounce = 10 * time.Millisecond
	// DefaultDiscoverySyncTimeout bounds the wait for the first discovery
	// snapshot before the first load, and is when the control plane first
	// warns that it still waits for a source.
	DefaultDiscoverySyncTimeout = 5 * time.Second
)

// syncWarnInterval is how often the control plane repeats that it still
// waits for the first sync of a source.
const syncWarnInterval = 30 * time.Second

// policySourceRetry is how often a policy source that could not be read is
// read again while the control plane waits for its first sync.
const policySourceRetry = time.Second

// Discovery is a source of services, e.g. the Consul catalog.
type Discovery interface {
	// Run watches the source until ctx is done, calling changed after every
	// change of Services.
	Run(ctx context.Context, changed func()) error
	// Services is the current snapshot (the last known one while the
	// source is unreachable), as typed values: each service's definition
	// is validated with the policy, its endpoints go to the model's
	// endpoint index. Each one's Source names where it comes from (e.g.
	// "consul:catalog/orders"); the control plane reads but never modifies
	// them. A service that did not change since the previous snapshot
	// should be the same value: its endpoints are not checked again.
	Services() []*model.DiscoveredService
	// WaitSynced returns once a first complete snapshot is in.
	WaitSynced(ctx context.Context) error
}

// PolicySource is where the policy comes from instead of ConfigPaths, e.g.
// Consul KV.
type PolicySource interface {
	// Files returns every policy file, in load order.
	Files(ctx context.Context) ([]policy.File, error)
	// Watch calls changed whenever Files may return something new, until
	// ctx is done.
	Watch(ctx context.Context, changed func()) error
}

// AdminTokenFile is the name, in the data directory, of the admin API token.
const AdminTokenFile = "admin-token"

// Options configure a control plane.
type Options struct {
	// ConfigPaths are policy files or directories.
	ConfigPaths []string
	// PolicySource, when set, supplies the policy instead of ConfigPaths.
	PolicySource PolicySource
	// Discovery, when set, adds its services to the policy: a name defined
	// both there and as a static Service is an error (the reload is
	// rejected).
	Discovery Discovery
	// DiscoveryDebounce is how long discovery changes are gathered before a
	// reload; DefaultDiscoveryDebounce when zero.
	DiscoveryDebounce time.Duration
	// DiscoverySyncTimeout bounds the wait for the first discovery snapshot
	// before the first load; DefaultDiscoverySyncTimeout when zero. The
	// control plane keeps waiting after it (nothing is pushed to proxies
	// before every source has synced), with a warning then and every 30 s.
	DiscoverySyncTimeout time.Duration
	// XDSAddress is where xDS and the CA are served (TLS); port 0 picks a
	// free port.
	XDSAddress string
	// AdminAddress is where the admin HTTP API is served; port 0 picks one.
	AdminAddress string
	// Debounce is how long the files must be quiet before a reload.
	Debounce time.Duration
	// DestructiveHold is how long a destructive policy change (see
	// destructiveChange: a policy file that becomes empty, no document left,
	// a Gateway that loses every route) must stay unchanged before it is
	// applied, with a warning; DefaultDestructiveHold when zero, no hold
	// when negative. Meanwhile the applied policy stays (with the
	// discovered services as they change).
	DestructiveHold time.Duration
	Logger          *slog.Logger
	// OnReady, if set, is called once both servers listen, with their
	// addresses.
	OnReady func(xdsAddr, adminAddr net.Addr)
	// Load validates the policy files with the definitions of the
	// discovered services (policy.Input.Services); nil means
	// policy.LoadInput through the control plane's policy.Cache (documents
	// unchanged since the last reload are not decoded again). A reload
	// whose policy files and discovered definitions are those of the last
	// one does not call it: only endpoints changed.
	Load func(in policy.Input) (*policy.Set, error)
	// Evaluate validates the policy as Load does, resource by resource
	// (policy.Evaluate): the accepted resources are served, the rejected
	// ones keep their last good version. nil means policy.Evaluate through
	// the control plane's policy.Cache, or, when Load is set, Load (then
	// any error rejects the whole policy, as before per-resource
	// acceptance).
	Evaluate func(in policy.Input) *policy.Result
	// DataDir holds the control plane's state (CA roots, join tokens, the
	// admin token); empty means DefaultDataDir(), or, with Dev, memory.
	DataDir string
	// Store replaces the file store in DataDir (tests, replicated stores).
	Store state.Store
	// CACertFile and CAKeyFile supply the CA's signing certificate and key
	// instead of a generated root.
	CACertFile, CAKeyFile string
	// Dev serves the admin API without authentication: only `meshgate dev`
	// sets it.
	Dev bool
	// ACMERenewCheckInterval is how often the certificates obtained over
	// ACME are checked for renewal; acme.DefaultRenewCheckInterval when
	// zero.
	ACMERenewCheckInterval time.Duration
	// TraceExporter, when the mesh traces (MeshConfig spec.tracing), is
	// where the control plane's own spans go; nil means OTLP to the mesh's
	// collector (tracing.go).
	TraceExporter func(t *model.Tracing) (sdktrace.SpanExporter, error)
	// ServiceAddressing is the range the services' virtual IPs are taken
	// from and the DNS domain of their names (docs/transparent.md); the
	// zero value means model.DefaultServiceVIPRange and
	// servicemeta.DefaultDNSDomain. An invalid one is an error of New.
	ServiceAddressing model.ServiceAddressing
}

// DefaultDataDir is $XDG_STATE_HOME/meshgate, else ~/.local/state/meshgate.
func DefaultDataDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "meshgate")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".meshgate", "state")
	}
	return filepath.Join(home, ".local", "state", "meshgate")
}

// Status is what GET /status reports.
type Status struct {
	Version    string    `json:"version"`
	LastReload time.Time `json:"lastReload"`
	LastError  string    `json:"lastError"`
	// Errors are the problems of the policy being served (each
	// file:line: field: message), or of the last reload that failed.
	Errors []string `json:"errors,omitempty"`
	// RejectedResources counts the resources not serving as written
	// (rejected, or serving their last good version); GET /resources
	// says which and why.
	RejectedResources int `json:"rejectedResources"`
	// Serving: every source has synced once and the first model was
	// pushed. Until then no proxy is given a configuration.
	Serving bool `json:"serving"`
	// WaitingFor names, while not serving, the sources whose first sync is
	// not complete: "policy files" (or the policy source, e.g. "consul
	// kv") until read and valid, the discovery (e.g. "consul catalog")
	// until its first snapshot is in.
	WaitingFor []string `json:"waitingFor,omitempty"`
	// HeldPolicyChange is a destructive policy change not applied yet.
	HeldPolicyChange *HeldPolicyChange `json:"heldPolicyChange,omitempty"`
	Proxies          []xds.ProxyStatus `json:"proxies"`
	// ProxyCounts sums Proxies up: by role, on the latest configuration.
	ProxyCounts ProxyCounts `json:"proxyCounts"`
}

// HeldPolicyChange is a destructive policy change waiting for the policy to
// stay the same for Options.DestructiveHold.
type HeldPolicyChange struct {
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
	// ApplyAt is when it is applied if the policy does not change again.
	ApplyAt time.Time `json:"applyAt"`
}

// ControlPlane is one control plane. Create it with New, then Run it.
type ControlPlane struct {
	opts       Options
	logger     *slog.Logger
	xds        *xds.Server
	store      state.Store
	ca         *ca.CA
	caRef      atomic.Pointer[ca.CA] // cp.ca, for callbacks that may run before New returns
	caService  *ca.Service
	serving    *ca.ServingCert
	tokens     *tokens.Registry
	adminToken string
	xdsLis     net.Listener
	adminLis   net.Listener
	model      atomic.Pointer[model.Model]
	issued     *issuedExpiry
	metrics    *cpMetrics // served on the admin GET /metrics (metrics.go)
	// policyCache keeps the decoded documents of the last reload, for the
	// next (reloads are serial: Run's initial reload, then its reload loop).
	policyCache *policy.Cache
	// compiled keeps what the last reloads compiled, for the next (see
	// compile; touched by reloads only).
	compiled compileMemo

	// traces sends the control plane's own spans when the mesh traces
	// (tracing.go); touched by reloads only.
	traces cpTracer

	// discoverySynced: Options.Discovery's first snapshot is in.
	discoverySynced atomic.Bool
	// sourceFailing: the last reload could not read the policy source.
	sourceFailing atomic.Bool
	// servingCh is closed when the first model is pushed.
	servingCh chan struct{}
	// requestReload asks Run's reload loop for a reload; nil outside Run.
	requestReload func()

	// Reload state, touched by reload only (reloads are serial).
	applied *policySummary
	// lastGood is the set of the served model: policy.Input.LastGood of
	// the next evaluation.
	lastGood *policy.Set
	// watchFiles, in Run with config paths, watches the certificate files
	// the served policy names (watcher.watchFiles); nil otherwise.
	watchFiles func([]string)
	// loggedProblems is the text of the problems last logged.
	loggedProblems string // the policy of the served model
	hold           destructiveHold
	holdTimer      *time.Timer

	mu         sync.Mutex
	version    string
	lastReload time.Time
	lastError  string
	// configServed: the first model was pushed.
	configServed bool
	// result is the evaluation of the policy served (or, when a reload
	// failed, of that reload's policy when it was evaluated).
	result     *policy.Result
	heldChange *HeldPolicyChange

	// acme obtains and renews the certificates of the listeners that name
	// an ACMEIssuer (acme.go); set by Run.
	acme *acme.Manager

	// revocations and guard: revoked tokens, identities and enrolments,
	// and the connections they close (revocation.go).
	revocations *ca.Revocations
	guard       *connGuard
}

// Run serves until ctx is done: New, then Run.
func Run(ctx context.Context, opts Options) error {
	cp, err := New(ctx, opts)
	if err != nil {
		return err
	}
	return cp.Run(ctx)
}

// New prepares a control plane: it opens the state, loads or creates the CA
// and the admin token, and listens on both addresses. Run serves; if Run is
// never called, Close releases the listeners.
func New(ctx context.Context, opts Options) (*ControlPlane, error) {
	if len(opts.ConfigPaths) == 0 && opts.PolicySource == nil && opts.Discovery == nil {
		return nil, errors.New("controlplane: no config paths, policy source or discovery")
	}
	if len(opts.ConfigPaths) > 0 && opts.PolicySource != nil {
		return nil, errors.New("controlplane: config paths and a policy source are exclusive")
	}
	if opts.DiscoveryDebounce <= 0 {
		opts.DiscoveryDebounce = DefaultDiscoveryDebounce
	}
	if opts.DiscoverySyncTimeout <= 0 {
		opts.DiscoverySyncTimeout = DefaultDiscoverySyncTimeout
	}
	if opts.XDSAddress == "" {
		opts.XDSAddress = DefaultXDSAddress
	}
	if opts.AdminAddress == "" {
		opts.AdminAddress = DefaultAdminAddress
	}
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.DestructiveHold == 0 {
		opts.DestructiveHold = DefaultDestructiveHold
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := opts.ServiceAddressing.Check(); err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	policyCache := policy.NewCache()
	if opts.Evaluate == nil && opts.Load == nil {
		opts.Evaluate = policyCache.Evaluate
	}
	cp := &ControlPlane{opts: opts, logger: opts.Logger, xds: xds.New(ctx, opts.Logger), issued: newIssuedExpiry(),
		policyCache: policyCache, servingCh: make(chan struct{}), traces: cpTracer{exporter: opts.TraceExporter}}
	cp.compiled.addressing = opts.ServiceAddressing
	empty, _ := model.Compile(nil) // an empty set always compiles
	cp.model.Store(empty)
	cp.metrics = newCPMetrics(cp)
	cp.xds.SetObserver(cp.metrics)

	cp.store = opts.Store
	if cp.store == nil {
		switch {
		case opts.DataDir == "" && opts.Dev:
			cp.store = state.NewMemory()
		default:
			dir := opts.DataDir
			if dir == "" {
				dir = DefaultDataDir()
			}
			fs, err := state.OpenFile(dir)
			if err != nil {
				return nil, fmt.Errorf("controlplane: %w", err)
			}
			cp.store = fs
		}
	}
	var err error
	cp.ca, err = ca.New(ctx, ca.Options{
		Store: cp.store, CertFile: opts.CACertFile, KeyFile: opts.CAKeyFile, Logger: opts.Logger.With("component", "ca"),
		// A rotation step taken by another replica sharing the store reaches
		// this replica's proxies too (ca.Run reloads it).
		OnChange: func(ca.Status) { cp.pushTrustBundle() },
	})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	cp.caRef.Store(cp.ca)
	cp.tokens, err = tokens.New(tokens.Options{Store: cp.store, PinRoot: cp.ca.SignerDER})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	cp.caService = ca.NewService(cp.ca, cp.tokens, cp.meshSettings, opts.Logger.With("component", "ca"))
	cp.caService.OnIssue(cp.issued.issued)
	cp.setUpRevocation()
	cp.xds.SetAuthorizer(cp.authorizeProxy)
	if !opts.Dev {
		if cp.adminToken, err = loadAdminToken(ctx, cp.store); err != nil {
			return nil, fmt.Errorf("controlplane: %w", err)
		}
		if opts.Store != nil && opts.DataDir != "" {
			// The state lives elsewhere (Consul): keep a copy of the admin
			// token where the CLI looks for it (--data-dir).
			local, err := state.OpenFile(opts.DataDir)
			if err == nil {
				err = local.Put(ctx, AdminTokenFile, []byte(cp.adminToken+"\n"))
			}
			if err != nil {
				return nil, fmt.Errorf("controlplane: admin token copy in %s: %w", opts.DataDir, err)
			}
		}
	}

	var lc net.ListenConfig
	cp.xdsLis, err = lc.Listen(ctx, "tcp", opts.XDSAddress)
	if err != nil {
		return nil, fmt.Errorf("listen for xds: %w", err)
	}
	cp.adminLis, err = lc.Listen(ctx, "tcp", opts.AdminAddress)
	if err != nil {
		cp.xdsLis.Close()
		return nil, fmt.Errorf("listen for admin: %w", err)
	}
	cp.serving = ca.NewServingCert(cp.ca, cp.meshSettings, cp.xdsLis.Addr())
	return cp, nil
}

// XDSAddr is where xDS and the CA service listen.
func (cp *ControlPlane) XDSAddr() net.Addr { return cp.xdsLis.Addr() }

// AdminAddr is where the admin API listens.
func (cp *ControlPlane) AdminAddr() net.Addr { return cp.adminLis.Addr() }

// TrustBundlePEM is the mesh's current trust bundle: what a proxy given
// --ca-file instead of a token's pin trusts.
func (cp *ControlPlane) TrustBundlePEM() []byte { return cp.ca.TrustBundlePEM() }

// CreateToken mints a join token for service in namespace (empty: default),
// valid for ttl (0: 24h). It is how `meshgate dev` enrols its own proxies.
func (cp *ControlPlane) CreateToken(ctx context.Context, service, namespace string, ttl time.Duration) (string, error) {
	tok, _, err := cp.tokens.Create(ctx, service, namespace, ttl)
	return tok, err
}

// Close releases the listeners of a control plane that was not run.
func (cp *ControlPlane) Close() error {
	return errors.Join(cp.xdsLis.Close(), cp.adminLis.Close())
}

// meshSettings are the trust domain and certificate TTL of the current
// model, with their defaults.
func (cp *ControlPlane) meshSettings() (string, time.Duration) {
	mesh := cp.model.Load().Mesh
	td, ttl := mesh.TrustDomain, mesh.CertificateTTL
	if td == "" {
		td = policy.DefaultTrustDomain
	}
	if ttl < policy.MinCertificateTTL {
		ttl = policy.DefaultCertificateTTL
	}
	return td, ttl
}

// caReloadInterval is how often the CA re-reads its state from the store, in
// case a change by another replica was missed (with Consul it also watches).
const caReloadInterval = 30 * time.Second

// pushTrustBundle serves the CA's current trust bundle to every proxy. It may
// be called by the CA while New is still building it: then there is nothing
// to push yet.
func (cp *ControlPlane) pushTrustBundle() {
	c := cp.caRef.Load()
	if c == nil {
		return
	}
	cp.xds.SetTrustBundle(context.Background(), c.TrustBundlePEM())
}

// Run serves until ctx is done. Until every source has synced once (the
// policy read and valid, the discovery's first snapshot in), it accepts and
// tracks proxies but pushes no configuration; an invalid or unreadable
// policy is logged, and fixing it starts serving.
func (cp *ControlPlane) Run(ctx context.Context) error {
	opts := cp.opts
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	xdsLis, adminLis := cp.xdsLis, cp.adminLis
	defer xdsLis.Close()
	defer adminLis.Close()

	reloads := make(chan struct{}, 1)
	requestReload := func() {
		select {
		case reloads <- struct{}{}:
		default: // one is pending already
		}
	}
	cp.requestReload = requestReload
	// The goroutines of Run: the first to fail (serving xDS or admin) ends
	// Run with its error.
	group, ctx := errgroup.WithContext(ctx)
	defer func() {
		cancel()
		_ = group.Wait()
		if cp.holdTimer != nil {
			cp.holdTimer.Stop()
		}
		cp.traces.shutdown() // the reloads are over
	}()
	group.Go(func() error {
		cp.ca.Run(ctx, caReloadInterval)
		return nil
	})
	group.Go(func() error {
		cp.guard.run(ctx, cp.store)
		return nil
	})
	if d := opts.Discovery; d != nil {
		trigger, stopTrigger := debounced(opts.DiscoveryDebounce, requestReload)
		defer stopTrigger()
		group.Go(func() error {
			if err := d.Run(ctx, trigger); err != nil && ctx.Err() == nil {
				cp.logger.Error("service discovery stopped", "error", err)
			}
			return nil
		})
		group.Go(func() error {
			// However late the first snapshot comes, it is loaded.
			if d.WaitSynced(ctx) == nil && !cp.discoverySynced.Swap(true) {
				cp.logger.Info("service discovery synced", "source", sourceName(d, "service discovery"))
				requestReload()
			}
			return nil
		})
		syncCtx, stop := context.WithTimeout(ctx, opts.DiscoverySyncTimeout)
		if d.WaitSynced(syncCtx) == nil {
			cp.discoverySynced.Store(true)
		}
		stop()
	}

	cp.startACME(ctx, group, requestReload)
	cp.xds.SetTrustBundle(ctx, cp.ca.TrustBundlePEM())
	_ = cp.reload(ctx)
	group.Go(func() error {
		cp.watchSync(ctx, requestReload)
		return nil
	})
	if _, err := cp.serving.Certificate(); err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}

	var watcher *watcher
	if len(opts.ConfigPaths) > 0 {
		w, err := newWatcher(opts.ConfigPaths)
		if err != nil {
			return err
		}
		defer w.Close()
		watcher = w
		cp.watchFiles = func(paths []string) { w.watchFiles(paths, cp.logger) }
		if cp.lastGood != nil {
			cp.watchFiles(cp.lastGood.WatchedFiles())
		}
	}

	g := xds.NewGRPCServer(
		grpc.Creds(cp.guard.credentials(credentials.NewTLS(cp.ca.ServerTLSConfig(cp.serving)))),
	)
	cp.xds.Register(g)
	cp.caService.Register(g)
	admin := &http.Server{Handler: cp.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	group.Go(func() error {
		if err := g.Serve(xdsLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve xds on %s: %w", xdsLis.Addr(), err)
		}
		return nil
	})
	group.Go(func() error {
		if err := admin.Serve(adminLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve admin on %s: %w", adminLis.Addr(), err)
		}
		return nil
	})
	group.Go(func() error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-reloads:
				_ = cp.reload(ctx)
			}
		}
	})
	if watcher != nil {
		group.Go(func() error {
			watcher.run(ctx, opts.Debounce, cp.logger, requestReload)
			return nil
		})
	}
	if src := opts.PolicySource; src != nil {
		trigger, stopTrigger := debounced(opts.Debounce, requestReload)
		defer stopTrigger()
		group.Go(func() error {
			if err := src.Watch(ctx, trigger); err != nil && ctx.Err() == nil {
				cp.logger.Error("policy source watch stopped", "error", err)
			}
			return nil
		})
	}
	cp.logger.Info("control plane serving", "xds", xdsLis.Addr().String(), "admin", adminLis.Addr().String(),
		"config", opts.ConfigPaths, "adminAuth", !opts.Dev)
	if opts.OnReady != nil {
		opts.OnReady(xdsLis.Addr(), adminLis.Addr())
	}

	<-ctx.Done() // stopped, or a server failed
	cancel()
	g.Stop() // xDS streams never end on their own: stop rather than drain
	shutdownCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	_ = admin.Shutdown(shutdownCtx)
	return group.Wait()
}

// errNotSynced: the discovery has not delivered its first snapshot; no
// policy is loaded without it (a route to a discovered service would not
// validate).
var errNotSynced = errors.New("service discovery not synced yet")

// readPolicy reads the policy files, or the policy source's; a policy source
// that cannot be read marks cp.sourceFailing. A policy file that cannot be
// read on its own is not an error: it is in policyInput.readErrors (its
// last good resources keep serving); a configured path that cannot be read
// at all is.
func (cp *ControlPlane) readPolicy(ctx context.Context) (policyInput, error) {
	var files []policy.File
	switch {
	case cp.opts.PolicySource != nil:
		pf, err := cp.opts.PolicySource.Files(ctx)
		cp.sourceFailing.Store(err != nil)
		if err != nil {
			return policyInput{}, fmt.Errorf("policy source: %w", err)
		}
		files = pf
	case len(cp.opts.ConfigPaths) > 0:
		pf, fileErrs, err := readPolicyFiles(cp.opts.ConfigPaths)
		if err != nil {
			return policyInput{}, err
		}
		// The PEM files of the served policy's Secrets and its OpenAPI
		// documents are part of its input: a change of them is a new
		// version.
		var certFiles []string
		if cp.lastGood != nil {
			certFiles = cp.lastGood.WatchedFiles()
		}
		return policyInput{files: pf, readErrors: fileErrs, version: withCertificateFiles(inputVersion(pf, fileErrs), certFiles)}, nil
	}
	return policyInput{files: files, version: inputVersion(files, nil)}, nil
}

// compile validates the policy with the definitions of the discovered
// services (placed first, so that a static Service of the same name is
// the one reported as a duplicate of "consul:catalog/<name>") through
// Options.Evaluate, checks the discovered endpoints as the policy checks a
// Service's, and compiles the model: the policy's, with the discovered
// endpoints in its endpoint index. See compileMemo for what a reload
// reuses.
//
// Problems are per resource: a discovered service's invalid endpoints are
// left out (its other endpoints serve; its status says which and why), a
// resource the model cannot represent is left out (a bug: logged as such,
// said in its status). With Options.Load (all or nothing) any endpoint
// error rejects the whole reload, as any policy error does.
func (cp *ControlPlane) compile(in policyInput) (*model.Model, *policySummary, error) {
	var discovered []*model.DiscoveredService
	if d := cp.opts.Discovery; d != nil {
		discovered = d.Services()
	}
	routing := cp.compiled.routing(in, discovered, cp.evaluator(), cp.lastGood)
	valid, endpointErrs := cp.compiled.checkEndpoints(discovered)
	allOrNothing := cp.opts.Evaluate == nil && cp.opts.Load != nil
	switch {
	case routing.loadErr != nil || (allOrNothing && len(endpointErrs) > 0):
		return nil, nil, joinPolicyErrors(routing.loadErr, flattenEndpointErrors(discovered, endpointErrs))
	case routing.compileErr != nil:
		if !routing.logged {
			routing.logged = true
			cp.logger.Error("the policy cannot be compiled: a bug of meshgate (please report it); the previous configuration keeps serving", "error", routing.compileErr)
		}
		return nil, nil, routing.compileErr
	}
	if !routing.logged {
		routing.logged = true
		for _, p := range routing.model.Problems {
			cp.logger.Error("a resource the policy accepted cannot be compiled and is left out: a bug of meshgate (please report it)",
				"kind", p.Kind, "namespace", p.Namespace, "name", p.Name, "at", fmt.Sprintf("%s:%d", p.Source.File, p.Source.Line), "error", p.Err)
		}
	}
	m, err := routing.model.WithDiscovered(valid)
	if err != nil {
		return nil, nil, err
	}
	sum := routing.summary
	if len(endpointErrs) > 0 {
		withEndpoints := *sum
		withEndpoints.result = sum.result.WithProblems(endpointProblems(discovered, endpointErrs))
		sum = &withEndpoints
	}
	return m, sum, nil
}

// flattenEndpointErrors lists the errors of endpointErrs in the order of
// discovered.
func flattenEndpointErrors(discovered []*model.DiscoveredService, endpointErrs map[*model.DiscoveredService]checkedEndpoints) policy.ErrorList {
	var out policy.ErrorList
	for _, d := range discovered {
		out = append(out, endpointErrs[d].errs...)
	}
	return out
}

// reload loads and compiles the policy and, if valid, serves it; an invalid
// policy is rejected, logged error by error, and the previous model stays.
// Nothing is loaded before the discovery's first snapshot. A destructive
// change (destructiveChange) is held: the applied policy is compiled again
// with the current discovered services instead, until the change has stayed
// the same for Options.DestructiveHold.
func (cp *ControlPlane) reload(ctx context.Context) error {
	if cp.opts.Discovery != nil && !cp.discoverySynced.Load() {
		return errNotSynced
	}
	start := time.Now()
	in, err := cp.readPolicy(ctx)
	trace := reloadTrace{start: start, read: time.Now(), input: in.version}
	if err == nil && cp.hold.active() && in.version != cp.hold.version {
		// The policy changed again: the held change was not stable.
		cp.logger.Info("held destructive policy change superseded: the policy changed again", "reason", cp.hold.reason)
		cp.hold = destructiveHold{}
		cp.setHeldChange(nil)
	}
	var m *model.Model
	var sum *policySummary
	if err == nil {
		m, sum, err = cp.compile(in)
	}
	if err == nil && !cp.configServed && len(sum.result.DamagedFiles) > 0 {
		// Before the first push there is no last good version of what a
		// file that cannot be read holds: nothing is served until it can.
		err = sum.result.Errors
	}
	if err == nil {
		m, sum, err = cp.confirmDestructive(in, m, sum)
	}
	var acmeGeneration uint64
	if err == nil {
		m, sum, acmeGeneration, err = cp.withACME(m, sum)
	}
	compiled := time.Now()
	trace.compiled = compiled
	if err != nil {
		if r := cp.compiled.latest(); r != nil && r.version == in.version && r.result != nil {
			cp.setResult(r.result)
		}
		cp.mu.Lock()
		newError := cp.lastError != err.Error()
		trace.version = cp.version
		cp.mu.Unlock()
		trace.err, trace.problems = err, countErrors(err)
		cp.traceReload(trace, newError)
		cp.reject(err)
		return err
	}
	cp.applied = sum
	cp.lastGood = sum.set
	if cp.watchFiles != nil && sum.set != nil {
		cp.watchFiles(sum.set.WatchedFiles())
	}
	cp.logProblems(sum.result)
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.result = sum.result
	cp.model.Store(m)
	updatedBefore := cp.xds.NodesUpdated()
	cp.xds.SetModel(ctx, m)
	if cp.acme != nil {
		cp.acme.Applied(acmeGeneration)
	}
	trace.pushed = time.Now()
	changed := m.Version != cp.version
	if changed {
		cp.logger.Info("policy loaded", "version", m.Version, "gateways", len(m.Gateways), "services", len(m.Services),
			"compile", compiled.Sub(start).Round(time.Millisecond), "serve", time.Since(compiled).Round(time.Millisecond))
	}
	if !cp.configServed {
		cp.configServed = true
		close(cp.servingCh)
		cp.logger.Info("every source synced: serving the configuration to the proxies", "version", m.Version)
	}
	cp.version = m.Version
	cp.lastReload = time.Now().UTC()
	cp.lastError = ""
	if sum.result != nil && len(sum.result.Errors) > 0 {
		cp.lastError = sum.result.Errors.Error()
	}
	trace.version, trace.updated = m.Version, int(cp.xds.NodesUpdated()-updatedBefore)
	if sum.result != nil {
		trace.resources, trace.problems = len(sum.result.Statuses), len(sum.result.Errors)
	}
	cp.traceReload(trace, changed)
	return nil
}

// evaluator is Options.Evaluate, or Options.Load as an evaluation that
// serves nothing when there is any error, or policy.Evaluate.
func (cp *ControlPlane) evaluator() func(policy.Input) *policy.Result {
	switch {
	case cp.opts.Evaluate != nil:
		return cp.opts.Evaluate
	case cp.opts.Load != nil:
		load := cp.opts.Load
		return func(in policy.Input) *policy.Result {
			set, err := load(in)
			if err == nil {
				return &policy.Result{Set: set}
			}
			var list policy.ErrorList
			if !errors.As(err, &list) {
				list = policy.ErrorList{{Message: err.Error()}}
			}
			return &policy.Result{Errors: list}
		}
	}
	return policy.Evaluate
}

func (cp *ControlPlane) setResult(r *policy.Result) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.result = r
}

// logProblems logs the problems of the policy served, once per change of
// them: each rejected resource, unresolved reference, unattached parent.
func (cp *ControlPlane) logProblems(r *policy.Result) {
	if r == nil {
		return
	}
	text := r.Errors.Error()
	if text == cp.loggedProblems {
		return
	}
	cp.loggedProblems = text
	for _, e := range r.Errors {
		cp.logger.Warn("policy problem: the resource (or a part of it, such as an endpoint) is left out, or a reference of it does not resolve; the rest of the policy is served", "error", e.Error())
	}
	for _, s := range r.Statuses {
		if s.State != policy.StateAccepted {
			cp.logger.Warn("policy resource not serving as written", "kind", s.Kind, "namespace", s.Namespace, "name", s.Name,
				"state", s.State, "reason", s.Reason, "at", fmt.Sprintf("%s:%d", s.File, s.Line))
		}
	}
}

// confirmDestructive applies the destructive-change hold to the model m of
// the policy in: it returns m, or, while a destructive change waits for its
// confirmation, the applied policy compiled again with the current
// discovered services.
func (cp *ControlPlane) confirmDestructive(in policyInput, m *model.Model, sum *policySummary) (*model.Model, *policySummary, error) {
	window := cp.opts.DestructiveHold
	prev := cp.applied
	if prev == nil || window < 0 {
		return m, sum, nil
	}
	reason := ""
	if in.version != prev.input.version {
		reason = destructiveChange(prev, sum)
	}
	if reason == "" {
		return m, sum, nil
	}
	now := time.Now()
	apply, started, wait := cp.hold.decide(in.version, reason, now, window)
	if apply {
		cp.logger.Warn("applying a destructive policy change: the policy stayed unchanged for the hold window", "reason", reason, "hold", window)
		cp.setHeldChange(nil)
		return m, sum, nil
	}
	if started {
		cp.logger.Warn("destructive policy change held: it is applied if the policy stays unchanged for the hold window", "reason", reason, "hold", window)
		cp.setHeldChange(&HeldPolicyChange{Reason: reason, Since: now.UTC(), ApplyAt: now.Add(wait).UTC()})
	}
	if cp.holdTimer != nil {
		cp.holdTimer.Stop()
	}
	if cp.requestReload != nil {
		cp.holdTimer = time.AfterFunc(wait, cp.requestReload)
	}
	return cp.compileApplied(prev)
}

// compileApplied compiles the applied policy again, with the current
// discovered services.
func (cp *ControlPlane) compileApplied(prev *policySummary) (*model.Model, *policySummary, error) {
	m, sum, err := cp.compile(prev.input)
	if err != nil {
		return nil, nil, fmt.Errorf("the applied policy, kept while a destructive change is held: %w", err)
	}
	return m, sum, nil
}

func (cp *ControlPlane) setHeldChange(h *HeldPolicyChange) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.heldChange = h
}

// reject logs a failed reload error by error and records it; the previous
// model stays. A policy source that keeps failing is logged once.
func (cp *ControlPlane) reject(err error) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	level := slog.LevelWarn
	if cp.sourceFailing.Load() && cp.lastError == err.Error() {
		level = slog.LevelDebug // the same outage, retried
	}
	var list policy.ErrorList
	if errors.As(err, &list) {
		for _, e := range list {
			cp.logger.Log(context.Background(), level, "policy rejected", "error", e.Error())
		}
	} else {
		cp.logger.Log(context.Background(), level, "policy rejected", "error", err.Error())
	}
	if !cp.configServed && level == slog.LevelWarn {
		cp.logger.Warn("no configuration is served until the policy is valid: proxies keep the configuration they have, new ones wait")
	}
	cp.lastError = err.Error()
}

// watchSync runs until the control plane serves: it warns of the sources it
// waits for DiscoverySyncTimeout after the start, then every
// syncWarnInterval, and reads a policy source that could not be read again
// every policySourceRetry (its watch may not report its return).
func (cp *ControlPlane) watchSync(ctx context.Context, requestReload func()) {
	began := time.Now()
	warn := time.NewTimer(cp.opts.DiscoverySyncTimeout)
	defer warn.Stop()
	retry := time.NewTicker(policySourceRetry)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-cp.servingCh:
			return
		case <-retry.C:
			if cp.sourceFailing.Load() {
				requestReload()
			}
		case <-warn.C:
			cp.mu.Lock()
			waiting, lastError := cp.waitingForLocked(), cp.lastError
			cp.mu.Unlock()
			cp.logger.Warn("not serving any configuration yet: waiting for the first sync of every source (proxies keep the configuration they have, new ones wait)",
				"waitingFor", strings.Join(waiting, ", "), "waited", time.Since(began).Round(time.Second), "lastError", lastError)
			warn.Reset(syncWarnInterval)
		}
	}
}

// waitingForLocked names the sources whose first sync is not complete, nil
// once serving.
func (cp *ControlPlane) waitingForLocked() []string {
	if cp.configServed {
		return nil
	}
	var out []string
	if d := cp.opts.Discovery; d != nil && !cp.discoverySynced.Load() {
		out = append(out, sourceName(d, "service discovery"))
	}
	switch {
	case cp.opts.PolicySource != nil:
		out = append(out, sourceName(cp.opts.PolicySource, "policy source"))
	case len(cp.opts.ConfigPaths) > 0:
		out = append(out, "policy files")
	}
	return out
}

// sourceName is what v calls itself (fmt.Stringer), else def.
func sourceName(v any, def string) string {
	if s, ok := v.(fmt.Stringer); ok {
		return s.String()
	}
	return def
}

func (cp *ControlPlane) status() Status {
	cp.mu.Lock()
	st := Status{Version: cp.version, LastReload: cp.lastReload, LastError: cp.lastError,
		Serving: cp.configServed, WaitingFor: cp.waitingForLocked()}
	if r := cp.result; r != nil {
		for _, e := range r.Errors {
			st.Errors = append(st.Errors, e.Error())
		}
		for _, s := range r.Statuses {
			if s.State != policy.StateAccepted {
				st.RejectedResources++
			}
		}
	}
	if h := cp.heldChange; h != nil {
		held := *h
		st.HeldPolicyChange = &held
	}
	cp.mu.Unlock()
	st.Proxies = cp.xds.Proxies()
	for i := range st.Proxies {
		if p := &st.Proxies[i]; p.SPIFFEID != "" {
			p.CertNotAfter = cp.issued.newest(p.SPIFFEID, p.CertNotAfter)
		}
	}
	st.ProxyCounts = countProxies(st.Proxies)
	return st
}
