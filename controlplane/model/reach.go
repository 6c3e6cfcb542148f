package model

import (
	"regexp"
	"slices"
	"strings"

	"github.com/meshgate/meshgate/policy"
)

// Outbound scopes of a sidecar (MeshConfig spec.outboundScope).
const (
	// OutboundScopeAll: a sidecar's outbound configuration holds every
	// service of the mesh.
	OutboundScopeAll = policy.OutboundScopeAll
	// OutboundScopeAuthorized: only the services its identity may call
	// (Model.MayCall).
	OutboundScopeAuthorized = policy.OutboundScopeAuthorized
)

// MayCall reports whether the outbound configuration of a sidecar of caller
// holds dest: always with OutboundScopeAll; with OutboundScopeAuthorized
// when dest's authorization could allow some request from caller's SPIFFE ID
// (Authorization.MayAllow). Whatever it says, dest's sidecars still enforce
// their authorization on every request: scoping only leaves out what would
// be denied anyway.
func (m *Model) MayCall(caller NamespacedName, dest *Service) bool {
	if m.Mesh.OutboundScope != OutboundScopeAuthorized {
		return true
	}
	return dest.Authorization.MayAllow(m.Mesh.SPIFFEID(caller.Namespace, caller.Name), m.matchString)
}

// MayAllow reports whether some request from the peer with SPIFFE ID peerID
// could be allowed where a applies. A nil Authorization allows everything.
// It is false when a DENY rule matches every request of the peer (its
// source decided by identity alone, no operation), or when ALLOW is
// enforced and no ALLOW rule's source can match the peer. An IP block may
// match any peer, an operation (method, path, header) some request: such
// rules never exclude a peer. match compares one StringMatch with an
// identity; nil uses exact, prefix and regular-expression matching.
func (a *Authorization) MayAllow(peerID string, match func(StringMatch, string) bool) bool {
	if a == nil {
		return true
	}
	if match == nil {
		match = matchString
	}
	for _, r := range a.Deny {
		if r.matchesEveryRequestOf(peerID, match) {
			return false
		}
	}
	if !a.EnforceAllow {
		return true
	}
	for _, r := range a.Allow {
		if len(r.From) == 0 {
			return true
		}
		for _, f := range r.From {
			if f.identityMatches(peerID, match) {
				return true
			}
		}
	}
	return false
}

// matchesEveryRequestOf reports whether the rule matches whatever the peer
// peerID sends: some source entry matches it by identity alone and some
// operation entry (or none) matches every request.
func (r *AuthzRule) matchesEveryRequestOf(peerID string, match func(StringMatch, string) bool) bool {
	anyRequest := len(r.To) == 0 || slices.ContainsFunc(r.To, func(to *AuthzTo) bool {
		return len(to.Methods) == 0 && len(to.Paths) == 0 && len(to.Headers) == 0
	})
	if !anyRequest {
		return false
	}
	if len(r.From) == 0 {
		return true
	}
	return slices.ContainsFunc(r.From, func(f *AuthzFrom) bool {
		return len(f.IPBlocks) == 0 && len(f.Claims) == 0 && f.identityMatches(peerID, match)
	})
}

// identityMatches reports whether every identity field of f (services,
// identities, namespaces) that is set matches peerID; IP blocks are not
// looked at.
func (f *AuthzFrom) identityMatches(peerID string, match func(StringMatch, string) bool) bool {
	for _, field := range [][]StringMatch{f.Services, f.Identities, f.Namespaces} {
		if len(field) > 0 && !slices.ContainsFunc(field, func(sm StringMatch) bool { return match(sm, peerID) }) {
			return false
		}
	}
	return true
}

// matchString is m's StringMatch comparison, with the regular expressions
// compiled once by Compile.
func (m *Model) matchString(sm StringMatch, s string) bool {
	if sm.Kind == MatchRegex {
		if re, ok := m.regexps[sm.Value]; ok {
			return re.MatchString(s)
		}
	}
	return matchString(sm, s)
}

// matchString compares s with sm as Envoy's StringMatcher does (a regular
// expression must match the whole string). An expression that does not
// compile (impossible after Compile) matches everything: scoping must never
// leave out a service that could be called.
func matchString(sm StringMatch, s string) bool {
	switch sm.Kind {
	case MatchExact:
		return s == sm.Value
	case MatchPrefix:
		return strings.HasPrefix(s, sm.Value)
	case MatchRegex:
		re, err := compileWhole(sm.Value)
		return err != nil || re.MatchString(s)
	}
	return true
}

// compileWhole compiles an expression that must match a whole string.
func compileWhole(expr string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:` + expr + `)$`)
}

// reachIndex answers MayCall for every service of a model at once: most
// authorizations allow a fixed list of services, which index by caller.
type reachIndex struct {
	// open services may be called by every caller.
	open []int
	// byCaller lists, by SPIFFE ID, the services whose authorization
	// allows exactly a list of service identities, this one among them.
	byCaller map[string][]int
	// other services are asked (Authorization.MayAllow) caller by caller.
	other []int
}

// buildReachIndex classifies the services of m (sorted) for CallableBy.
func (m *Model) buildReachIndex() *reachIndex {
	idx := &reachIndex{byCaller: map[string][]int{}}
	for i, svc := range m.Services {
		a := svc.Authorization
		switch {
		case a == nil || (len(a.Deny) == 0 && !a.EnforceAllow):
			idx.open = append(idx.open, i)
		case len(a.Deny) == 0 && allowsServiceList(a.Allow):
			for _, r := range a.Allow {
				for _, f := range r.From {
					for _, sm := range f.Services {
						if ids := idx.byCaller[sm.Value]; len(ids) == 0 || ids[len(ids)-1] != i {
							idx.byCaller[sm.Value] = append(ids, i)
						}
					}
				}
			}
		default:
			idx.other = append(idx.other, i)
		}
	}
	return idx
}

// allowsServiceList reports whether every ALLOW rule has sources and every
// source is exactly a list of service identities.
func allowsServiceList(rules []*AuthzRule) bool {
	for _, r := range rules {
		if len(r.From) == 0 {
			return false
		}
		for _, f := range r.From {
			if len(f.Services) == 0 || len(f.Identities)+len(f.Namespaces)+len(f.IPBlocks) > 0 {
				return false
			}
			for _, sm := range f.Services {
				if sm.Kind != MatchExact {
					return false
				}
			}
		}
	}
	return true
}

// CallableBy reports, for each service of m.Services (same order), whether
// MayCall(caller, service) holds; it is the same answer for every service
// at the cost of a few lookups, not one authorization walk per service.
func (m *Model) CallableBy(caller NamespacedName) []bool {
	out := make([]bool, len(m.Services))
	if m.Mesh.OutboundScope != OutboundScopeAuthorized {
		for i := range out {
			out[i] = true
		}
		return out
	}
	idx := m.reach
	if idx == nil { // a Model not made by Compile
		idx = m.buildReachIndex()
	}
	for _, i := range idx.open {
		out[i] = true
	}
	id := m.Mesh.SPIFFEID(caller.Namespace, caller.Name)
	for _, i := range idx.byCaller[id] {
		out[i] = true
	}
	for _, i := range idx.other {
		out[i] = m.Services[i].Authorization.MayAllow(id, m.matchString)
	}
	return out
}
