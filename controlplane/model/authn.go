package model

import (
	"fmt"
	"slices"
	"strings"
	"time"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/policy"
)

// Authentication is what the SecurityPolicies applying at one enforcement
// point require of a request's credentials: a JWT that one of the
// providers verifies (of any of the policies).
type Authentication struct {
	// Policies with authentication applying here, "namespace/name", sorted.
	Policies []string `json:"policies"`
	// JWT providers, in policy then declaration order.
	JWT []*JWTProvider `json:"jwt,omitempty"`
	// Optional: every applying policy lets requests without a token through.
	Optional bool `json:"optional,omitempty"`
	// APIKey: a key of one of the consumers (of any applying policy);
	// nil: none required.
	APIKey *APIKeyAuthn `json:"apiKey,omitempty"`
	// Basic: the credentials of one of the users; nil: none required.
	Basic *BasicAuthn `json:"basic,omitempty"`
}

// APIKeyAuthn is the API keys required at one point.
type APIKeyAuthn struct {
	// Consumers by name, with the SHA-256 (hex, lowercase) of their keys.
	Consumers []policy.APIKeyConsumer `json:"consumers"`
	// Headers, Params, Cookies: where the key is (all empty: X-API-Key).
	Headers       []string `json:"headers,omitempty"`
	Params        []string `json:"params,omitempty"`
	Cookies       []string `json:"cookies,omitempty"`
	ForwardHeader string   `json:"forwardHeader,omitempty"`
	Forward       bool     `json:"forward,omitempty"`
}

// BasicAuthn is the basic-auth users required at one point.
type BasicAuthn struct {
	// Htpasswd lines, of every applying policy.
	Htpasswd      string `json:"htpasswd"`
	ForwardHeader string `json:"forwardHeader,omitempty"`
}

// JWTProvider is one compiled JWT provider, with its defaults applied.
type JWTProvider struct {
	// Name is "<namespace>/<policy>/<provider>", unique in the mesh.
	Name      string   `json:"name"`
	Issuer    string   `json:"issuer,omitempty"`
	Audiences []string `json:"audiences,omitempty"`
	// RemoteURI, or InlineJWKS, or File: where the keys are.
	RemoteURI     string        `json:"remoteURI,omitempty"`
	CacheDuration time.Duration `json:"cacheDuration,omitempty"`
	FetchTimeout  time.Duration `json:"fetchTimeout,omitempty"`
	InlineJWKS    string        `json:"inlineJWKS,omitempty"`
	File          string        `json:"file,omitempty"`
	// Headers, Params, Cookies: where the token is (all empty: the
	// Authorization header's Bearer token, or access_token).
	Headers   []policy.JWTHeader `json:"headers,omitempty"`
	Params    []string           `json:"params,omitempty"`
	Cookies   []string           `json:"cookies,omitempty"`
	ClockSkew time.Duration      `json:"clockSkew"`
	// ClaimToHeaders copies claims into request headers.
	ClaimToHeaders []policy.ClaimToHeader `json:"claimToHeaders,omitempty"`
	Forward        bool                   `json:"forward,omitempty"`
	// Consumers: the declared consumers among the token subjects.
	Consumers []policy.JWTConsumer `json:"consumers,omitempty"`
}

// Defaults of a JWT provider.
const (
	DefaultJWTClockSkew      = 60 * time.Second
	DefaultJWKSCacheDuration = 10 * time.Minute
	DefaultJWKSFetchTimeout  = 5 * time.Second
)

// ClaimMatch matches one claim of the request's verified JWT: a string
// equal to one of Values, or a list holding one.
type ClaimMatch struct {
	// Path is the claim's name split at ".".
	Path []string `json:"path,omitempty"`
	// Principal: the match is of the authenticated principal instead (a
	// JWT's sub, an API consumer, a basic-auth user).
	Principal bool     `json:"principal,omitempty"`
	Values    []string `json:"values"`
}

// compiledAuthn is one policy's authentication.
type compiledAuthn struct {
	jwt      []*JWTProvider
	optional bool
	apiKey   *APIKeyAuthn
	basic    *BasicAuthn
}

// compileAPIKey compiles an apiKey section; fileConsumers are those of
// its consumersFile (policy.Set.APIKeyFileConsumers).
func compileAPIKey(a *policy.APIKeyAuthentication, fileConsumers []policy.APIKeyConsumer) *compiledAuthn {
	out := &APIKeyAuthn{ForwardHeader: a.ForwardConsumerHeader, Forward: a.Forward}
	for _, c := range slices.Concat(a.Consumers, a.SecretConsumers, fileConsumers) {
		hashes := make([]string, len(c.SHA256s))
		for i, h := range c.SHA256s {
			hashes[i] = strings.ToLower(h)
		}
		out.Consumers = append(out.Consumers, policy.APIKeyConsumer{Name: c.Name, SHA256s: hashes})
	}
	if e := a.ExtractFrom; e != nil {
		out.Headers, out.Params, out.Cookies = slices.Clone(e.Headers), slices.Clone(e.Params), slices.Clone(e.Cookies)
	}
	return &compiledAuthn{apiKey: out}
}

func compileJWT(name string, j *policy.JWTAuthentication) (*compiledAuthn, error) {
	out := &compiledAuthn{optional: j.Optional}
	for i, p := range j.Providers {
		jp := &JWTProvider{
			Name:           name + "/" + p.Name,
			Issuer:         p.Issuer,
			Audiences:      slices.Clone(p.Audiences),
			ClockSkew:      DefaultJWTClockSkew,
			ClaimToHeaders: slices.Clone(p.ClaimToHeaders),
			Forward:        p.Forward,
			Consumers:      slices.Clone(p.Consumers),
		}
		where := fmt.Sprintf("spec.jwt.providers[%d]", i)
		d := func(field, v string, def time.Duration) (time.Duration, error) {
			if v == "" {
				return def, nil
			}
			got, err := policy.ParseDuration(gwapiv1.Duration(v))
			if err != nil {
				return 0, fmt.Errorf("%s.%s: %w", where, field, err)
			}
			return got, nil
		}
		var err error
		if jp.ClockSkew, err = d("clockSkew", p.ClockSkew, DefaultJWTClockSkew); err != nil {
			return nil, err
		}
		switch {
		case p.RemoteJWKS != nil:
			jp.RemoteURI = p.RemoteJWKS.URI
			if jp.CacheDuration, err = d("remoteJWKS.cacheDuration", p.RemoteJWKS.CacheDuration, DefaultJWKSCacheDuration); err != nil {
				return nil, err
			}
			if jp.FetchTimeout, err = d("remoteJWKS.timeout", p.RemoteJWKS.Timeout, DefaultJWKSFetchTimeout); err != nil {
				return nil, err
			}
		case p.LocalJWKS != nil && p.LocalJWKS.Inline != "":
			jp.InlineJWKS = p.LocalJWKS.Inline
		case p.LocalJWKS != nil && p.LocalJWKS.File != "":
			jp.File = p.LocalJWKS.File
		default:
			return nil, fmt.Errorf("%s: remoteJWKS or localJWKS is required", where)
		}
		if e := p.ExtractFrom; e != nil {
			jp.Headers, jp.Params, jp.Cookies = slices.Clone(e.Headers), slices.Clone(e.Params), slices.Clone(e.Cookies)
		}
		out.jwt = append(out.jwt, jp)
	}
	return out, nil
}

// authentication is what the policies applying at one enforcement point
// require of credentials; nil when none authenticates.
func authentication(policies []*compiledPolicy) *Authentication {
	var a *Authentication
	for _, cp := range policies {
		if cp.authn == nil {
			continue
		}
		if a == nil {
			a = &Authentication{Policies: []string{}, Optional: true}
		}
		a.Policies = append(a.Policies, cp.name)
		a.JWT = append(a.JWT, cp.authn.jwt...)
		if len(cp.authn.jwt) > 0 {
			a.Optional = a.Optional && cp.authn.optional
		}
		if k := cp.authn.apiKey; k != nil {
			if a.APIKey == nil {
				c := *k
				c.Consumers = slices.Clone(k.Consumers)
				a.APIKey = &c
			} else {
				a.APIKey.Consumers = append(a.APIKey.Consumers, k.Consumers...)
			}
		}
		if b := cp.authn.basic; b != nil {
			if a.Basic == nil {
				c := *b
				a.Basic = &c
			} else {
				a.Basic.Htpasswd += "\n" + b.Htpasswd
			}
		}
	}
	if a != nil && len(a.JWT) == 0 {
		a.Optional = false
	}
	if a != nil {
		slices.Sort(a.Policies)
	}
	return a
}

// RequirementName names the requirement of a: its policies, joined.
func (a *Authentication) RequirementName() string { return strings.Join(a.Policies, ",") }

func compileClaims(in []policy.ClaimMatch, principals []string) []ClaimMatch {
	var out []ClaimMatch
	if len(principals) > 0 {
		out = append(out, ClaimMatch{Principal: true, Values: slices.Clone(principals)})
	}
	for _, c := range in {
		out = append(out, ClaimMatch{Path: strings.Split(c.Name, "."), Values: slices.Clone(c.Values)})
	}
	return out
}
