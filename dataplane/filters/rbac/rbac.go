// Package rbac is the Envoy RBAC HTTP filter
// (envoy.extensions.filters.http.rbac.v3.RBAC, per route RBACPerRoute) of the
// meshgate proxy, in the subset of docs/xds.md ("RBAC"): an ALLOW filter
// allows a request iff some policy matches it, a DENY filter denies it iff
// some policy matches; a denied request gets 403 "access denied".
//
// The package holds the filter whole: Factory describes it to the registry
// (dataplane/filters), subset.go is its part of the xDS subset (xdscheck),
// compile.go turns a config into an immutable Engine whose Evaluate takes no
// locks and allocates nothing in the common case (policies are tried in
// sorted name order, so the policy reported for a decision is
// deterministic), and filter.go is the request-time handler, which counts
// denials per policy in the proxy's /stats (rbac_denied).
package rbac

import (
	"net/http"
	"net/netip"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/internal/match"
	"github.com/meshgate/meshgate/dataplane/peer"
)

// NoAllowMatch is the policy Evaluate reports when an ALLOW config denies a
// request because no policy matched.
const NoAllowMatch = "no-allow-match"

// Action is what a config does with a request its policies match.
type Action uint8

const (
	// ActionAllow allows matched requests and denies the rest.
	ActionAllow Action = iota + 1
	// ActionDeny denies matched requests and allows the rest.
	ActionDeny
)

// String returns "ALLOW" or "DENY".
func (a Action) String() string {
	switch a {
	case ActionAllow:
		return "ALLOW"
	case ActionDeny:
		return "DENY"
	}
	return "UNKNOWN"
}

// Engine is one compiled RBAC config. It is immutable and safe for
// concurrent use; a nil *Engine enforces nothing.
type Engine struct {
	enforce    bool // false: the config had no rules
	action     Action
	policies   []policy // sorted by name
	statPrefix string
	noMatchKey string // the Stats key of an ALLOW denial
}

// policy matches a request when one of its permissions and one of its
// principals match.
type policy struct {
	name        string
	permissions []node
	principals  []node
}

// nodeKind is the kind of one permission or principal.
type nodeKind uint8

const (
	nodeAny nodeKind = iota + 1
	nodeAnd
	nodeOr
	nodeNot
	nodeHeader
	nodeURLPath
	nodeAuthenticated    // authenticated with principal_name
	nodeAuthenticatedAny // authenticated without principal_name: any mTLS peer
	nodeRemoteIP
	nodeMetadata // a value of the request's authentication metadata
)

// node is a compiled Permission or Principal: both are trees of the same
// shape once compiled.
type node struct {
	kind     nodeKind
	children []node // and, or: the operands; not: exactly one
	str      match.String
	header   match.Header
	prefix   netip.Prefix
	// metadata: the namespace and key path of the value; list: the value
	// must be a list with an element str matches (else a string it matches).
	metaFilter string
	metaPath   []string
	list       bool
}

// request caches what nodes read from one request, computed on first use.
type request struct {
	r        *http.Request
	path     string
	identity string
	ip       netip.Addr
	have     uint8 // bit set of have* fields already computed
}

const (
	havePath uint8 = 1 << iota
	haveIdentity
	haveIP
)

// Enforces reports whether the config has rules; one without rules allows
// everything.
func (f *Engine) Enforces() bool { return f != nil && f.enforce }

// Action is the config's action (meaningless when it does not enforce).
func (f *Engine) Action() Action {
	if f == nil {
		return 0
	}
	return f.action
}

// StatPrefix is rules_stat_prefix: the names of the SecurityPolicies compiled
// into the config, for logs.
func (f *Engine) StatPrefix() string {
	if f == nil {
		return ""
	}
	return f.statPrefix
}

// Policies returns the policy names in evaluation order, in a new slice.
func (f *Engine) Policies() []string {
	if f == nil {
		return nil
	}
	names := make([]string, len(f.policies))
	for i := range f.policies {
		names[i] = f.policies[i].name
	}
	return names
}

// Evaluate decides r. allowed is false when the request must be refused.
// policy is the first policy (in name order) that matched: the one that
// denied a request under DENY, the one that allowed it under ALLOW; an ALLOW
// config that matched nothing reports NoAllowMatch, and a DENY config that
// matched nothing "". A nil or rule-less engine allows everything.
//
// The peer identity is peer.Identity(r.Context()); the remote IP comes from
// r.RemoteAddr. Evaluate does not modify r.
func (f *Engine) Evaluate(r *http.Request) (allowed bool, policy string) {
	if f == nil || !f.enforce {
		return true, ""
	}
	req := request{r: r}
	for i := range f.policies {
		p := &f.policies[i]
		if p.matches(&req) {
			return f.action == ActionAllow, p.name
		}
	}
	if f.action == ActionAllow {
		return false, NoAllowMatch
	}
	return true, ""
}

// StatKey is the rbac_denied key of a denial Evaluate reported with policy: the
// policy name under DENY; under ALLOW "<rules_stat_prefix>/no-allow-match"
// (or "no-allow-match" without a prefix). It does not allocate.
func (f *Engine) StatKey(policy string) string {
	if f != nil && f.action == ActionAllow && policy == NoAllowMatch {
		return f.noMatchKey
	}
	return policy
}

func (p *policy) matches(req *request) bool {
	return anyMatches(p.permissions, req) && anyMatches(p.principals, req)
}

func anyMatches(nodes []node, req *request) bool {
	for i := range nodes {
		if nodes[i].matches(req) {
			return true
		}
	}
	return false
}

func (n *node) matches(req *request) bool {
	switch n.kind {
	case nodeAny:
		return true
	case nodeAnd:
		for i := range n.children {
			if !n.children[i].matches(req) {
				return false
			}
		}
		return true
	case nodeOr:
		return anyMatches(n.children, req)
	case nodeNot:
		return !n.children[0].matches(req)
	case nodeHeader:
		return n.header.Match(req.r)
	case nodeURLPath:
		return n.str.Match(req.urlPath())
	case nodeAuthenticated:
		id := req.peerIdentity()
		return id != "" && n.str.Match(id)
	case nodeAuthenticatedAny:
		return req.peerIdentity() != ""
	case nodeRemoteIP:
		ip := req.remoteIP()
		return ip.IsValid() && n.prefix.Contains(ip)
	case nodeMetadata:
		return n.metadataMatches(req)
	}
	return false
}

// metadataMatches matches the value at the node's path of the request's
// authentication metadata (httpfilter.Auth): its namespace and key first,
// then keys into the value's objects. A missing value never matches.
func (n *node) metadataMatches(req *request) bool {
	a := httpfilter.AuthFrom(req.r.Context())
	if a == nil || a.MetadataNamespace != n.metaFilter || len(n.metaPath) == 0 || a.MetadataKey != n.metaPath[0] {
		return false
	}
	var v any = a.Metadata
	for _, key := range n.metaPath[1:] {
		m, ok := v.(map[string]any)
		if !ok {
			return false
		}
		if v, ok = m[key]; !ok {
			return false
		}
	}
	if !n.list {
		s, ok := v.(string)
		return ok && n.str.Match(s)
	}
	items, ok := v.([]any)
	if !ok {
		return false
	}
	for _, item := range items {
		if s, ok := item.(string); ok && n.str.Match(s) {
			return true
		}
	}
	return false
}

// urlPath is the request's escaped path without the query, as the router
// matches it.
func (req *request) urlPath() string {
	if req.have&havePath == 0 {
		req.have |= havePath
		if req.r.URL != nil {
			req.path = req.r.URL.EscapedPath()
		}
	}
	return req.path
}

func (req *request) peerIdentity() string {
	if req.have&haveIdentity == 0 {
		req.have |= haveIdentity
		req.identity = peer.Identity(req.r.Context())
	}
	return req.identity
}

// remoteIP is the IP of r.RemoteAddr ("ip:port" or a bare IP), IPv4-mapped
// IPv6 addresses unmapped and zones dropped; the zero Addr when it does not parse.
func (req *request) remoteIP() netip.Addr {
	if req.have&haveIP == 0 {
		req.have |= haveIP
		if ap, err := netip.ParseAddrPort(req.r.RemoteAddr); err == nil {
			req.ip = ap.Addr().Unmap().WithZone("")
		} else if a, err := netip.ParseAddr(req.r.RemoteAddr); err == nil {
			req.ip = a.Unmap().WithZone("")
		}
	}
	return req.ip
}
