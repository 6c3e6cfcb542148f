package translate

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/controlplane/model"
)

// RBACDenyFilterName and RBACAllowFilterName are the HTTP filters that
// enforce SecurityPolicy DENY and ALLOW rules.
const (
	RBACDenyFilterName  = "meshgate.rbac.deny"
	RBACAllowFilterName = "meshgate.rbac.allow"
)

// rbacHTTPFilters are the deny and allow filters enforcing a at the level of
// a connection manager (nil a: filters that enforce nothing, for per-route
// configs to override).
func rbacHTTPFilters(a *model.Authorization) ([]*hcmv3.HttpFilter, error) {
	deny, allow := rbacConfigs(a)
	out := make([]*hcmv3.HttpFilter, 0, 2)
	for _, f := range []struct {
		name string
		cfg  *rbacfilterv3.RBAC
	}{{RBACDenyFilterName, deny}, {RBACAllowFilterName, allow}} {
		cfg := f.cfg
		if cfg == nil {
			cfg = &rbacfilterv3.RBAC{}
		}
		typed, err := anypb.New(cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		out = append(out, &hcmv3.HttpFilter{Name: f.name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed}})
	}
	return out, nil
}

// rbacPerRoute is the typed_per_filter_config replacing both filters'
// configuration on one route with a.
func rbacPerRoute(a *model.Authorization) (map[string]*anypb.Any, error) {
	deny, allow := rbacConfigs(a)
	out := make(map[string]*anypb.Any, 2)
	for name, cfg := range map[string]*rbacfilterv3.RBAC{RBACDenyFilterName: deny, RBACAllowFilterName: allow} {
		// RBACPerRoute without rbac disables the filter on the route.
		typed, err := anypb.New(&rbacfilterv3.RBACPerRoute{Rbac: cfg})
		if err != nil {
			return nil, fmt.Errorf("%s per route: %w", name, err)
		}
		out[name] = typed
	}
	return out, nil
}

// rbacConfigs compiles an authorization into the deny and allow filter
// configurations; nil where that filter enforces nothing.
func rbacConfigs(a *model.Authorization) (deny, allow *rbacfilterv3.RBAC) {
	if a == nil {
		return nil, nil
	}
	if len(a.Deny) > 0 {
		deny = &rbacfilterv3.RBAC{
			Rules:           rbacRules(rbacv3.RBAC_DENY, a.Deny),
			RulesStatPrefix: strings.Join(model.PolicyNames(a.Deny), ","),
		}
	}
	if a.EnforceAllow {
		allow = &rbacfilterv3.RBAC{
			Rules:           rbacRules(rbacv3.RBAC_ALLOW, a.Allow),
			RulesStatPrefix: strings.Join(a.Policies, ","),
		}
	}
	return deny, allow
}

func rbacRules(action rbacv3.RBAC_Action, rules []*model.AuthzRule) *rbacv3.RBAC {
	out := &rbacv3.RBAC{Action: action, Policies: make(map[string]*rbacv3.Policy, len(rules))}
	for _, r := range rules {
		p := &rbacv3.Policy{}
		for _, from := range r.From {
			p.Principals = append(p.Principals, principal(from))
		}
		if len(p.Principals) == 0 {
			p.Principals = []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}
		}
		for _, to := range r.To {
			p.Permissions = append(p.Permissions, permission(to))
		}
		if len(p.Permissions) == 0 {
			p.Permissions = []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}}
		}
		out.Policies[r.Name] = p
	}
	return out
}

// principal matches one from entry: every field set (AND), any value of a
// field (OR).
func principal(from *model.AuthzFrom) *rbacv3.Principal {
	var fields []*rbacv3.Principal
	for _, matches := range [][]model.StringMatch{from.Services, from.Identities, from.Namespaces} {
		if len(matches) == 0 {
			continue
		}
		ids := make([]*rbacv3.Principal, 0, len(matches))
		for _, m := range matches {
			ids = append(ids, &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{
				Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: stringMatch(m)},
			}})
		}
		fields = append(fields, orIDs(ids))
	}
	if len(from.IPBlocks) > 0 {
		ids := make([]*rbacv3.Principal, 0, len(from.IPBlocks))
		for _, block := range from.IPBlocks {
			ids = append(ids, &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidrRange(block)}})
		}
		fields = append(fields, orIDs(ids))
	}
	for _, c := range from.Claims {
		fields = append(fields, claimPrincipal(c))
	}
	switch len(fields) {
	case 0:
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
	case 1:
		return fields[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: fields}}}
}

func orIDs(ids []*rbacv3.Principal) *rbacv3.Principal {
	if len(ids) == 1 {
		return ids[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ids}}}
}

// permission matches one to entry: every field set (AND), any value of a
// field (OR).
func permission(to *model.AuthzTo) *rbacv3.Permission {
	var fields []*rbacv3.Permission
	if len(to.Methods) > 0 {
		rules := make([]*rbacv3.Permission, 0, len(to.Methods))
		for _, m := range to.Methods {
			rules = append(rules, headerPermission(":method", m))
		}
		fields = append(fields, orRules(rules))
	}
	if len(to.Paths) > 0 {
		rules := make([]*rbacv3.Permission, 0, len(to.Paths))
		for _, p := range to.Paths {
			rules = append(rules, &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
				Rule: &matcherv3.PathMatcher_Path{Path: stringMatch(p)},
			}}})
		}
		fields = append(fields, orRules(rules))
	}
	if len(to.Headers) > 0 {
		rules := make([]*rbacv3.Permission, 0, len(to.Headers))
		for _, h := range to.Headers {
			rules = append(rules, headerPermission(h.Name, h.Value))
		}
		fields = append(fields, orRules(rules))
	}
	switch len(fields) {
	case 0:
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
	case 1:
		return fields[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: fields}}}
}

func orRules(rules []*rbacv3.Permission) *rbacv3.Permission {
	if len(rules) == 1 {
		return rules[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: rules}}}
}

func headerPermission(name, value string) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{
		Name:                 name,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: stringMatcher(value, false)},
	}}}
}

func stringMatch(m model.StringMatch) *matcherv3.StringMatcher {
	switch m.Kind {
	case model.MatchPrefix:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: m.Value}}
	case model.MatchRegex:
		return stringMatcher(m.Value, true)
	default:
		return stringMatcher(m.Value, false)
	}
}

// cidrRange converts a canonical CIDR from the model. An unparsable block
// (impossible after compilation) becomes a range no address matches rather
// than one every address matches.
func cidrRange(block string) *corev3.CidrRange {
	prefix, err := netip.ParsePrefix(block)
	if err != nil {
		return &corev3.CidrRange{AddressPrefix: "255.255.255.255", PrefixLen: wrapperspb.UInt32(32)}
	}
	return &corev3.CidrRange{AddressPrefix: prefix.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(prefix.Bits()))}
}

// On a sidecar's outbound listener the caller is the local application,
// whose identity is the sidecar's own, and the connection is plaintext: an
// RBAC "authenticated" principal there would be evaluated against a
// downstream certificate that does not exist (Envoy: never matches). So the
// rules of a mesh route (an HTTPRoute with a Service parent) are resolved
// for the caller when its outbound configuration is built: a from entry
// naming services, identities or namespaces either matches the caller's
// SPIFFE ID (those fields are dropped, the rest of the entry stays) or
// never matches (the entry is dropped; a rule left without any from entry
// is dropped: it can never match). No authenticated principal reaches an
// outbound listener, and Envoy and the meshgate proxy give the same answer.

// rulesForCaller returns rules with their authorization resolved for the
// caller whose SPIFFE ID is callerID; rules itself when no rule names an
// identity.
func rulesForCaller(rules []*model.Rule, callerID string) []*model.Rule {
	if !slicesAnyIdentity(rules) {
		return rules
	}
	out := make([]*model.Rule, len(rules))
	for i, r := range rules {
		if r.Authorization == nil || !authorizationNamesIdentity(r.Authorization) {
			out[i] = r
			continue
		}
		resolved := *r
		resolved.Authorization = authorizationForCaller(r.Authorization, callerID)
		out[i] = &resolved
	}
	return out
}

func slicesAnyIdentity(rules []*model.Rule) bool {
	for _, r := range rules {
		if r.Authorization != nil && authorizationNamesIdentity(r.Authorization) {
			return true
		}
	}
	return false
}

// outboundDependsOnCaller reports whether some mesh route of m has an
// authorization naming an identity: then the outbound configuration
// differs between callers of one namespace.
func outboundDependsOnCaller(m *model.Model) bool {
	for _, svc := range m.Services {
		for _, port := range svc.Ports {
			if slicesAnyIdentity(port.Routes) {
				return true
			}
			for _, rules := range port.ConsumerRoutes {
				if slicesAnyIdentity(rules) {
					return true
				}
			}
		}
	}
	return false
}

func authorizationNamesIdentity(a *model.Authorization) bool {
	for _, rules := range [][]*model.AuthzRule{a.Deny, a.Allow} {
		for _, r := range rules {
			for _, from := range r.From {
				if fromNamesIdentity(from) {
					return true
				}
			}
		}
	}
	return false
}

func fromNamesIdentity(from *model.AuthzFrom) bool {
	return len(from.Services) > 0 || len(from.Identities) > 0 || len(from.Namespaces) > 0
}

// authorizationForCaller is a with its rules resolved for callerID.
func authorizationForCaller(a *model.Authorization, callerID string) *model.Authorization {
	out := *a
	out.Deny = rulesOfCaller(a.Deny, callerID)
	out.Allow = rulesOfCaller(a.Allow, callerID)
	return &out
}

func rulesOfCaller(rules []*model.AuthzRule, callerID string) []*model.AuthzRule {
	out := make([]*model.AuthzRule, 0, len(rules))
	for _, r := range rules {
		if len(r.From) == 0 {
			out = append(out, r)
			continue
		}
		resolved := *r
		resolved.From = nil
		for _, from := range r.From {
			if !fromNamesIdentity(from) {
				resolved.From = append(resolved.From, from)
				continue
			}
			if !identityFieldsMatch(from, callerID) {
				continue // never matches this caller
			}
			rest := *from
			rest.Services, rest.Identities, rest.Namespaces = nil, nil, nil
			resolved.From = append(resolved.From, &rest)
		}
		if len(resolved.From) > 0 {
			out = append(out, &resolved)
		}
	}
	return out
}

// identityFieldsMatch: every identity field set matches id (AND), by any
// of its values (OR), as the RBAC principal would.
func identityFieldsMatch(from *model.AuthzFrom, id string) bool {
	for _, matches := range [][]model.StringMatch{from.Services, from.Identities, from.Namespaces} {
		if len(matches) == 0 {
			continue
		}
		ok := false
		for _, m := range matches {
			if stringMatches(m, id) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// stringMatches evaluates m as the StringMatcher stringMatch(m) does. A
// regular expression that does not compile (impossible after compilation)
// matches nothing.
func stringMatches(m model.StringMatch, s string) bool {
	switch m.Kind {
	case model.MatchPrefix:
		return strings.HasPrefix(s, m.Value)
	case model.MatchRegex:
		re, err := regexp.Compile(`^(?:` + m.Value + `)$`)
		return err == nil && re.MatchString(s)
	default:
		return s == m.Value
	}
}
