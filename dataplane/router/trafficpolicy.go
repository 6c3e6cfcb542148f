package router

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// HashPolicy is a route's hash_policy: what a consistent-hash cluster
// (ring hash, Maglev) hashes of a request. Exactly one of Header, Cookie
// and SourceIP is set. Immutable.
type HashPolicy struct {
	// Header is the canonical name of the request header hashed.
	Header string
	// Cookie is the name of the cookie hashed; when the request has none
	// and CookieTTL is set, the proxy makes one and sets it on the
	// response (Max-Age CookieTTL, Path CookiePath).
	Cookie     string
	CookieTTL  time.Duration
	CookiePath string
	// SourceIP hashes the client's address.
	SourceIP bool
}

// HashPolicy returns the route's hash policy, nil when it has none.
func (rt *Route) HashPolicy() *HashPolicy { return rt.hash }

// AttemptCountHeader is the header of a request's attempt count (1 for
// the first try), Envoy's: on the requests to the upstream with its
// virtual host's include_request_attempt_count, on the response with
// include_attempt_count_in_response.
const AttemptCountHeader = "X-Envoy-Attempt-Count"

// AttemptCountOnRequest reports whether the tries of the route's requests
// carry AttemptCountHeader.
func (rt *Route) AttemptCountOnRequest() bool { return rt.attemptCountRequest }

// AttemptCountOnResponse reports whether the route's responses carry
// AttemptCountHeader.
func (rt *Route) AttemptCountOnResponse() bool { return rt.attemptCountResponse }

// IdleTimeout is the route's idle_timeout: a request whose stream has no
// activity for this long is ended. Zero: none.
func (rt *Route) IdleTimeout() time.Duration { return rt.idleTimeout }

// RetriesMethod reports whether a request of method may be retried: the
// policy's retriable_request_headers on :method, when it has some, must
// name it.
func (p *RetryPolicy) RetriesMethod(method string) bool {
	return p.methods == nil || slices.Contains(p.methods, method)
}

// compilePolicyTraffic compiles the route action's hash policy, idle
// timeout and the retry policy's retriable_request_headers.
func compilePolicyTraffic(rt *Route, ra *routev3.RouteAction) error {
	if hp := ra.GetHashPolicy(); len(hp) > 0 {
		if len(hp) > 1 {
			return errors.New("hash_policy: one policy at most")
		}
		h, err := compileHashPolicy(hp[0])
		if err != nil {
			return fmt.Errorf("hash_policy[0].%w", err)
		}
		rt.hash = h
	}
	if d := ra.GetIdleTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return fmt.Errorf("idle_timeout: invalid duration %v", d)
		}
		rt.idleTimeout = d.AsDuration()
	}
	if matchers := ra.GetRetryPolicy().GetRetriableRequestHeaders(); len(matchers) > 0 && rt.retry != nil {
		methods := make([]string, 0, len(matchers))
		for i, m := range matchers {
			exact := m.GetStringMatch().GetExact()
			if m.GetName() != ":method" || exact == "" || m.GetInvertMatch() || m.GetStringMatch().GetIgnoreCase() {
				return fmt.Errorf("retry_policy.retriable_request_headers[%d]: only an exact :method match is supported", i)
			}
			methods = append(methods, exact)
		}
		rt.retry.methods = methods
	}
	return nil
}

func compileHashPolicy(hp *routev3.RouteAction_HashPolicy) (*HashPolicy, error) {
	switch {
	case hp.GetHeader() != nil:
		name := hp.GetHeader().GetHeaderName()
		if name == "" || name[0] == ':' {
			return nil, fmt.Errorf("header.header_name: %q is not a request header name", name)
		}
		return &HashPolicy{Header: http.CanonicalHeaderKey(name)}, nil
	case hp.GetCookie() != nil:
		c := hp.GetCookie()
		if c.GetName() == "" {
			return nil, errors.New("cookie.name: required")
		}
		h := &HashPolicy{Cookie: c.GetName(), CookiePath: c.GetPath()}
		if ttl := c.GetTtl(); ttl != nil {
			if err := ttl.CheckValid(); err != nil || ttl.AsDuration() < 0 {
				return nil, fmt.Errorf("cookie.ttl: invalid duration %v", ttl)
			}
			h.CookieTTL = ttl.AsDuration()
		}
		return h, nil
	case hp.GetConnectionProperties().GetSourceIp():
		return &HashPolicy{SourceIP: true}, nil
	}
	return nil, errors.New("one of header, cookie and connection_properties.source_ip is required")
}
