package xdscheck

import (
	// RBAC typed configs, registered for Any resolution.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Names of the RBAC typed configs (docs/xds.md "RBAC").
const (
	rbacFilterType   protoreflect.FullName = "envoy.extensions.filters.http.rbac.v3.RBAC"
	rbacPerRouteType protoreflect.FullName = "envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
	enumRBACAllow                          = 0 // envoy.config.rbac.v3.RBAC.Action.ALLOW
	enumRBACDeny                           = 1 // envoy.config.rbac.v3.RBAC.Action.DENY
)

// rbacStringMatcher is the StringMatcher of url_path.path and
// authenticated.principal_name: exact, prefix, suffix, safe_regex (no
// contains), optionally ignore_case.
var rbacStringMatcher = allow("exact", "prefix", "suffix", "safe_regex", "ignore_case")

// rbacSubset is the RBAC part of docs/xds.md ("Identity, mTLS and
// authorization on the wire"): the RBAC HTTP filter and its per-route config.
// HeaderMatcher, StringMatcher and RegexMatcher keep their core rules.
var rbacSubset = map[protoreflect.FullName]*message{
	rbacFilterType:   allow("rules", "rules_stat_prefix"),
	rbacPerRouteType: allow("rbac"),
	"envoy.config.rbac.v3.RBAC": allow("policies").
		with("action", field{enums: []protoreflect.EnumNumber{enumRBACAllow, enumRBACDeny}}),
	"envoy.config.rbac.v3.Policy": allow("permissions", "principals").
		requires("permissions", "principals"),
	"envoy.config.rbac.v3.Permission":     allow("any", "and_rules", "or_rules", "not_rule", "header", "url_path"),
	"envoy.config.rbac.v3.Permission.Set": allow("rules"),
	"envoy.config.rbac.v3.Principal": allow("any", "and_ids", "or_ids", "not_id", "authenticated",
		"direct_remote_ip", "header"),
	"envoy.config.rbac.v3.Principal.Set": allow("ids"),
	"envoy.config.rbac.v3.Principal.Authenticated": allow().
		with("principal_name", field{only: rbacStringMatcher}),
	"envoy.type.matcher.v3.PathMatcher": allow().
		with("path", field{only: rbacStringMatcher}).
		requires("path"),
	"envoy.config.core.v3.CidrRange": allow("address_prefix", "prefix_len"),
}
