package jwtauthn

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
)

// Limits of a config.
const (
	maxProviders  = 64
	maxReqDepth   = 8
	maxTokenBytes = 8 << 10 // Envoy's jwt_max_token_size default is 4096; a longer token is refused
)

// algorithmsByKey are the signing algorithms a key type verifies: the
// allow-list of a token's alg is the key's; "none" and the HMAC algorithms
// are never allowed.
var allAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// provider is one compiled JwtProvider.
type provider struct {
	name         string
	issuer       string
	audiences    []string
	keys         keySource
	forward      bool
	headers      []tokenHeader
	params       []string
	cookies      []string
	skew         time.Duration
	requireExp   bool
	claimHeaders []claimHeader
	metadataKey  string
	spaceClaims  []string
	now          func() time.Time
	// tokens parses and validates tokens; built once (it is not modified
	// by parsing).
	tokens *jwt.Parser
	// cache holds the tokens verified lately; verifications counts the
	// signature checks (for tests).
	cache         *tokenCache
	verifications atomic.Int64
}

// Limits of the verified-token cache of a provider (Envoy's jwt_cache_config
// in spirit): a token verified once is accepted again without a signature
// check until its exp (with the skew) or tokenCacheFor, whichever is
// first; a key removed from the JWKS stops verifying cached tokens within
// tokenCacheFor.
const (
	tokenCacheFor     = time.Minute
	tokenCacheEntries = 512
)

// tokenCache maps a token to its verification. Full, it is emptied: the
// bound matters more than the hit rate.
type tokenCache struct {
	mu      sync.Mutex
	entries map[string]cachedToken
}

type cachedToken struct {
	auth   *httpfilter.Auth
	claims jwt.MapClaims // read only
	until  time.Time
}

func (c *tokenCache) get(token string, now time.Time) (cachedToken, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.entries[token]
	if ok && !now.Before(v.until) {
		delete(c.entries, token)
		return cachedToken{}, false
	}
	return v, ok
}

func (c *tokenCache) put(token string, v cachedToken) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= tokenCacheEntries {
		clear(c.entries)
	}
	c.entries[token] = v
}

type tokenHeader struct {
	name   string // canonical
	prefix string
}

type claimHeader struct {
	header string // canonical
	claim  string // "a.b" walks nested objects
}

// reqKind is the kind of one compiled JwtRequirement.
type reqKind uint8

const (
	reqProvider reqKind = iota + 1
	reqAny
	reqAll
	reqAllowMissing
)

// requirement is a compiled JwtRequirement.
type requirement struct {
	kind     reqKind
	provider *provider
	children []*requirement
}

// rule is a compiled RequirementRule: requests whose path starts with
// prefix need req (nil: none).
type rule struct {
	prefix string
	req    *requirement
}

// config is a compiled JwtAuthentication.
type config struct {
	providers map[string]*provider
	rules     []rule
	reqMap    map[string]*requirement
	// claimHeaders are the claim_to_headers headers of every provider,
	// removed from every request the filter sees, so that only a verified
	// token sets them.
	claimHeaders []string
}

// options are what compiling takes from the proxy.
type options struct {
	now    func() time.Time
	client *http.Client
	logger *slog.Logger
	// remotes, when set, shares remote JWKS between compiles.
	remotes *remoteCache
}

func compile(cfg *jwtv3.JwtAuthentication, opts options) (*config, error) {
	if cfg == nil {
		return nil, errors.New("nil config")
	}
	if len(cfg.GetProviders()) > maxProviders {
		return nil, fmt.Errorf("providers: %d: at most %d", len(cfg.GetProviders()), maxProviders)
	}
	c := &config{providers: make(map[string]*provider, len(cfg.GetProviders())), reqMap: map[string]*requirement{}}
	for _, name := range slices.Sorted(maps.Keys(cfg.GetProviders())) {
		p, err := compileProvider(name, cfg.GetProviders()[name], opts)
		if err != nil {
			return nil, fmt.Errorf("providers[%q]: %w", name, err)
		}
		c.providers[name] = p
		for _, ch := range p.claimHeaders {
			if !slices.Contains(c.claimHeaders, ch.header) {
				c.claimHeaders = append(c.claimHeaders, ch.header)
			}
		}
	}
	for i, r := range cfg.GetRules() {
		prefix := r.GetMatch().GetPrefix()
		if !strings.HasPrefix(prefix, "/") {
			return nil, fmt.Errorf("rules[%d].match.prefix: %q must start with \"/\"", i, prefix)
		}
		cr := rule{prefix: prefix}
		switch {
		case r.GetRequires() != nil:
			req, err := c.compileRequirement(r.GetRequires(), 0)
			if err != nil {
				return nil, fmt.Errorf("rules[%d].requires: %w", i, err)
			}
			cr.req = req
		case r.GetRequirementName() != "":
			req, ok := cfg.GetRequirementMap()[r.GetRequirementName()]
			if !ok {
				return nil, fmt.Errorf("rules[%d].requirement_name %q: not in requirement_map", i, r.GetRequirementName())
			}
			compiled, err := c.compileRequirement(req, 0)
			if err != nil {
				return nil, fmt.Errorf("requirement_map[%q]: %w", r.GetRequirementName(), err)
			}
			cr.req = compiled
		}
		c.rules = append(c.rules, cr)
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.GetRequirementMap())) {
		req, err := c.compileRequirement(cfg.GetRequirementMap()[name], 0)
		if err != nil {
			return nil, fmt.Errorf("requirement_map[%q]: %w", name, err)
		}
		c.reqMap[name] = req
	}
	return c, nil
}

func (c *config) compileRequirement(r *jwtv3.JwtRequirement, depth int) (*requirement, error) {
	if depth > maxReqDepth {
		return nil, fmt.Errorf("nested deeper than %d", maxReqDepth)
	}
	switch t := r.GetRequiresType().(type) {
	case *jwtv3.JwtRequirement_ProviderName:
		p, ok := c.providers[t.ProviderName]
		if !ok {
			return nil, fmt.Errorf("provider_name %q: no such provider", t.ProviderName)
		}
		return &requirement{kind: reqProvider, provider: p}, nil
	case *jwtv3.JwtRequirement_RequiresAny:
		return c.compileList(reqAny, "requires_any", t.RequiresAny.GetRequirements(), depth)
	case *jwtv3.JwtRequirement_RequiresAll:
		return c.compileList(reqAll, "requires_all", t.RequiresAll.GetRequirements(), depth)
	case *jwtv3.JwtRequirement_AllowMissing:
		return &requirement{kind: reqAllowMissing}, nil
	case nil:
		return nil, errors.New("one of provider_name, requires_any, requires_all, allow_missing is required")
	default:
		return nil, fmt.Errorf("%T: not supported", t)
	}
}

func (c *config) compileList(kind reqKind, field string, reqs []*jwtv3.JwtRequirement, depth int) (*requirement, error) {
	if len(reqs) < 2 {
		return nil, fmt.Errorf("%s.requirements: at least 2 are required", field)
	}
	out := &requirement{kind: kind}
	for i, r := range reqs {
		child, err := c.compileRequirement(r, depth+1)
		if err != nil {
			return nil, fmt.Errorf("%s.requirements[%d]: %w", field, i, err)
		}
		if child.kind == reqAllowMissing && kind != reqAny {
			return nil, fmt.Errorf("%s.requirements[%d]: allow_missing is supported in requires_any only", field, i)
		}
		out.children = append(out.children, child)
	}
	return out, nil
}

func compileProvider(name string, p *jwtv3.JwtProvider, opts options) (*provider, error) {
	out := &provider{
		name:        name,
		issuer:      p.GetIssuer(),
		audiences:   slices.Clone(p.GetAudiences()),
		forward:     p.GetForward(),
		params:      slices.Clone(p.GetFromParams()),
		cookies:     slices.Clone(p.GetFromCookies()),
		skew:        time.Duration(p.GetClockSkewSeconds()) * time.Second,
		requireExp:  p.GetRequireExpiration(),
		metadataKey: p.GetPayloadInMetadata(),
		spaceClaims: slices.Clone(p.GetNormalizePayloadInMetadata().GetSpaceDelimitedClaims()),
		now:         opts.now,
	}
	if p.ClockSkewSeconds == 0 {
		out.skew = 60 * time.Second // Envoy's default
	}
	for i, h := range p.GetFromHeaders() {
		if h.GetName() == "" {
			return nil, fmt.Errorf("from_headers[%d].name: required", i)
		}
		out.headers = append(out.headers, tokenHeader{name: http.CanonicalHeaderKey(h.GetName()), prefix: h.GetValuePrefix()})
	}
	if len(out.headers) == 0 && len(out.params) == 0 && len(out.cookies) == 0 {
		// Envoy's default locations.
		out.headers = []tokenHeader{{name: "Authorization", prefix: "Bearer "}}
		out.params = []string{"access_token"}
	}
	for i, ch := range p.GetClaimToHeaders() {
		if ch.GetHeaderName() == "" || ch.GetClaimName() == "" {
			return nil, fmt.Errorf("claim_to_headers[%d]: header_name and claim_name are required", i)
		}
		out.claimHeaders = append(out.claimHeaders, claimHeader{header: http.CanonicalHeaderKey(ch.GetHeaderName()), claim: ch.GetClaimName()})
	}
	switch src := p.GetJwksSourceSpecifier().(type) {
	case *jwtv3.JwtProvider_LocalJwks:
		switch {
		case src.LocalJwks.GetInlineString() != "":
			keys, err := parseJWKS([]byte(src.LocalJwks.GetInlineString()))
			if err != nil {
				return nil, fmt.Errorf("local_jwks.inline_string: %w", err)
			}
			out.keys = staticKeys(keys)
		case src.LocalJwks.GetFilename() != "":
			fk, err := newFileKeys(src.LocalJwks.GetFilename(), opts.now, opts.logger)
			if err != nil {
				return nil, err
			}
			out.keys = fk
		default:
			return nil, errors.New("local_jwks: inline_string or filename is required")
		}
	case *jwtv3.JwtProvider_RemoteJwks:
		uri := src.RemoteJwks.GetHttpUri().GetUri()
		if !strings.HasPrefix(uri, "https://") && !strings.HasPrefix(uri, "http://") {
			return nil, fmt.Errorf("remote_jwks.http_uri.uri %q: want an https:// URL", uri)
		}
		key := remoteCacheKey{uri: uri, timeout: defaultFetchTimeout, cacheFor: defaultCacheDuration}
		if d := src.RemoteJwks.GetHttpUri().GetTimeout(); d != nil && d.AsDuration() > 0 {
			key.timeout = d.AsDuration()
		}
		if d := src.RemoteJwks.GetCacheDuration(); d != nil && d.AsDuration() > 0 {
			key.cacheFor = d.AsDuration()
		}
		newKeys := func() *remoteKeys {
			return &remoteKeys{uri: key.uri, timeout: key.timeout, cacheFor: key.cacheFor,
				client: opts.client, now: opts.now, logger: opts.logger}
		}
		if opts.remotes != nil {
			out.keys = opts.remotes.get(key, newKeys)
		} else {
			out.keys = newKeys()
		}
	default:
		return nil, errors.New("remote_jwks or local_jwks is required")
	}
	out.tokens = out.parser()
	out.cache = &tokenCache{entries: map[string]cachedToken{}}
	return out, nil
}

// keyAllows reports whether key verifies tokens signed with alg: the
// allow-list of alg by key type (and curve), so that no token chooses how
// its key is used.
func keyAllows(key any, alg string) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		switch k.Curve.Params().Name {
		case "P-256":
			return alg == "ES256"
		case "P-384":
			return alg == "ES384"
		case "P-521":
			return alg == "ES512"
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// parser is the provider's token parser: the algorithm allow-list, the
// issuer, the clock and its skew.
func (p *provider) parser() *jwt.Parser {
	opts := []jwt.ParserOption{jwt.WithValidMethods(allAlgorithms), jwt.WithLeeway(p.skew), jwt.WithIssuedAt()}
	if p.issuer != "" {
		opts = append(opts, jwt.WithIssuer(p.issuer))
	}
	if len(p.audiences) > 0 {
		opts = append(opts, jwt.WithAudience(p.audiences...)) // any one of them
	}
	if p.requireExp {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	if p.now != nil {
		opts = append(opts, jwt.WithTimeFunc(p.now))
	}
	return jwt.NewParser(opts...)
}
