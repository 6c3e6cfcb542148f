// Package cors is Envoy's CORS HTTP filter
// (envoy.extensions.filters.http.cors.v3.Cors, per route CorsPolicy) for
// the meshgate proxy, in the subset of docs/xds.md ("CORS"), behaving as
// Envoy's does:
//
//   - A request of a route with a CorsPolicy that carries an Origin is a
//     CORS request. Its origin is allowed when one of
//     allow_origin_string_match matches it (or matches "*").
//   - A preflight (OPTIONS with Origin and Access-Control-Request-Method)
//     is answered by the proxy, 200 without a body: Access-Control-Allow-
//     Origin (the request's origin) and -Expose-Headers when the origin is
//     allowed; -Allow-Credentials, -Allow-Methods ("*": the requested
//     method), -Allow-Headers ("*": the requested headers), -Max-Age and
//     -Allow-Private-Network as configured. A preflight from an origin not
//     allowed is forwarded instead when forward_not_matching_preflights is
//     true or unset (Envoy's default).
//   - Any other response to a CORS request from an allowed origin, the
//     upstream's or a local reply, gets Access-Control-Allow-Origin, and
//     -Allow-Credentials and -Expose-Headers as configured.
//
// Each field of a CorsPolicy is taken from the most specific level
// (route, virtual host, route configuration) that sets it, as in Envoy. A
// request of a route without a CorsPolicy, or without an Origin, pays one
// lookup of its per-route configs; an actual CORS request a response
// writer wrapper.
package cors

import (
	"fmt"
	"net/http"

	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/dataplane/accesslog"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/internal/match"
	"github.com/meshgate/meshgate/dataplane/router"
)

// DetailsPreflight is the response code details of a preflight the filter
// answered (Envoy's).
const DetailsPreflight = "cors_response"

// Factory describes the CORS filter to the registry.
func Factory() httpfilter.Factory {
	return httpfilter.Factory{
		ConfigType:   configType,
		PerRouteType: perRouteType,
		Rules:        subsetRules(),
		New:          newFilter,
		NewPerRoute:  newPerRoute,
	}
}

// tristate is an optional boolean: unset falls back to the next level.
type tristate uint8

const (
	unset tristate = iota
	isFalse
	isTrue
)

func tri(set bool, v bool) tristate {
	switch {
	case !set:
		return unset
	case v:
		return isTrue
	}
	return isFalse
}

// policy is a compiled CorsPolicy; empty strings and unset booleans are
// taken from a less specific level.
type policy struct {
	origins                                              []match.String
	allowMethods, allowHeaders, exposeHeaders, maxAge    string
	allowCredentials, privateNetwork, forwardNotMatching tristate
}

func newPerRoute(config proto.Message) (any, error) {
	cfg, ok := config.(*corsv3.CorsPolicy)
	if !ok {
		return nil, fmt.Errorf("want a CorsPolicy, got %T", config)
	}
	p := &policy{
		allowMethods:       cfg.GetAllowMethods(),
		allowHeaders:       cfg.GetAllowHeaders(),
		exposeHeaders:      cfg.GetExposeHeaders(),
		maxAge:             cfg.GetMaxAge(),
		allowCredentials:   tri(cfg.GetAllowCredentials() != nil, cfg.GetAllowCredentials().GetValue()),
		privateNetwork:     tri(cfg.GetAllowPrivateNetworkAccess() != nil, cfg.GetAllowPrivateNetworkAccess().GetValue()),
		forwardNotMatching: tri(cfg.GetForwardNotMatchingPreflights() != nil, cfg.GetForwardNotMatchingPreflights().GetValue()),
	}
	for i, sm := range cfg.GetAllowOriginStringMatch() {
		s, err := match.CompileString(sm)
		if err != nil {
			return nil, fmt.Errorf("allow_origin_string_match[%d]: %w", i, err)
		}
		p.origins = append(p.origins, s)
	}
	return p, nil
}

// filter is one CORS http_filters entry: it has no config of its own.
type filter struct {
	name string // the entry's name: the key of its per-route configs
}

func newFilter(name string, config proto.Message, _ httpfilter.Env) (httpfilter.Filter, error) {
	if _, ok := config.(*corsv3.Cors); !ok {
		return nil, fmt.Errorf("want a Cors, got %T", config)
	}
	return &filter{name: name}, nil
}

// Wrap returns the handler running CORS in front of next.
func (f *filter) Wrap(next httpfilter.Handler) httpfilter.Handler {
	return &handler{filter: f, next: next}
}

type handler struct {
	*filter
	next httpfilter.Handler
}

// policies are the CorsPolicies of a route, most specific first.
type policies []any

func (ps policies) each(yield func(*policy) bool) {
	for _, c := range ps {
		if p, ok := c.(*policy); ok && !yield(p) {
			return
		}
	}
}

// str is the most specific non-empty value of a string field.
func (ps policies) str(field func(*policy) string) string {
	out := ""
	ps.each(func(p *policy) bool {
		out = field(p)
		return out == ""
	})
	return out
}

// flag is the most specific set value of a boolean field, def when none.
func (ps policies) flag(field func(*policy) tristate, def bool) bool {
	out := unset
	ps.each(func(p *policy) bool {
		out = field(p)
		return out == unset
	})
	if out == unset {
		return def
	}
	return out == isTrue
}

// originAllowed reports whether the most specific non-empty origin list
// allows origin.
func (ps policies) originAllowed(origin string) bool {
	allowed := false
	ps.each(func(p *policy) bool {
		if len(p.origins) == 0 {
			return true
		}
		for i := range p.origins {
			if p.origins[i].Match("*") || p.origins[i].Match(origin) {
				allowed = true
				break
			}
		}
		return false
	})
	return allowed
}

func methodsOf(p *policy) string         { return p.allowMethods }
func headersOf(p *policy) string         { return p.allowHeaders }
func exposeOf(p *policy) string          { return p.exposeHeaders }
func maxAgeOf(p *policy) string          { return p.maxAge }
func credentialsOf(p *policy) tristate   { return p.allowCredentials }
func privateNetOf(p *policy) tristate    { return p.privateNetwork }
func forwardOthersOf(p *policy) tristate { return p.forwardNotMatching }

// ServeHTTP answers preflights and adds the CORS headers to the responses
// of the other CORS requests from allowed origins.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request, rt *router.Route) {
	var ps policies
	if rt != nil {
		ps = rt.PerFilterConfigs(h.name)
	}
	origin := r.Header["Origin"]
	if len(ps) == 0 || len(origin) == 0 || origin[0] == "" {
		h.next.ServeHTTP(w, r, rt)
		return
	}
	allowed := ps.originAllowed(origin[0])
	requestMethod := r.Header["Access-Control-Request-Method"]
	if r.Method == http.MethodOptions && len(requestMethod) > 0 && requestMethod[0] != "" {
		if !allowed && ps.flag(forwardOthersOf, true) {
			h.next.ServeHTTP(w, r, rt)
			return
		}
		h.preflight(w, r, ps, origin[0], requestMethod[0], allowed)
		return
	}
	if !allowed {
		h.next.ServeHTTP(w, r, rt)
		return
	}
	cw := &corsWriter{ps: ps, origin: origin[0]}
	cw.rw.Reset(w, cw)
	h.next.ServeHTTP(&cw.rw, r, rt)
}

// preflight answers a preflight request.
func (h *handler) preflight(w http.ResponseWriter, r *http.Request, ps policies, origin, requestMethod string, allowed bool) {
	header := w.Header()
	if allowed {
		header["Access-Control-Allow-Origin"] = []string{origin}
	}
	if ps.flag(credentialsOf, false) {
		header["Access-Control-Allow-Credentials"] = []string{"true"}
	}
	if methods := ps.str(methodsOf); methods == "*" {
		header["Access-Control-Allow-Methods"] = []string{requestMethod}
	} else if methods != "" {
		header["Access-Control-Allow-Methods"] = []string{methods}
	}
	if headers := ps.str(headersOf); headers == "*" {
		if requested := r.Header.Get("Access-Control-Request-Headers"); requested != "" {
			header["Access-Control-Allow-Headers"] = []string{requested}
		}
	} else if headers != "" {
		header["Access-Control-Allow-Headers"] = []string{headers}
	}
	if maxAge := ps.str(maxAgeOf); maxAge != "" {
		header["Access-Control-Max-Age"] = []string{maxAge}
	}
	if ps.flag(privateNetOf, false) && r.Header.Get("Access-Control-Request-Private-Network") == "true" {
		header["Access-Control-Allow-Private-Network"] = []string{"true"}
	}
	if allowed {
		// Envoy's preflight answer passes its own encoder path too.
		if expose := ps.str(exposeOf); expose != "" {
			header["Access-Control-Expose-Headers"] = []string{expose}
		}
	}
	accesslog.FromContext(r.Context()).SetDetails(DetailsPreflight)
	header["Content-Length"] = []string{"0"}
	w.WriteHeader(http.StatusOK)
}

// corsWriter adds the CORS headers to the response of an actual request.
type corsWriter struct {
	rw     httpfilter.ResponseWriter
	ps     policies
	origin string
}

// BeforeResponse sets Access-Control-Allow-Origin, -Allow-Credentials and
// -Expose-Headers.
func (cw *corsWriter) BeforeResponse(_ int, h http.Header) {
	h["Access-Control-Allow-Origin"] = []string{cw.origin}
	if cw.ps.flag(credentialsOf, false) {
		h["Access-Control-Allow-Credentials"] = []string{"true"}
	}
	if expose := cw.ps.str(exposeOf); expose != "" {
		h["Access-Control-Expose-Headers"] = []string{expose}
	}
}
