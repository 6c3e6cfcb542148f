package translate

import (
	"fmt"
	"net/netip"
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
