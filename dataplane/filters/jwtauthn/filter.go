// Package jwtauthn is the Envoy JWT authentication HTTP filter
// (envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication, per route
// PerRouteConfig) of the meshgate proxy, in the subset of docs/xds.md ("JWT
// authentication"): providers verify a token (issuer, audiences, expiry and
// not-before with a clock skew, a signature by a key of the provider's JWKS:
// inline, a file read again when it changes, or fetched from a URL and
// cached), found in a header, a query parameter or a cookie; a request
// whose requirement is not met gets 401 with WWW-Authenticate: Bearer.
//
// A verified token's payload is the request's authentication
// (httpfilter.Auth, principal: its sub claim), where Envoy puts it in the
// dynamic metadata (payload_in_metadata): RBAC metadata matchers, the access
// log and the trace read it there. Tokens are verified with
// github.com/golang-jwt/jwt/v5, with public keys only and the algorithm
// allowed by the key's type: "none", HMAC, and an algorithm the key was not
// made for are refused.
package jwtauthn

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/dataplane/accesslog"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/tracing"
)

// MetadataNamespace is the dynamic metadata namespace of the filter
// (Envoy's filter name), where payload_in_metadata puts a token's payload.
const MetadataNamespace = "envoy.filters.http.jwt_authn"

// StatDenied is the /stats family counting the requests the filter refused,
// by "<provider or requirement>/missing" or ".../invalid".
const StatDenied = "jwt_authn_denied"

// Envoy's local reply bodies.
const (
	bodyMissing = "Jwt is missing"
	bodyInvalid = "Jwt verification fails"
)

// errMissing and errInvalid are why a requirement is not met: no token,
// or one that does not verify.
var (
	errMissing = errors.New("no token")
	errInvalid = errors.New("token does not verify")
)

// Factory describes the JWT filter to the registry. Its filters share one
// JWKS client and cache of remote JWKS (by URL, timeout and cache
// duration): a listener's new configuration keeps the keys fetched for the
// previous one, stale keys included when the server is down.
func Factory() httpfilter.Factory {
	shared := &remoteCache{client: jwksClient(), byKey: map[remoteCacheKey]*remoteKeys{}}
	return httpfilter.Factory{
		ConfigType:   configType,
		PerRouteType: perRouteType,
		Rules:        subsetRules(),
		Stats:        []string{StatDenied},
		New: func(name string, config proto.Message, env httpfilter.Env) (httpfilter.Filter, error) {
			return newFilter(name, config, env, shared)
		},
		NewPerRoute: newPerRoute,
	}
}

// filter is one JwtAuthentication http_filters entry.
type filter struct {
	name   string
	cfg    *config
	denied *httpfilter.Counters
	logger *slog.Logger
}

// perRoute is a compiled PerRouteConfig: disabled, or the name of the
// requirement (in the filter's requirement_map) that applies on the route.
type perRoute struct {
	disabled    bool
	requirement string
}

// jwksClient fetches remote JWKS: the system's trust roots, no proxy from
// the environment, bounded redirects and response heads.
func jwksClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:            (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSHandshakeTimeout:    5 * time.Second,
			ResponseHeaderTimeout:  10 * time.Second,
			MaxResponseHeaderBytes: 64 << 10,
			MaxIdleConns:           4,
			IdleConnTimeout:        90 * time.Second,
		},
		CheckRedirect: func(_ *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("too many redirects")
			}
			return nil
		},
	}
}

func newFilter(name string, config proto.Message, env httpfilter.Env, shared *remoteCache) (httpfilter.Filter, error) {
	cfg, ok := config.(*jwtv3.JwtAuthentication)
	if !ok {
		return nil, fmt.Errorf("want a JwtAuthentication, got %T", config)
	}
	logger := env.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c, err := compile(cfg, options{now: time.Now, client: shared.client, remotes: shared, logger: logger.With("filter", name)})
	if err != nil {
		return nil, fmt.Errorf("jwt_authn: %w", err)
	}
	return &filter{name: name, cfg: c, denied: env.Stats.Counters(StatDenied), logger: logger}, nil
}

func newPerRoute(config proto.Message) (any, error) {
	cfg, ok := config.(*jwtv3.PerRouteConfig)
	if !ok {
		return nil, fmt.Errorf("want a PerRouteConfig, got %T", config)
	}
	if cfg.GetDisabled() {
		return &perRoute{disabled: true}, nil
	}
	if cfg.GetRequirementName() == "" {
		return nil, errors.New("jwt_authn per route: disabled or requirement_name is required")
	}
	return &perRoute{requirement: cfg.GetRequirementName()}, nil
}

// Wrap returns the handler authenticating requests before next.
func (f *filter) Wrap(next httpfilter.Handler) httpfilter.Handler {
	return &handler{filter: f, next: next}
}

type handler struct {
	*filter
	next httpfilter.Handler
}

// requirementFor is the requirement of a request on rt: the per-route
// config's (a requirement_map entry, or none when disabled), else the first
// rule whose prefix the path has; nil: nothing is required.
func (f *filter) requirementFor(r *http.Request, rt *router.Route) (*requirement, string, error) {
	if rt != nil {
		if per, ok := rt.PerFilterConfig(f.name).(*perRoute); ok {
			if per.disabled {
				return nil, "", nil
			}
			req, ok := f.cfg.reqMap[per.requirement]
			if !ok {
				return nil, per.requirement, fmt.Errorf("requirement_name %q: not in requirement_map", per.requirement)
			}
			return req, per.requirement, nil
		}
	}
	path := r.URL.Path
	for i := range f.cfg.rules {
		if strings.HasPrefix(path, f.cfg.rules[i].prefix) {
			return f.cfg.rules[i].req, f.cfg.rules[i].prefix, nil
		}
	}
	return nil, "", nil
}

// ServeHTTP verifies the request's token(s) against its requirement: 401
// when it is not met, else next with the authentication on the request's
// context and the claim headers set.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request, rt *router.Route) {
	for _, name := range h.cfg.claimHeaders {
		delete(r.Header, name) // canonical: a client's copy never reaches the backend
	}
	req, key, err := h.requirementFor(r, rt)
	if err != nil {
		h.logger.Error("jwt_authn: route requirement", "error", err)
		h.refuse(w, r, rt, key, fmt.Errorf("%w: %v", errInvalid, err))
		return
	}
	if req == nil {
		h.next.ServeHTTP(w, r, rt)
		return
	}
	auth, err := req.verify(r)
	if err != nil {
		h.refuse(w, r, rt, key, err)
		return
	}
	if auth != nil {
		r = r.WithContext(httpfilter.WithAuth(r.Context(), auth.auth))
		auth.apply(r)
		accesslog.Authenticated(r.Context(), auth.auth.Principal)
		tracing.Authenticated(r.Context(), auth.auth.Principal)
	}
	h.next.ServeHTTP(w, r, rt)
}

// refuse answers 401 as Envoy does: WWW-Authenticate: Bearer with the realm
// (the request URL) and, for a token that did not verify,
// error="invalid_token".
func (f *filter) refuse(w http.ResponseWriter, r *http.Request, rt *router.Route, key string, err error) {
	reason, body := "invalid", bodyInvalid
	if errors.Is(err, errMissing) {
		reason, body = "missing", bodyMissing
	}
	f.denied.Inc(key + "/" + reason)
	accesslog.DeniedWith(r.Context(), "jwt_authn_access_denied{"+strings.ReplaceAll(body, " ", "_")+"}")
	if f.logger.Enabled(r.Context(), slog.LevelInfo) {
		f.logger.LogAttrs(r.Context(), slog.LevelInfo, "jwt authentication failed",
			slog.String("method", r.Method), slog.String("path", r.URL.EscapedPath()),
			slog.String("requirement", key), slog.String("error", err.Error()))
	}
	// The realm is the request's URL, its quotes escaped so that it stays
	// one quoted-string.
	realm := strings.ReplaceAll("http://"+r.Host+r.URL.EscapedPath(), `"`, "%22")
	challenge := `Bearer realm="` + realm + `"`
	if reason == "invalid" {
		challenge += `, error="invalid_token"`
	}
	w.Header().Set("WWW-Authenticate", challenge)
	httpfilter.LocalReply(w, rt, http.StatusUnauthorized, body)
}

// verified is a token that met a requirement.
type verified struct {
	provider *provider
	auth     *httpfilter.Auth
	claims   jwt.MapClaims
	// strip: where the token came from, removed unless forward.
	fromHeader string
	fromParam  string
}

// verify checks r against req: the verified token, nil when the
// requirement allows a request without one, or an error wrapping
// errMissing or errInvalid.
func (req *requirement) verify(r *http.Request) (*verified, error) {
	switch req.kind {
	case reqProvider:
		return req.provider.verify(r)
	case reqAllowMissing:
		return nil, errMissing
	case reqAll:
		var first *verified
		for _, c := range req.children {
			v, err := c.verify(r)
			if err != nil {
				return nil, err
			}
			if first == nil {
				first = v
			}
		}
		return first, nil
	case reqAny:
		var last error
		missingAllowed := false
		for _, c := range req.children {
			if c.kind == reqAllowMissing {
				missingAllowed = true
				continue
			}
			v, err := c.verify(r)
			if err == nil {
				return v, nil
			}
			if last == nil || !errors.Is(err, errMissing) {
				last = err
			}
		}
		if missingAllowed && (last == nil || errors.Is(last, errMissing)) {
			return nil, nil
		}
		return nil, last
	}
	return nil, errInvalid
}

// extract finds the provider's token: the first location (headers, then
// query parameters, then cookies) that holds one.
func (p *provider) extract(r *http.Request) (token, header, param string) {
	for _, h := range p.headers {
		if v := r.Header.Get(h.name); v != "" {
			if t, ok := cutPrefixFold(v, h.prefix); ok && t != "" {
				return strings.TrimSpace(t), h.name, ""
			}
		}
	}
	if len(p.params) > 0 && r.URL.RawQuery != "" {
		q := r.URL.Query()
		for _, name := range p.params {
			if v := q.Get(name); v != "" {
				return v, "", name
			}
		}
	}
	for _, name := range p.cookies {
		if c, err := r.Cookie(name); err == nil && c.Value != "" {
			return c.Value, "", ""
		}
	}
	return "", "", ""
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return "", false
	}
	return s[len(prefix):], true
}

// verify verifies the provider's token of r.
func (p *provider) verify(r *http.Request) (*verified, error) {
	token, header, param := p.extract(r)
	if token == "" {
		return nil, fmt.Errorf("provider %s: %w", p.name, errMissing)
	}
	if len(token) > maxTokenBytes {
		return nil, fmt.Errorf("provider %s: %w: token longer than %d bytes", p.name, errInvalid, maxTokenBytes)
	}
	if v, ok := p.cache.get(token, p.clock()); ok {
		return &verified{provider: p, auth: v.auth, claims: v.claims, fromHeader: header, fromParam: param}, nil
	}
	p.verifications.Add(1)
	claims := jwt.MapClaims{}
	_, err := p.tokens.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		keys, err := p.keys.keys(r.Context(), kid)
		if err != nil {
			return nil, err
		}
		set := jwt.VerificationKeySet{}
		for _, k := range keys {
			if (kid == "" || k.kid == kid) && (k.alg == "" || k.alg == t.Method.Alg()) && keyAllows(k.key, t.Method.Alg()) {
				set.Keys = append(set.Keys, k.key)
			}
		}
		if len(set.Keys) == 0 {
			return nil, fmt.Errorf("no key of the JWKS verifies alg %q kid %q", t.Method.Alg(), kid)
		}
		return set, nil
	})
	if err != nil {
		return nil, fmt.Errorf("provider %s: %w: %v", p.name, errInvalid, err)
	}
	sub, _ := claims["sub"].(string)
	auth := &httpfilter.Auth{
		Principal:         sub,
		Kind:              httpfilter.AuthJWT,
		Provider:          p.name,
		MetadataNamespace: MetadataNamespace,
		MetadataKey:       p.metadataKey,
		Metadata:          p.normalize(claims),
	}
	now := p.clock()
	until := now.Add(tokenCacheFor)
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil && exp.Add(p.skew).Before(until) {
		until = exp.Add(p.skew)
	}
	p.cache.put(token, cachedToken{auth: auth, claims: claims, until: until})
	return &verified{provider: p, auth: auth, claims: claims, fromHeader: header, fromParam: param}, nil
}

// clock is the provider's time.
func (p *provider) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}

// normalize is the payload as Envoy puts it in metadata: each
// space-delimited claim (scope) that is a string becomes a list.
func (p *provider) normalize(claims jwt.MapClaims) map[string]any {
	if len(p.spaceClaims) == 0 {
		return claims
	}
	out := make(map[string]any, len(claims))
	for k, v := range claims {
		out[k] = v
	}
	for _, name := range p.spaceClaims {
		if s, ok := out[name].(string); ok {
			fields := strings.Fields(s)
			list := make([]any, len(fields))
			for i, f := range fields {
				list[i] = f
			}
			out[name] = list
		}
	}
	return out
}

// apply sets the claim headers (the client's were removed) and removes
// the token unless the provider forwards it.
func (v *verified) apply(r *http.Request) {
	for _, ch := range v.provider.claimHeaders {
		if s, ok := claimString(v.claims, ch.claim); ok {
			r.Header.Set(ch.header, s)
		}
	}
	if v.provider.forward {
		return
	}
	if v.fromHeader != "" {
		r.Header.Del(v.fromHeader)
	}
	if v.fromParam != "" {
		q := r.URL.Query()
		q.Del(v.fromParam)
		r.URL.RawQuery = q.Encode()
	}
}

// claimString is a claim ("a.b" walks nested objects) as a header value:
// strings as they are, numbers and booleans formatted; other types are not
// forwarded.
func claimString(claims map[string]any, name string) (string, bool) {
	var v any = claims
	for part := range strings.SplitSeq(name, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return "", false
		}
		if v, ok = m[part]; !ok {
			return "", false
		}
	}
	switch t := v.(type) {
	case string:
		return t, true
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(t), true
	}
	return "", false
}
