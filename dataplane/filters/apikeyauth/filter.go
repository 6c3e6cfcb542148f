// Package apikeyauth is the Envoy API key authentication HTTP filter
// (envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth, per route
// ApiKeyAuthPerRoute) of the meshgate proxy, in the subset of docs/xds.md
// ("API keys"): a request must present, in one of the key sources (a
// header, a query parameter, a cookie), a key of the credentials, each
// mapped to a client (the API consumer); else 401.
//
// meshgate's policies hold keys as SHA-256 hashes: a credential whose key is
// "sha256:<64 hex digits>" matches a presented key whose SHA-256 is that
// hash (compared in constant time). The consumer is the request's
// authentication (httpfilter.Auth, principal: the client name).
package apikeyauth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	apikeyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/api_key_auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meshgate/meshgate/dataplane/accesslog"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/tracing"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// Names of the typed configs.
const (
	configType   protoreflect.FullName = "envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth"
	perRouteType protoreflect.FullName = "envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuthPerRoute"
)

// HashPrefix marks a credential key that is the SHA-256 of the key, in hex.
const HashPrefix = "sha256:"

// MetadataNamespace is where an API key or basic-auth authentication is in
// the request's metadata: key "principal", value {"name": ...}.
const MetadataNamespace = "meshgate.authn"

// StatDenied counts refused requests, by "missing" or "invalid".
const StatDenied = "api_key_auth_denied"

// maxCredentials bounds a config.
const maxCredentials = 10000

// Factory describes the filter to the registry.
func Factory() httpfilter.Factory {
	return httpfilter.Factory{
		ConfigType:   configType,
		PerRouteType: perRouteType,
		Rules: xdscheck.Rules{
			configType:   xdscheck.Allow("credentials", "key_sources", "forwarding"),
			perRouteType: xdscheck.Allow("credentials", "key_sources", "forwarding"),
			"envoy.extensions.filters.http.api_key_auth.v3.Credential": xdscheck.Allow("key", "client").Requires("key", "client"),
			"envoy.extensions.filters.http.api_key_auth.v3.KeySource":  xdscheck.Allow("header", "query", "cookie"),
			"envoy.extensions.filters.http.api_key_auth.v3.Forwarding": xdscheck.Allow("header", "hide_credentials"),
		},
		Stats:       []string{StatDenied, httpfilter.StatConsumerRequests},
		New:         newFilter,
		NewPerRoute: newPerRoute,
	}
}

// config is a compiled ApiKeyAuth (or per-route config).
type config struct {
	plain   map[string]string   // key → client
	hashed  map[[32]byte]string // SHA-256 → client
	sources []source
	header  string // forwarding.header: the client's name for the upstream
	hide    bool
}

type source struct{ header, query, cookie string }

// enforces: a config without credentials and key sources stands by for
// per-route configs and lets requests through.
func (c *config) enforces() bool { return len(c.plain)+len(c.hashed) > 0 || len(c.sources) > 0 }

type settings interface {
	GetCredentials() []*apikeyv3.Credential
	GetKeySources() []*apikeyv3.KeySource
	GetForwarding() *apikeyv3.Forwarding
}

func compile(s settings) (*config, error) {
	if len(s.GetCredentials()) > maxCredentials {
		return nil, fmt.Errorf("credentials: %d: at most %d", len(s.GetCredentials()), maxCredentials)
	}
	c := &config{plain: map[string]string{}, hashed: map[[32]byte]string{},
		header: s.GetForwarding().GetHeader(), hide: s.GetForwarding().GetHideCredentials()}
	for i, cred := range s.GetCredentials() {
		if cred.GetKey() == "" || cred.GetClient() == "" {
			return nil, fmt.Errorf("credentials[%d]: key and client are required", i)
		}
		if h, ok := strings.CutPrefix(cred.GetKey(), HashPrefix); ok {
			b, err := hex.DecodeString(h)
			if err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("credentials[%d].key: %s needs 64 hex digits", i, HashPrefix)
			}
			c.hashed[[32]byte(b)] = cred.GetClient()
			continue
		}
		c.plain[cred.GetKey()] = cred.GetClient()
	}
	for i, ks := range s.GetKeySources() {
		n := 0
		for _, v := range []string{ks.GetHeader(), ks.GetQuery(), ks.GetCookie()} {
			if v != "" {
				n++
			}
		}
		if n != 1 {
			return nil, fmt.Errorf("key_sources[%d]: exactly one of header, query, cookie is required", i)
		}
		c.sources = append(c.sources, source{header: http.CanonicalHeaderKey(ks.GetHeader()), query: ks.GetQuery(), cookie: ks.GetCookie()})
	}
	if len(c.plain)+len(c.hashed) > 0 && len(c.sources) == 0 {
		return nil, errors.New("key_sources: at least one is required with credentials")
	}
	return c, nil
}

type filter struct {
	name   string
	cfg    *config
	denied *httpfilter.Counters
	// requests counts the requests of each consumer (declared in the
	// config), by "<kind>/<name>".
	requests *httpfilter.Counters
	logger   *slog.Logger
}

func newFilter(name string, msg proto.Message, env httpfilter.Env) (httpfilter.Filter, error) {
	cfg, ok := msg.(*apikeyv3.ApiKeyAuth)
	if !ok {
		return nil, fmt.Errorf("want an ApiKeyAuth, got %T", msg)
	}
	c, err := compile(cfg)
	if err != nil {
		return nil, fmt.Errorf("api_key_auth: %w", err)
	}
	logger := env.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &filter{name: name, cfg: c, denied: env.Stats.Counters(StatDenied),
		requests: env.Stats.Counters(httpfilter.StatConsumerRequests), logger: logger}, nil
}

func newPerRoute(msg proto.Message) (any, error) {
	cfg, ok := msg.(*apikeyv3.ApiKeyAuthPerRoute)
	if !ok {
		return nil, fmt.Errorf("want an ApiKeyAuthPerRoute, got %T", msg)
	}
	if len(cfg.GetAllowedClients()) > 0 {
		return nil, errors.New("api_key_auth per route: allowed_clients: not supported")
	}
	c, err := compile(cfg)
	if err != nil {
		return nil, fmt.Errorf("api_key_auth per route: %w", err)
	}
	return c, nil
}

// Wrap returns the handler authenticating requests before next.
func (f *filter) Wrap(next httpfilter.Handler) httpfilter.Handler {
	return httpfilter.HandlerFunc(func(w http.ResponseWriter, r *http.Request, rt *router.Route) {
		c := f.cfg
		if rt != nil {
			if per, ok := rt.PerFilterConfig(f.name).(*config); ok {
				c = per
			}
		}
		if f.cfg.header != "" {
			r.Header.Del(f.cfg.header) // only an authenticated key sets it
		}
		if c.header != "" {
			r.Header.Del(c.header)
		}
		if !c.enforces() {
			next.ServeHTTP(w, r, rt)
			return
		}
		key, from := c.extract(r)
		if key == "" {
			f.refuse(w, r, rt, "missing", "missing API key")
			return
		}
		client, ok := c.lookup(key)
		if !ok {
			f.refuse(w, r, rt, "invalid", "invalid API key")
			return
		}
		if c.hide {
			from.remove(r)
		}
		if c.header != "" {
			r.Header.Set(c.header, client)
		}
		auth := &httpfilter.Auth{Principal: client, Kind: httpfilter.AuthAPIKey, Provider: f.name,
			MetadataNamespace: MetadataNamespace, MetadataKey: "principal", Metadata: map[string]any{"name": client, "kind": httpfilter.AuthAPIKey},
			Consumer: client}
		f.requests.Inc(auth.ConsumerKey())
		r = r.WithContext(httpfilter.WithAuth(r.Context(), auth))
		accesslog.Authenticated(r.Context(), client)
		tracing.Authenticated(r.Context(), client)
		next.ServeHTTP(w, r, rt)
	})
}

// extract returns the key of the first source that has one.
func (c *config) extract(r *http.Request) (string, source) {
	for _, s := range c.sources {
		switch {
		case s.header != "":
			if v := r.Header.Get(s.header); v != "" {
				return v, s
			}
		case s.query != "":
			if v := r.URL.Query().Get(s.query); v != "" {
				return v, s
			}
		case s.cookie != "":
			if ck, err := r.Cookie(s.cookie); err == nil && ck.Value != "" {
				return ck.Value, s
			}
		}
	}
	return "", source{}
}

func (s source) remove(r *http.Request) {
	switch {
	case s.header != "":
		r.Header.Del(s.header)
	case s.query != "":
		q := r.URL.Query()
		q.Del(s.query)
		r.URL.RawQuery = q.Encode()
	}
}

// lookup finds the client of key: by its SHA-256 among the hashed
// credentials, else among the plaintext ones (in constant time per key).
func (c *config) lookup(key string) (string, bool) {
	if client, ok := c.hashed[sha256.Sum256([]byte(key))]; ok {
		return client, true
	}
	for k, client := range c.plain {
		if subtle.ConstantTimeCompare([]byte(k), []byte(key)) == 1 {
			return client, true
		}
	}
	return "", false
}

func (f *filter) refuse(w http.ResponseWriter, r *http.Request, rt *router.Route, reason, msg string) {
	f.denied.Inc(reason)
	accesslog.DeniedWith(r.Context(), "api_key_auth_"+reason)
	if f.logger.Enabled(r.Context(), slog.LevelInfo) {
		f.logger.LogAttrs(r.Context(), slog.LevelInfo, "api key authentication failed",
			slog.String("method", r.Method), slog.String("path", r.URL.EscapedPath()), slog.String("reason", reason))
	}
	httpfilter.LocalReply(w, rt, http.StatusUnauthorized, msg+"\n")
}
