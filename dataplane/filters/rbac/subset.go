package rbac

import (
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// Names of the RBAC typed configs (docs/xds.md "RBAC").
const (
	configType   protoreflect.FullName = "envoy.extensions.filters.http.rbac.v3.RBAC"
	perRouteType protoreflect.FullName = "envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
	enumAllow                          = 0 // envoy.config.rbac.v3.RBAC.Action.ALLOW
	enumDeny                           = 1 // envoy.config.rbac.v3.RBAC.Action.DENY
)

// subsetRules is the RBAC filter's part of the subset of docs/xds.md ("Identity,
// mTLS and authorization on the wire"): the filter config, its per-route
// config and the policies inside. HeaderMatcher, StringMatcher and
// RegexMatcher keep their core rules.
func subsetRules() xdscheck.Rules {
	// The StringMatcher of url_path.path and authenticated.principal_name:
	// exact, prefix, suffix, safe_regex (no contains), optionally ignore_case.
	stringMatcher := xdscheck.Allow("exact", "prefix", "suffix", "safe_regex", "ignore_case")
	return xdscheck.Rules{
		configType:   xdscheck.Allow("rules", "rules_stat_prefix"),
		perRouteType: xdscheck.Allow("rbac"),
		"envoy.config.rbac.v3.RBAC": xdscheck.Allow("policies").
			With("action", xdscheck.Field{Enums: []protoreflect.EnumNumber{enumAllow, enumDeny}}),
		"envoy.config.rbac.v3.Policy": xdscheck.Allow("permissions", "principals").
			Requires("permissions", "principals"),
		"envoy.config.rbac.v3.Permission":     xdscheck.Allow("any", "and_rules", "or_rules", "not_rule", "header", "url_path"),
		"envoy.config.rbac.v3.Permission.Set": xdscheck.Allow("rules"),
		"envoy.config.rbac.v3.Principal": xdscheck.Allow("any", "and_ids", "or_ids", "not_id", "authenticated",
			"direct_remote_ip", "header", "sourced_metadata"),
		"envoy.config.rbac.v3.Principal.Set": xdscheck.Allow("ids"),
		"envoy.config.rbac.v3.Principal.Authenticated": xdscheck.Allow().
			With("principal_name", xdscheck.Field{Only: stringMatcher}),
		"envoy.type.matcher.v3.PathMatcher": xdscheck.Allow().
			With("path", xdscheck.Field{Only: stringMatcher}).
			Requires("path"),
		"envoy.config.core.v3.CidrRange": xdscheck.Allow("address_prefix", "prefix_len"),
		// sourced_metadata (dynamic): a value of the request's authentication (a JWT claim
		// under envoy.filters.http.jwt_authn), a string or a list holding one.
		"envoy.config.rbac.v3.SourcedMetadata": xdscheck.Allow("metadata_matcher").
			With("metadata_source", xdscheck.Field{Enums: []protoreflect.EnumNumber{0}}). // DYNAMIC
			Requires("metadata_matcher"),
		"envoy.type.matcher.v3.MetadataMatcher": xdscheck.Allow("filter", "path", "value").
			Requires("filter", "path", "value"),
		"envoy.type.matcher.v3.MetadataMatcher.PathSegment": xdscheck.Allow("key").Requires("key"),
		"envoy.type.matcher.v3.ValueMatcher": xdscheck.Allow("list_match").
			With("string_match", xdscheck.Field{Only: stringMatcher}),
		"envoy.type.matcher.v3.ListMatcher": xdscheck.Allow("one_of").Requires("one_of"),
	}
}
