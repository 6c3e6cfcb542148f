// Package controlplane runs meshgate's control plane: it loads the policy
// files, compiles them into a model, serves that model to proxies over xDS,
// watches the files and reloads on change (keeping the previous model when a
// reload is invalid), and answers the admin HTTP API.
package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/controlplane/xds"
	"github.com/meshgate/meshgate/policy"
)

// Defaults for Options.
const (
	DefaultXDSAddress   = "127.0.0.1:15010"
	DefaultAdminAddress = "127.0.0.1:15000"
	DefaultDebounce     = 200 * time.Millisecond
)

// Options configure Run.
type Options struct {
	// ConfigPaths are policy files or directories.
	ConfigPaths []string
	// XDSAddress is where xDS is served; port 0 picks a free port.
	XDSAddress string
	// AdminAddress is where the admin HTTP API is served; port 0 picks one.
	AdminAddress string
	// Debounce is how long the files must be quiet before a reload.
	Debounce time.Duration
	Logger   *slog.Logger
	// OnReady, if set, is called once both servers listen, with their
	// addresses.
	OnReady func(xdsAddr, adminAddr net.Addr)
	// Load reads the policy; nil means policy.Load.
	Load func(paths ...string) (*policy.Set, error)
}

// Status is what GET /status reports.
type Status struct {
	Version    string            `json:"version"`
	LastReload time.Time         `json:"lastReload"`
	LastError  string            `json:"lastError"`
	Proxies    []xds.ProxyStatus `json:"proxies"`
}

// controlPlane is one running control plane.
type controlPlane struct {
	opts   Options
	logger *slog.Logger
	xds    *xds.Server

	mu         sync.Mutex
	version    string
	lastReload time.Time
	lastError  string
}

// Run serves until ctx is done. The initial load may fail: then the errors are
// logged, an empty model is served, and fixing the files recovers.
func Run(ctx context.Context, opts Options) error {
	if len(opts.ConfigPaths) == 0 {
		return errors.New("controlplane: no config paths")
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
	if opts.Load == nil {
		opts.Load = policy.Load
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cp := &controlPlane{opts: opts, logger: opts.Logger, xds: xds.New(ctx, opts.Logger)}

	var lc net.ListenConfig
	xdsLis, err := lc.Listen(ctx, "tcp", opts.XDSAddress)
	if err != nil {
		return fmt.Errorf("listen for xds: %w", err)
	}
	adminLis, err := lc.Listen(ctx, "tcp", opts.AdminAddress)
	if err != nil {
		xdsLis.Close()
		return fmt.Errorf("listen for admin: %w", err)
	}

	if err := cp.reload(ctx); err != nil {
		cp.logger.Warn("initial policy load failed: serving an empty configuration until the files are fixed")
		empty, _ := model.Compile(nil) // an empty set always compiles
		cp.xds.SetModel(ctx, empty)
		cp.mu.Lock()
		cp.version = empty.Version
		cp.mu.Unlock()
	}

	watcher, err := newWatcher(opts.ConfigPaths)
	if err != nil {
		xdsLis.Close()
		adminLis.Close()
		return err
	}
	defer watcher.Close()

	admin := &http.Server{Handler: cp.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := cp.xds.Serve(ctx, xdsLis); err != nil {
			errc <- err
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
		watcher.run(ctx, opts.Debounce, cp.logger, func() { _ = cp.reload(ctx) })
	}()
	cp.logger.Info("control plane serving", "xds", xdsLis.Addr().String(), "admin", adminLis.Addr().String(), "config", opts.ConfigPaths)
	if opts.OnReady != nil {
		opts.OnReady(xdsLis.Addr(), adminLis.Addr())
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	cancel()
	shutdownCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	_ = admin.Shutdown(shutdownCtx)
	wg.Wait()
	return runErr
}

// reload loads and compiles the policy and, if valid, serves it; an invalid
// policy is rejected, logged error by error, and the previous model stays.
func (cp *controlPlane) reload(ctx context.Context) error {
	set, err := cp.opts.Load(cp.opts.ConfigPaths...)
	var m *model.Model
	if err == nil {
		m, err = model.Compile(set)
	}
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
	cp.xds.SetModel(ctx, m)
	if m.Version != cp.version {
		cp.logger.Info("policy loaded", "version", m.Version, "gateways", len(m.Gateways), "services", len(m.Services))
	}
	cp.version = m.Version
	cp.lastReload = time.Now().UTC()
	cp.lastError = ""
	return nil
}

func (cp *controlPlane) status() Status {
	cp.mu.Lock()
	st := Status{Version: cp.version, LastReload: cp.lastReload, LastError: cp.lastError}
	cp.mu.Unlock()
	st.Proxies = cp.xds.Proxies()
	return st
}

func (cp *controlPlane) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, cp.status())
	})
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("node")
		res, version, ok := cp.xds.Resources(id)
		if !ok {
			http.Error(w, fmt.Sprintf("no connected proxy with node id %q", id), http.StatusNotFound)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"node": id, "version": version, "resources": res})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}
