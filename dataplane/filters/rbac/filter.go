package rbac

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/dataplane/accesslog"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/peer"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/tracing"
)

// StatDenied is the /stats family counting the requests the RBAC filters
// denied, by Engine.StatKey (the policy, or
// "<rules_stat_prefix>/no-allow-match").
const StatDenied = "rbac_denied"

// bodyAccessDenied is the body of the 403 (docs/xds.md).
const bodyAccessDenied = "access denied\n"

// Factory describes the RBAC filter to the registry: config RBAC, per route
// RBACPerRoute, whose rbac replaces the filter's config on that route (an
// RBACPerRoute without rbac disables the filter there), Envoy's rules.
func Factory() httpfilter.Factory {
	return httpfilter.Factory{
		ConfigType:   configType,
		PerRouteType: perRouteType,
		Rules:        subsetRules(),
		Stats:        []string{StatDenied},
		New:          newFilter,
		NewPerRoute:  newPerRoute,
	}
}

// filter is one RBAC http_filters entry.
type filter struct {
	name   string  // the entry's name: the key of its per-route configs
	engine *Engine // the listener-level config
	denied *httpfilter.Counters
	logger *slog.Logger
}

// perRoute is a compiled RBACPerRoute: engine replaces the filter's on the
// route; nil disables the filter there.
type perRoute struct {
	engine *Engine
}

func newFilter(name string, config proto.Message, env httpfilter.Env) (httpfilter.Filter, error) {
	cfg, ok := config.(*rbacv3.RBAC)
	if !ok {
		return nil, fmt.Errorf("want an RBAC, got %T", config)
	}
	e, err := compile(cfg)
	if err != nil {
		return nil, fmt.Errorf("rbac: %w", err)
	}
	logger := env.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &filter{name: name, engine: e, denied: env.Stats.Counters(StatDenied), logger: logger}, nil
}

func newPerRoute(config proto.Message) (any, error) {
	cfg, ok := config.(*rbacv3.RBACPerRoute)
	if !ok {
		return nil, fmt.Errorf("want an RBACPerRoute, got %T", config)
	}
	if cfg.GetRbac() == nil {
		return &perRoute{}, nil // RBACPerRoute{}: the filter is disabled on this route
	}
	e, err := compile(cfg.GetRbac())
	if err != nil {
		return nil, fmt.Errorf("rbac.%w", err)
	}
	return &perRoute{engine: e}, nil
}

// Wrap returns the handler enforcing the filter before next.
func (f *filter) Wrap(next httpfilter.Handler) httpfilter.Handler {
	return &handler{filter: f, next: next}
}

type handler struct {
	*filter
	next httpfilter.Handler
}

// ServeHTTP decides r with the config that applies on rt (its per-route
// config, else the listener's; the listener's when no route matched): 403
// when denied, else next.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request, rt *router.Route) {
	e := h.engine
	if rt != nil {
		if per, ok := rt.PerFilterConfig(h.name).(*perRoute); ok {
			e = per.engine
		}
	}
	if allowed, policy := e.Evaluate(r); !allowed {
		h.deny(w, r, rt, e, policy)
		return
	}
	h.next.ServeHTTP(w, r, rt)
}

// deny answers 403, logs who was denied by which policy, and counts it.
func (f *filter) deny(w http.ResponseWriter, r *http.Request, rt *router.Route, e *Engine, policy string) {
	f.denied.Inc(e.StatKey(policy))
	tracing.Denied(r.Context(), e.StatKey(policy))
	accesslog.Denied(r.Context(), e.StatKey(policy))
	if f.logger.Enabled(r.Context(), slog.LevelInfo) {
		remoteIP := r.RemoteAddr
		if host, _, err := net.SplitHostPort(remoteIP); err == nil {
			remoteIP = host
		}
		path := ""
		if r.URL != nil {
			path = r.URL.EscapedPath()
		}
		f.logger.LogAttrs(r.Context(), slog.LevelInfo, "access denied",
			slog.String("method", r.Method),
			slog.String("path", path),
			slog.String("peer", peer.Identity(r.Context())),
			slog.String("remote_ip", remoteIP),
			slog.String("action", e.Action().String()),
			slog.String("policy", policy),
			slog.String("rules", e.StatPrefix()),
		)
	}
	httpfilter.Reply(w, r, rt, http.StatusForbidden, bodyAccessDenied) // gRPC: PERMISSION_DENIED
}
