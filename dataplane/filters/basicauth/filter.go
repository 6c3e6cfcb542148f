// Package basicauth is the Envoy basic authentication HTTP filter
// (envoy.extensions.filters.http.basic_auth.v3.BasicAuth, per route
// BasicAuthPerRoute) of the meshgate proxy, in the subset of docs/xds.md
// ("Basic auth"): users from an htpasswd document (inline DataSource) with
// bcrypt ($2a$, $2b$, $2y$) or SHA-1 ({SHA}, Envoy's) passwords; a request
// without valid credentials gets 401 with WWW-Authenticate: Basic. The user
// is the request's authentication (httpfilter.Auth).
package basicauth

import (
	"bufio"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	basicv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/basic_auth/v3"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meshgate/meshgate/dataplane/accesslog"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/tracing"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

const (
	configType   protoreflect.FullName = "envoy.extensions.filters.http.basic_auth.v3.BasicAuth"
	perRouteType protoreflect.FullName = "envoy.extensions.filters.http.basic_auth.v3.BasicAuthPerRoute"
	// MetadataNamespace: as the API key filter's (apikeyauth).
	MetadataNamespace = "meshgate.authn"
	// StatDenied counts refused requests, by "missing" or "invalid".
	StatDenied = "basic_auth_denied"
	maxUsers   = 10000
	// maxBcryptCost bounds the work one request can cost.
	maxBcryptCost = 12
)

// Factory describes the filter to the registry.
func Factory() httpfilter.Factory {
	users := xdscheck.Field{Only: xdscheck.Allow("inline_string")}
	return httpfilter.Factory{
		ConfigType:   configType,
		PerRouteType: perRouteType,
		Rules: xdscheck.Rules{
			configType:   xdscheck.Allow("forward_username_header", "realm").With("users", users),
			perRouteType: xdscheck.Allow("realm").With("users", users),
		},
		Stats:       []string{StatDenied, httpfilter.StatConsumerRequests},
		New:         newFilter,
		NewPerRoute: newPerRoute,
	}
}

type user struct {
	bcrypt []byte   // a bcrypt hash, or
	sha1   [20]byte // a {SHA} hash
}

type config struct {
	users   map[string]user
	forward string
	realm   string
}

func compile(htpasswd, forward, realm string) (*config, error) {
	c := &config{users: map[string]user{}, forward: forward, realm: realm}
	sc := bufio.NewScanner(strings.NewReader(htpasswd))
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, hash, ok := strings.Cut(text, ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("users line %d: want user:hash", line)
		}
		if _, dup := c.users[name]; dup {
			return nil, fmt.Errorf("users line %d: user %q twice", line, name)
		}
		var u user
		switch {
		case strings.HasPrefix(hash, "{SHA}"):
			b, err := base64.StdEncoding.DecodeString(hash[len("{SHA}"):])
			if err != nil || len(b) != sha1.Size {
				return nil, fmt.Errorf("users line %d: {SHA} needs a base64 SHA-1", line)
			}
			u.sha1 = [20]byte(b)
		case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
			cost, err := bcrypt.Cost([]byte(hash))
			if err != nil {
				return nil, fmt.Errorf("users line %d: %w", line, err)
			}
			if cost > maxBcryptCost {
				return nil, fmt.Errorf("users line %d: bcrypt cost %d: at most %d", line, cost, maxBcryptCost)
			}
			u.bcrypt = []byte(hash)
		default:
			return nil, fmt.Errorf("users line %d: only bcrypt ($2y$...) and {SHA} passwords are supported", line)
		}
		c.users[name] = u
		if len(c.users) > maxUsers {
			return nil, fmt.Errorf("users: more than %d", maxUsers)
		}
	}
	if len(c.users) == 0 {
		return nil, errors.New("users: none")
	}
	return c, nil
}

type filter struct {
	name    string
	cfg     *config // nil: no users at the listener level
	forward string  // forward_username_header, for per-route users too
	denied  *httpfilter.Counters
	// requests counts the requests of each user, by "basic/<name>".
	requests *httpfilter.Counters
	logger   *slog.Logger
}

func newFilter(name string, msg proto.Message, env httpfilter.Env) (httpfilter.Filter, error) {
	cfg, ok := msg.(*basicv3.BasicAuth)
	if !ok {
		return nil, fmt.Errorf("want a BasicAuth, got %T", msg)
	}
	var c *config
	if cfg.GetUsers().GetInlineString() != "" {
		var err error
		if c, err = compile(cfg.GetUsers().GetInlineString(), cfg.GetForwardUsernameHeader(), cfg.GetRealm()); err != nil {
			return nil, fmt.Errorf("basic_auth: %w", err)
		}
	}
	logger := env.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &filter{name: name, cfg: c, forward: cfg.GetForwardUsernameHeader(), denied: env.Stats.Counters(StatDenied),
		requests: env.Stats.Counters(httpfilter.StatConsumerRequests), logger: logger}, nil
}

func newPerRoute(msg proto.Message) (any, error) {
	cfg, ok := msg.(*basicv3.BasicAuthPerRoute)
	if !ok {
		return nil, fmt.Errorf("want a BasicAuthPerRoute, got %T", msg)
	}
	c, err := compile(cfg.GetUsers().GetInlineString(), "", cfg.GetRealm())
	if err != nil {
		return nil, fmt.Errorf("basic_auth per route: %w", err)
	}
	return c, nil
}

// Wrap returns the handler authenticating requests before next. A filter
// without users (and a route without per-route users) lets requests through.
func (f *filter) Wrap(next httpfilter.Handler) httpfilter.Handler {
	return httpfilter.HandlerFunc(func(w http.ResponseWriter, r *http.Request, rt *router.Route) {
		c := f.cfg
		if rt != nil {
			if per, ok := rt.PerFilterConfig(f.name).(*config); ok {
				if per.forward != f.forward {
					per = &config{users: per.users, forward: f.forward, realm: per.realm}
				}
				c = per
			}
		}
		if f.forward != "" {
			r.Header.Del(f.forward) // only authenticated credentials set it
		}
		if c == nil {
			next.ServeHTTP(w, r, rt)
			return
		}
		name, password, ok := r.BasicAuth()
		if !ok {
			f.refuse(w, r, rt, c, "missing", "User authentication failed. Missing username and password.")
			return
		}
		if !c.verify(name, password) {
			f.refuse(w, r, rt, c, "invalid", "User authentication failed. Invalid username/password combination.")
			return
		}
		if c.forward != "" {
			r.Header.Set(c.forward, name)
		}
		auth := &httpfilter.Auth{Principal: name, Kind: httpfilter.AuthBasic, Provider: f.name,
			MetadataNamespace: MetadataNamespace, MetadataKey: "principal", Metadata: map[string]any{"name": name, "kind": httpfilter.AuthBasic},
			Consumer: name}
		f.requests.Inc(auth.ConsumerKey())
		r = r.WithContext(httpfilter.WithAuth(r.Context(), auth))
		accesslog.Authenticated(r.Context(), name)
		tracing.Authenticated(r.Context(), name)
		next.ServeHTTP(w, r, rt)
	})
}

func (c *config) verify(name, password string) bool {
	u, ok := c.users[name]
	if !ok {
		return false
	}
	if u.bcrypt != nil {
		return bcrypt.CompareHashAndPassword(u.bcrypt, []byte(password)) == nil
	}
	sum := sha1.Sum([]byte(password))
	return subtle.ConstantTimeCompare(sum[:], u.sha1[:]) == 1
}

func (f *filter) refuse(w http.ResponseWriter, r *http.Request, rt *router.Route, c *config, reason, body string) {
	f.denied.Inc(reason)
	accesslog.DeniedWith(r.Context(), "basic_auth_"+reason)
	if f.logger.Enabled(r.Context(), slog.LevelInfo) {
		f.logger.LogAttrs(r.Context(), slog.LevelInfo, "basic authentication failed",
			slog.String("method", r.Method), slog.String("path", r.URL.EscapedPath()), slog.String("reason", reason))
	}
	realm := c.realm
	if realm == "" {
		realm = "http://" + r.Host
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="`+strings.ReplaceAll(realm, `"`, "")+`"`)
	httpfilter.LocalReply(w, rt, http.StatusUnauthorized, body)
}
