package rbac

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meshgate/meshgate/dataplane/internal/match"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// maxDepth bounds the nesting of and/or/not, so a hostile config cannot
// make evaluation recurse without limit.
const maxDepth = 32

// Compile checks cfg against the RBAC filter's subset (docs/xds.md) and
// compiles it: for callers outside the proxy's apply path, which checks
// every resource once before compiling its filters. Errors start with
// "rbac: " and name the field.
func Compile(cfg *rbacv3.RBAC) (*Engine, error) {
	if cfg == nil {
		return nil, errors.New("rbac: nil config")
	}
	// Nesting first: it is refused in time proportional to maxDepth, before
	// anything walks a hostile tree whole.
	if err := checkNesting(cfg.GetRules().GetPolicies()); err != nil {
		return nil, fmt.Errorf("rbac: %w", err)
	}
	factory := Factory()
	checker, err := xdscheck.New(factory.Subset())
	if err != nil {
		return nil, err
	}
	if err := checker.Check(cfg); err != nil {
		return nil, err
	}
	e, err := compile(cfg)
	if err != nil {
		return nil, fmt.Errorf("rbac: %w", err)
	}
	return e, nil
}

// compile compiles a checked cfg. A config without rules compiles to an
// engine that enforces nothing; an ALLOW config with rules but no policies
// denies everything. Errors name the field relative to cfg.
func compile(cfg *rbacv3.RBAC) (*Engine, error) {
	if cfg == nil {
		return nil, errors.New("nil config")
	}
	if err := checkNesting(cfg.GetRules().GetPolicies()); err != nil {
		return nil, err
	}
	e := &Engine{statPrefix: cfg.GetRulesStatPrefix()}
	e.noMatchKey = NoAllowMatch
	if e.statPrefix != "" {
		e.noMatchKey = e.statPrefix + "/" + NoAllowMatch
	}
	rules := cfg.GetRules()
	if rules == nil {
		return e, nil
	}
	e.enforce = true
	switch rules.GetAction() {
	case rbacconfigv3.RBAC_ALLOW:
		e.action = ActionAllow
	case rbacconfigv3.RBAC_DENY:
		e.action = ActionDeny
	default:
		return nil, fmt.Errorf("rules.action: %v not supported", rules.GetAction())
	}
	names := make([]string, 0, len(rules.GetPolicies()))
	for name := range rules.GetPolicies() {
		names = append(names, name)
	}
	slices.Sort(names)
	e.policies = make([]policy, 0, len(names))
	for _, name := range names {
		p, err := compilePolicy(name, rules.GetPolicies()[name])
		if err != nil {
			return nil, fmt.Errorf("rules.policies[%q]: %w", name, err)
		}
		e.policies = append(e.policies, p)
	}
	return e, nil
}

func compilePolicy(name string, pc *rbacconfigv3.Policy) (policy, error) {
	p := policy{name: name}
	if len(pc.GetPermissions()) == 0 {
		return p, errors.New("permissions: at least one is required")
	}
	if len(pc.GetPrincipals()) == 0 {
		return p, errors.New("principals: at least one is required")
	}
	for i, perm := range pc.GetPermissions() {
		n, err := compilePermission(perm, 0)
		if err != nil {
			return p, fmt.Errorf("permissions[%d]: %w", i, err)
		}
		p.permissions = append(p.permissions, n)
	}
	for i, prin := range pc.GetPrincipals() {
		n, err := compilePrincipal(prin, 0)
		if err != nil {
			return p, fmt.Errorf("principals[%d]: %w", i, err)
		}
		p.principals = append(p.principals, n)
	}
	return p, nil
}

func compilePermission(pc *rbacconfigv3.Permission, depth int) (node, error) {
	if depth > maxDepth {
		return node{}, fmt.Errorf("nested deeper than %d", maxDepth)
	}
	switch rule := pc.GetRule().(type) {
	case *rbacconfigv3.Permission_Any:
		if !rule.Any {
			return node{}, errors.New("any: must be true")
		}
		return node{kind: nodeAny}, nil
	case *rbacconfigv3.Permission_AndRules:
		return compilePermissionSet(nodeAnd, "and_rules", rule.AndRules.GetRules(), depth)
	case *rbacconfigv3.Permission_OrRules:
		return compilePermissionSet(nodeOr, "or_rules", rule.OrRules.GetRules(), depth)
	case *rbacconfigv3.Permission_NotRule:
		if rule.NotRule == nil {
			return node{}, errors.New("not_rule: required")
		}
		child, err := compilePermission(rule.NotRule, depth+1)
		if err != nil {
			return node{}, fmt.Errorf("not_rule: %w", err)
		}
		return node{kind: nodeNot, children: []node{child}}, nil
	case *rbacconfigv3.Permission_Header:
		h, err := match.CompileHeader(rule.Header)
		if err != nil {
			return node{}, fmt.Errorf("header %q: %w", rule.Header.GetName(), err)
		}
		return node{kind: nodeHeader, header: h}, nil
	case *rbacconfigv3.Permission_UrlPath:
		sm := rule.UrlPath.GetPath()
		if sm == nil {
			return node{}, errors.New("url_path.path: required")
		}
		if sm.GetContains() != "" {
			return node{}, errors.New("url_path.path.contains: not supported")
		}
		s, err := match.CompileString(sm)
		if err != nil {
			return node{}, fmt.Errorf("url_path.path: %w", err)
		}
		return node{kind: nodeURLPath, str: s}, nil
	case nil:
		return node{}, errors.New("rule: one of any, and_rules, or_rules, not_rule, header, url_path is required")
	default:
		return node{}, fmt.Errorf("%s: not supported", populatedOneof(pc.ProtoReflect(), "rule"))
	}
}

func compilePermissionSet(kind nodeKind, field string, rules []*rbacconfigv3.Permission, depth int) (node, error) {
	n := node{kind: kind, children: make([]node, 0, len(rules))}
	for i, rule := range rules {
		child, err := compilePermission(rule, depth+1)
		if err != nil {
			return node{}, fmt.Errorf("%s.rules[%d]: %w", field, i, err)
		}
		n.children = append(n.children, child)
	}
	return n, nil
}

func compilePrincipal(pc *rbacconfigv3.Principal, depth int) (node, error) {
	if depth > maxDepth {
		return node{}, fmt.Errorf("nested deeper than %d", maxDepth)
	}
	switch id := pc.GetIdentifier().(type) {
	case *rbacconfigv3.Principal_Any:
		if !id.Any {
			return node{}, errors.New("any: must be true")
		}
		return node{kind: nodeAny}, nil
	case *rbacconfigv3.Principal_AndIds:
		return compilePrincipalSet(nodeAnd, "and_ids", id.AndIds.GetIds(), depth)
	case *rbacconfigv3.Principal_OrIds:
		return compilePrincipalSet(nodeOr, "or_ids", id.OrIds.GetIds(), depth)
	case *rbacconfigv3.Principal_NotId:
		if id.NotId == nil {
			return node{}, errors.New("not_id: required")
		}
		child, err := compilePrincipal(id.NotId, depth+1)
		if err != nil {
			return node{}, fmt.Errorf("not_id: %w", err)
		}
		return node{kind: nodeNot, children: []node{child}}, nil
	case *rbacconfigv3.Principal_Authenticated_:
		sm := id.Authenticated.GetPrincipalName()
		if sm == nil {
			return node{kind: nodeAuthenticatedAny}, nil
		}
		if sm.GetContains() != "" {
			return node{}, errors.New("authenticated.principal_name.contains: not supported")
		}
		s, err := match.CompileString(sm)
		if err != nil {
			return node{}, fmt.Errorf("authenticated.principal_name: %w", err)
		}
		return node{kind: nodeAuthenticated, str: s}, nil
	case *rbacconfigv3.Principal_DirectRemoteIp:
		prefix, err := compileCidr(id.DirectRemoteIp)
		if err != nil {
			return node{}, fmt.Errorf("direct_remote_ip: %w", err)
		}
		return node{kind: nodeRemoteIP, prefix: prefix}, nil
	case *rbacconfigv3.Principal_Header:
		h, err := match.CompileHeader(id.Header)
		if err != nil {
			return node{}, fmt.Errorf("header %q: %w", id.Header.GetName(), err)
		}
		return node{kind: nodeHeader, header: h}, nil
	case *rbacconfigv3.Principal_SourcedMetadata:
		if id.SourcedMetadata.GetMetadataSource() != rbacconfigv3.MetadataSource_DYNAMIC {
			return node{}, errors.New("sourced_metadata.metadata_source: only DYNAMIC is supported")
		}
		n, err := compileMetadata(id.SourcedMetadata.GetMetadataMatcher())
		if err != nil {
			return node{}, fmt.Errorf("sourced_metadata.metadata_matcher: %w", err)
		}
		return n, nil
	case nil:
		return node{}, errors.New("identifier: one of any, and_ids, or_ids, not_id, authenticated, direct_remote_ip, header, sourced_metadata is required")
	default:
		return node{}, fmt.Errorf("%s: not supported", populatedOneof(pc.ProtoReflect(), "identifier"))
	}
}

func compilePrincipalSet(kind nodeKind, field string, ids []*rbacconfigv3.Principal, depth int) (node, error) {
	n := node{kind: kind, children: make([]node, 0, len(ids))}
	for i, id := range ids {
		child, err := compilePrincipal(id, depth+1)
		if err != nil {
			return node{}, fmt.Errorf("%s.ids[%d]: %w", field, i, err)
		}
		n.children = append(n.children, child)
	}
	return n, nil
}

// maxMetadataPath bounds the keys of a metadata matcher's path.
const maxMetadataPath = 8

// compileMetadata compiles a MetadataMatcher: a string_match of a string
// value, or a list_match.one_of.string_match of a list's elements.
func compileMetadata(mm *matcherv3.MetadataMatcher) (node, error) {
	if mm.GetFilter() == "" {
		return node{}, errors.New("filter: required")
	}
	if mm.GetInvert() {
		return node{}, errors.New("invert: not supported (use not_id)")
	}
	if len(mm.GetPath()) == 0 || len(mm.GetPath()) > maxMetadataPath {
		return node{}, fmt.Errorf("path: want 1 to %d keys", maxMetadataPath)
	}
	n := node{kind: nodeMetadata, metaFilter: mm.GetFilter()}
	for i, seg := range mm.GetPath() {
		if seg.GetKey() == "" {
			return node{}, fmt.Errorf("path[%d].key: required", i)
		}
		n.metaPath = append(n.metaPath, seg.GetKey())
	}
	vm := mm.GetValue()
	sm := vm.GetStringMatch()
	if lm := vm.GetListMatch(); lm != nil {
		n.list = true
		sm = lm.GetOneOf().GetStringMatch()
	}
	if sm == nil {
		return node{}, errors.New("value: string_match or list_match.one_of.string_match is required")
	}
	if sm.GetContains() != "" {
		return node{}, errors.New("value string_match.contains: not supported")
	}
	s, err := match.CompileString(sm)
	if err != nil {
		return node{}, fmt.Errorf("value: %w", err)
	}
	n.str = s
	return n, nil
}

// compileCidr turns a CidrRange into a masked prefix; an unset prefix_len
// is 0 (every address of the family), as in Envoy.
func compileCidr(c *corev3.CidrRange) (netip.Prefix, error) {
	addr, err := netip.ParseAddr(c.GetAddressPrefix())
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("address_prefix %q: not an IP address", c.GetAddressPrefix())
	}
	if addr.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("address_prefix %q: zones not supported", c.GetAddressPrefix())
	}
	addr = addr.Unmap()
	bits := int(c.GetPrefixLen().GetValue())
	if c.GetPrefixLen().GetValue() > uint32(addr.BitLen()) {
		return netip.Prefix{}, fmt.Errorf("prefix_len %d: more than %d bits", c.GetPrefixLen().GetValue(), addr.BitLen())
	}
	prefix, err := addr.Prefix(bits)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("prefix_len %d: %w", bits, err)
	}
	return prefix, nil
}

// populatedOneof names the populated member of a oneof for an error message.
func populatedOneof(m protoreflect.Message, oneof protoreflect.Name) string {
	od := m.Descriptor().Oneofs().ByName(oneof)
	if od == nil {
		return string(oneof)
	}
	if fd := m.WhichOneof(od); fd != nil {
		return string(fd.Name())
	}
	return string(oneof)
}

// checkNesting refuses permissions and principals nested deeper than
// maxDepth, looking no deeper than that.
func checkNesting(policies map[string]*rbacconfigv3.Policy) error {
	for _, name := range slices.Sorted(maps.Keys(policies)) {
		pol := policies[name]
		for i, pc := range pol.GetPermissions() {
			if path := permissionTooDeep(pc, 1); path != "" {
				return fmt.Errorf("rules.policies[%q]: permissions[%d]%s: nested deeper than %d", name, i, path, maxDepth)
			}
		}
		for i, pc := range pol.GetPrincipals() {
			if path := principalTooDeep(pc, 1); path != "" {
				return fmt.Errorf("rules.policies[%q]: principals[%d]%s: nested deeper than %d", name, i, path, maxDepth)
			}
		}
	}
	return nil
}

// permissionTooDeep returns the path below pc to the first permission deeper
// than maxDepth, or "".
func permissionTooDeep(pc *rbacconfigv3.Permission, depth int) string {
	if depth > maxDepth {
		return "..."
	}
	var kids []*rbacconfigv3.Permission
	field := ""
	switch {
	case pc.GetAndRules() != nil:
		kids, field = pc.GetAndRules().GetRules(), ".and_rules.rules"
	case pc.GetOrRules() != nil:
		kids, field = pc.GetOrRules().GetRules(), ".or_rules.rules"
	case pc.GetNotRule() != nil:
		if p := permissionTooDeep(pc.GetNotRule(), depth+1); p != "" {
			return ".not_rule" + p
		}
	}
	for i, k := range kids {
		if p := permissionTooDeep(k, depth+1); p != "" {
			return fmt.Sprintf("%s[%d]%s", field, i, p)
		}
	}
	return ""
}

// principalTooDeep is permissionTooDeep for principals.
func principalTooDeep(pc *rbacconfigv3.Principal, depth int) string {
	if depth > maxDepth {
		return "..."
	}
	var kids []*rbacconfigv3.Principal
	field := ""
	switch {
	case pc.GetAndIds() != nil:
		kids, field = pc.GetAndIds().GetIds(), ".and_ids.ids"
	case pc.GetOrIds() != nil:
		kids, field = pc.GetOrIds().GetIds(), ".or_ids.ids"
	case pc.GetNotId() != nil:
		if p := principalTooDeep(pc.GetNotId(), depth+1); p != "" {
			return ".not_id" + p
		}
	}
	for i, k := range kids {
		if p := principalTooDeep(k, depth+1); p != "" {
			return fmt.Sprintf("%s[%d]%s", field, i, p)
		}
	}
	return ""
}
