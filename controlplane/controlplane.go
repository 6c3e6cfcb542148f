// Package controlplane runs meshgate's control plane: it loads the policy
// (files, or a PolicySource such as Consul KV) and the services of a
// Discovery source (the Consul catalog), validates them as one set, compiles
// them into a model, serves that model to proxies over xDS, watches every
// source and reloads on change (keeping the previous model when a reload is
// invalid or a source is unreachable), and answers the admin HTTP API. It runs the mesh
// certificate authority: xDS and the CA service share one TLS port, xDS
// streams must present a client certificate whose SPIFFE ID matches the
// node, and the admin API requires the admin token outside dev mode.
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
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

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
	// snapshot before the first model is served.
	DefaultDiscoverySyncTimeout = 5 * time.Second
)

// Discovery is a source of services, e.g. the Consul catalog.
type Discovery interface {
	// Run watches the source until ctx is done, calling changed after every
	// change of Services.
	Run(ctx context.Context, changed func()) error
	// Services is the current snapshot (the last known one while the
	// source is unreachable). Each Service's Source.File names where it
	// comes from (e.g. "consul:catalog/orders"); the control plane reads
	// but never modifies them.
	Services() []*policy.Service
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
	// at start; DefaultDiscoverySyncTimeout when zero.
	DiscoverySyncTimeout time.Duration
	// XDSAddress is where xDS and the CA are served (TLS); port 0 picks a
	// free port.
	XDSAddress string
	// AdminAddress is where the admin HTTP API is served; port 0 picks one.
	AdminAddress string
	// Debounce is how long the files must be quiet before a reload.
	Debounce time.Duration
	Logger   *slog.Logger
	// OnReady, if set, is called once both servers listen, with their
	// addresses.
	OnReady func(xdsAddr, adminAddr net.Addr)
	// Load reads the policy; nil means policy.Load through the control
	// plane's policy.Cache (documents unchanged since the last reload are
	// not decoded again).
	Load func(paths ...string) (*policy.Set, error)
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
	Version    string            `json:"version"`
	LastReload time.Time         `json:"lastReload"`
	LastError  string            `json:"lastError"`
	Proxies    []xds.ProxyStatus `json:"proxies"`
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
	// policyCache keeps the decoded documents of the last reload, for the
	// next (reloads are serial: Run's initial reload, then its reload loop).
	policyCache *policy.Cache

	mu         sync.Mutex
	version    string
	lastReload time.Time
	lastError  string

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
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	policyCache := policy.NewCache()
	if opts.Load == nil {
		opts.Load = policyCache.Load
	}
	cp := &ControlPlane{opts: opts, logger: opts.Logger, xds: xds.New(ctx, opts.Logger), issued: newIssuedExpiry(),
		policyCache: policyCache}
	empty, _ := model.Compile(nil) // an empty set always compiles
	cp.model.Store(empty)

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

// Run serves until ctx is done. The initial load may fail: then the errors are
// logged, an empty model is served, and fixing the files recovers.
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
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		cp.ca.Run(ctx, caReloadInterval)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		cp.guard.run(ctx, cp.store)
	}()
	if d := opts.Discovery; d != nil {
		trigger, stopTrigger := debounced(opts.DiscoveryDebounce, requestReload)
		defer stopTrigger()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.Run(ctx, trigger); err != nil && ctx.Err() == nil {
				cp.logger.Error("service discovery stopped", "error", err)
			}
		}()
		syncCtx, stop := context.WithTimeout(ctx, opts.DiscoverySyncTimeout)
		if err := d.WaitSynced(syncCtx); err != nil {
			cp.logger.Warn("service discovery not synced: starting without its services; they are added when it answers",
				"waited", opts.DiscoverySyncTimeout)
		}
		stop()
	}

	if err := cp.reload(ctx); err != nil {
		cp.logger.Warn("initial policy load failed: serving an empty configuration until the files are fixed")
		empty, _ := model.Compile(nil) // an empty set always compiles
		cp.xds.SetModel(ctx, empty)
		cp.mu.Lock()
		cp.version = empty.Version
		cp.mu.Unlock()
	}
	cp.xds.SetTrustBundle(ctx, cp.ca.TrustBundlePEM())
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
	}

	g := xds.NewGRPCServer(
		grpc.Creds(cp.guard.credentials(credentials.NewTLS(cp.ca.ServerTLSConfig(cp.serving)))),
	)
	cp.xds.Register(g)
	cp.caService.Register(g)
	admin := &http.Server{Handler: cp.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := g.Serve(xdsLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("serve xds on %s: %w", xdsLis.Addr(), err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := admin.Serve(adminLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serve admin on %s: %w", adminLis.Addr(), err)
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-reloads:
				_ = cp.reload(ctx)
			}
		}
	}()
	if watcher != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			watcher.run(ctx, opts.Debounce, cp.logger, requestReload)
		}()
	}
	if src := opts.PolicySource; src != nil {
		trigger, stopTrigger := debounced(opts.Debounce, requestReload)
		defer stopTrigger()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := src.Watch(ctx, trigger); err != nil && ctx.Err() == nil {
				cp.logger.Error("policy source watch stopped", "error", err)
			}
		}()
	}
	cp.logger.Info("control plane serving", "xds", xdsLis.Addr().String(), "admin", adminLis.Addr().String(),
		"config", opts.ConfigPaths, "adminAuth", !opts.Dev)
	if opts.OnReady != nil {
		opts.OnReady(xdsLis.Addr(), adminLis.Addr())
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	cancel()
	g.Stop() // xDS streams never end on their own: stop rather than drain
	shutdownCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	_ = admin.Shutdown(shutdownCtx)
	wg.Wait()
	return runErr
}

// loadSet reads and validates the policy: with neither a policy source nor
// discovery, Options.Load of the config paths; otherwise the discovered
// services (first, so that a static Service of the same name is the one
// reported as a duplicate of "consul:catalog/<name>") and the policy files
// or the policy source's files, validated together as one set. Both go
// through cp.policyCache (the first unless Options.Load is set): a reload
// decodes only the documents that changed, such as the one discovered
// service whose endpoints changed.
func (cp *ControlPlane) loadSet(ctx context.Context) (*policy.Set, error) {
	opts := cp.opts
	if opts.PolicySource == nil && opts.Discovery == nil {
		return opts.Load(opts.ConfigPaths...)
	}
	var files []policy.File
	if opts.Discovery != nil {
		discovered, err := serviceFiles(opts.Discovery.Services())
		if err != nil {
			return nil, err
		}
		files = append(files, discovered...)
	}
	if opts.PolicySource != nil {
		pf, err := opts.PolicySource.Files(ctx)
		if err != nil {
			return nil, fmt.Errorf("policy source: %w", err)
		}
		files = append(files, pf...)
	} else {
		pf, errs := readPolicyFiles(opts.ConfigPaths)
		if len(errs) > 0 {
			return nil, errs
		}
		files = append(files, pf...)
	}
	return cp.policyCache.LoadFiles(files...)
}

// reload loads and compiles the policy and, if valid, serves it; an invalid
// policy is rejected, logged error by error, and the previous model stays.
func (cp *ControlPlane) reload(ctx context.Context) error {
	start := time.Now()
	set, err := cp.loadSet(ctx)
	loaded := time.Now()
	var m *model.Model
	if err == nil {
		m, err = model.Compile(set)
	}
	compiled := time.Now()
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if err != nil {
		var list policy.ErrorList
		if errors.As(err, &list) {
			for _, e := range list {
				cp.logger.Warn("policy rejected", "error", e.Error())
			}
		} else {
			cp.logger.Warn("policy rejected", "error", err.Error())
		}
		cp.lastError = err.Error()
		return err
	}
	cp.model.Store(m)
	cp.xds.SetModel(ctx, m)
	if m.Version != cp.version {
		cp.logger.Info("policy loaded", "version", m.Version, "gateways", len(m.Gateways), "services", len(m.Services),
			"load", loaded.Sub(start).Round(time.Millisecond), "compile", compiled.Sub(loaded).Round(time.Millisecond),
			"serve", time.Since(compiled).Round(time.Millisecond))
	}
	cp.version = m.Version
	cp.lastReload = time.Now().UTC()
	cp.lastError = ""
	return nil
}

func (cp *ControlPlane) status() Status {
	cp.mu.Lock()
	st := Status{Version: cp.version, LastReload: cp.lastReload, LastError: cp.lastError}
	cp.mu.Unlock()
	st.Proxies = cp.xds.Proxies()
	for i := range st.Proxies {
		if p := &st.Proxies[i]; p.SPIFFEID != "" {
			p.CertNotAfter = cp.issued.newest(p.SPIFFEID, p.CertNotAfter)
		}
	}
	return st
}
