package router

import (
	"errors"
	"fmt"
	"net/textproto"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/dataplane/internal/match"
	"github.com/meshgate/meshgate/dataplane/rbac"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// Compile checks rc against the subset of docs/xds.md and compiles it. The
// error names the virtual host, route and field of the first problem:
// anything outside the subset, an invalid regular expression, a duplicate
// domain...
func Compile(rc *routev3.RouteConfiguration) (*Table, error) {
	if rc == nil {
		return nil, errors.New("nil route configuration")
	}
	if err := xdscheck.Check(rc); err != nil {
		return nil, err
	}
	t := &Table{name: rc.GetName(), exact: make(map[string]*virtualHost)}
	seenDomains := make(map[string]string)
	clusters := make(map[string]struct{})
	for i, vhc := range rc.GetVirtualHosts() {
		vh, err := compileVirtualHost(vhc, clusters)
		if err != nil {
			return nil, fmt.Errorf("route configuration %q: virtual_hosts[%d] %q: %w", rc.GetName(), i, vhc.GetName(), err)
		}
		for j, d := range vhc.GetDomains() {
			domain := strings.ToLower(d)
			if other, dup := seenDomains[domain]; dup {
				return nil, fmt.Errorf("route configuration %q: virtual_hosts[%d] %q: domains[%d]: %q already used by virtual host %q",
					rc.GetName(), i, vhc.GetName(), j, d, other)
			}
			seenDomains[domain] = vh.name
			if err := t.addDomain(domain, vh); err != nil {
				return nil, fmt.Errorf("route configuration %q: virtual_hosts[%d] %q: domains[%d]: %w", rc.GetName(), i, vhc.GetName(), j, err)
			}
		}
	}
	sortWildcards(t.suffixes)
	sortWildcards(t.prefixes)
	t.clusters = make([]string, 0, len(clusters))
	for c := range clusters {
		t.clusters = append(t.clusters, c)
	}
	slices.Sort(t.clusters)
	return t, nil
}

func (t *Table) addDomain(domain string, vh *virtualHost) error {
	switch {
	case domain == "":
		return errors.New("empty domain")
	case domain == "*":
		t.any = vh
	case strings.HasPrefix(domain, "*"):
		if strings.Contains(domain[1:], "*") {
			return fmt.Errorf("%q: only one leading or trailing wildcard is supported", domain)
		}
		t.suffixes = append(t.suffixes, wildcardDomain{affix: domain[1:], vhost: vh})
	case strings.HasSuffix(domain, "*"):
		if strings.Contains(domain[:len(domain)-1], "*") {
			return fmt.Errorf("%q: only one leading or trailing wildcard is supported", domain)
		}
		t.prefixes = append(t.prefixes, wildcardDomain{affix: domain[:len(domain)-1], vhost: vh})
	case strings.Contains(domain, "*"):
		return fmt.Errorf("%q: a wildcard must be the first or last character", domain)
	default:
		t.exact[domain] = vh
	}
	return nil
}

func compileVirtualHost(vhc *routev3.VirtualHost, clusters map[string]struct{}) (*virtualHost, error) {
	if len(vhc.GetDomains()) == 0 {
		return nil, errors.New("domains: at least one domain is required")
	}
	vh := &virtualHost{name: vhc.GetName(), routes: make([]*Route, 0, len(vhc.GetRoutes()))}
	for i, rc := range vhc.GetRoutes() {
		rt, err := compileRoute(rc)
		if err != nil {
			if rc.GetName() != "" {
				return nil, fmt.Errorf("routes[%d] %q: %w", i, rc.GetName(), err)
			}
			return nil, fmt.Errorf("routes[%d]: %w", i, err)
		}
		rt.vhostName = vh.name
		if rt.cluster != "" {
			clusters[rt.cluster] = struct{}{}
		}
		for _, w := range rt.weighted {
			clusters[w.name] = struct{}{}
		}
		vh.routes = append(vh.routes, rt)
	}
	return vh, nil
}

func compileRoute(rc *routev3.Route) (*Route, error) {
	rt := &Route{name: rc.GetName()}
	m, err := compileMatch(rc.GetMatch())
	if err != nil {
		return nil, fmt.Errorf("match: %w", err)
	}
	rt.match = m

	switch action := rc.GetAction().(type) {
	case *routev3.Route_Route:
		rt.kind = ActionForward
		if err := compileForward(rt, action.Route); err != nil {
			return nil, fmt.Errorf("route: %w", err)
		}
	case *routev3.Route_Redirect:
		rt.kind = ActionRedirect
		if err := compileRedirect(rt, action.Redirect); err != nil {
			return nil, fmt.Errorf("redirect: %w", err)
		}
	case *routev3.Route_DirectResponse:
		rt.kind = ActionDirectResponse
		rt.directStatus = int(action.DirectResponse.GetStatus())
		if rt.directStatus < 100 || rt.directStatus > 599 {
			return nil, fmt.Errorf("direct_response.status: %d is not an HTTP status", rt.directStatus)
		}
		rt.directBody = action.DirectResponse.GetBody().GetInlineString()
	default:
		return nil, errors.New("action: exactly one of route, redirect, direct_response is required")
	}

	if err := compilePerFilterConfig(rt, rc.GetTypedPerFilterConfig()); err != nil {
		return nil, err
	}
	if rt.requestHeads, err = compileHeaderMutation(rc.GetRequestHeadersToAdd(), rc.GetRequestHeadersToRemove(), true); err != nil {
		return nil, err
	}
	if rt.responseHeads, err = compileHeaderMutation(rc.GetResponseHeadersToAdd(), rc.GetResponseHeadersToRemove(), false); err != nil {
		return nil, err
	}
	return rt, nil
}

// compilePerFilterConfig compiles typed_per_filter_config: the RBAC
// overrides (docs/xds.md "RBAC"), keyed by the RBAC filter's name, each an
// RBACPerRoute whose rbac replaces the filter's config on this route (no
// rbac: the filter is disabled here). Any other key is an error.
func compilePerFilterConfig(rt *Route, configs map[string]*anypb.Any) error {
	keys := make([]string, 0, len(configs))
	for k := range configs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		field := fmt.Sprintf("typed_per_filter_config[%q]", key)
		var slot *rbacOverride
		switch key {
		case rbac.DenyFilterName:
			slot = &rt.rbacDeny
		case rbac.AllowFilterName:
			slot = &rt.rbacAllow
		default:
			return fmt.Errorf("%s: not supported (only %s and %s)", field, rbac.DenyFilterName, rbac.AllowFilterName)
		}
		var per rbacv3.RBACPerRoute
		if err := configs[key].UnmarshalTo(&per); err != nil {
			return fmt.Errorf("%s: want an RBACPerRoute: %w", field, err)
		}
		slot.set = true
		if per.GetRbac() == nil {
			continue // RBACPerRoute{}: the filter is disabled on this route
		}
		f, err := rbac.Compile(per.GetRbac())
		if err != nil {
			return fmt.Errorf("%s.rbac: %w", field, err)
		}
		slot.filter = f
	}
	return nil
}

func compileMatch(mc *routev3.RouteMatch) (routeMatch, error) {
	m := routeMatch{caseSensitive: true}
	if mc == nil {
		return m, errors.New("required")
	}
	if cs := mc.GetCaseSensitive(); cs != nil {
		m.caseSensitive = cs.GetValue()
	}
	switch ps := mc.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		m.kind, m.value = pathPrefix, ps.Prefix
	case *routev3.RouteMatch_Path:
		m.kind, m.value = pathExact, ps.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		p := ps.PathSeparatedPrefix
		if !strings.HasPrefix(p, "/") || (len(p) > 1 && strings.HasSuffix(p, "/")) {
			return m, fmt.Errorf("path_separated_prefix: %q must start with / and not end with /", p)
		}
		m.kind, m.value = pathSeparatedPrefix, p
		if p == "/" { // "/" followed by "/" or nothing: Envoy treats it as prefix "/"
			m.kind = pathPrefix
		}
	case *routev3.RouteMatch_SafeRegex:
		re, err := match.FullRegex(ps.SafeRegex)
		if err != nil {
			return m, fmt.Errorf("safe_regex: %w", err)
		}
		m.kind, m.regex = pathRegex, re
	default:
		return m, errors.New("one of prefix, path, path_separated_prefix, safe_regex is required")
	}
	for i, hm := range mc.GetHeaders() {
		h, err := match.CompileHeader(hm)
		if err != nil {
			return m, fmt.Errorf("headers[%d] %q: %w", i, hm.GetName(), err)
		}
		m.headers = append(m.headers, h)
	}
	for i, qm := range mc.GetQueryParameters() {
		q, err := compileQueryMatcher(qm)
		if err != nil {
			return m, fmt.Errorf("query_parameters[%d] %q: %w", i, qm.GetName(), err)
		}
		m.queries = append(m.queries, q)
	}
	return m, nil
}

func compileQueryMatcher(qm *routev3.QueryParameterMatcher) (queryMatcher, error) {
	q := queryMatcher{name: qm.GetName()}
	if q.name == "" {
		return q, errors.New("name: required")
	}
	switch spec := qm.GetQueryParameterMatchSpecifier().(type) {
	case *routev3.QueryParameterMatcher_PresentMatch:
		if !spec.PresentMatch {
			return q, errors.New("present_match: false is not supported (Envoy requires true)")
		}
		q.present = true
	case *routev3.QueryParameterMatcher_StringMatch:
		s, err := match.CompileString(spec.StringMatch)
		if err != nil {
			return q, fmt.Errorf("string_match: %w", err)
		}
		q.str = s
	default:
		return q, errors.New("one of string_match, present_match is required")
	}
	return q, nil
}

func compileForward(rt *Route, ra *routev3.RouteAction) error {
	switch cs := ra.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		if cs.Cluster == "" {
			return errors.New("cluster: empty name")
		}
		rt.cluster = cs.Cluster
	case *routev3.RouteAction_WeightedClusters:
		var total uint64
		for i, cw := range cs.WeightedClusters.GetClusters() {
			if cw.GetName() == "" {
				return fmt.Errorf("weighted_clusters.clusters[%d].name: required", i)
			}
			total += uint64(cw.GetWeight().GetValue())
			rt.weighted = append(rt.weighted, weightedEntry{cumulative: total, name: cw.GetName()})
		}
		if len(rt.weighted) == 0 {
			return errors.New("weighted_clusters.clusters: at least one cluster is required")
		}
		if total == 0 {
			return errors.New("weighted_clusters: the sum of the weights must be greater than 0")
		}
		rt.totalWeight = total
	default:
		return errors.New("one of cluster, weighted_clusters is required")
	}

	rt.timeout = DefaultTimeout
	if d := ra.GetTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return fmt.Errorf("timeout: invalid duration %v", d)
		}
		rt.timeout = d.AsDuration()
	}
	rt.hostRewrite = ra.GetHostRewriteLiteral()

	if ra.GetPrefixRewrite() != "" && ra.GetRegexRewrite() != nil {
		return errors.New("prefix_rewrite and regex_rewrite are mutually exclusive")
	}
	if pr := ra.GetPrefixRewrite(); pr != "" {
		rw, err := prefixRewrite(&rt.match, pr)
		if err != nil {
			return fmt.Errorf("prefix_rewrite: %w", err)
		}
		rt.pathRewrite = rw
	}
	if rr := ra.GetRegexRewrite(); rr != nil {
		rw, err := regexRewrite(rr)
		if err != nil {
			return fmt.Errorf("regex_rewrite: %w", err)
		}
		rt.pathRewrite = rw
	}
	return nil
}

// prefixRewrite replaces the matched prefix (or exact path); Envoy rejects it
// with a regex path match.
func prefixRewrite(m *routeMatch, prefix string) (pathRewrite, error) {
	if m.kind == pathRegex {
		return pathRewrite{}, errors.New("cannot be used with a safe_regex path match")
	}
	return pathRewrite{kind: rewritePrefix, prefix: prefix, matchedLen: len(m.value)}, nil
}

func regexRewrite(rr *matcherv3.RegexMatchAndSubstitute) (pathRewrite, error) {
	pattern := rr.GetPattern().GetRegex()
	re, err := match.Regex(pattern)
	if err != nil {
		return pathRewrite{}, fmt.Errorf("pattern: %w", err)
	}
	sub, err := convertSubstitution(rr.GetSubstitution(), re.NumSubexp())
	if err != nil {
		return pathRewrite{}, fmt.Errorf("substitution %s: %w", match.Quote(rr.GetSubstitution()), err)
	}
	return pathRewrite{kind: rewriteRegex, regex: re, substitution: sub}, nil
}

// convertSubstitution turns an RE2 rewrite string (\0..\9 for groups, \\ for
// a backslash) into Go's Expand template ($ escaped as $$).
func convertSubstitution(s string, groups int) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '$':
			b.WriteString("$$")
		case '\\':
			if i+1 >= len(s) {
				return "", errors.New("trailing backslash")
			}
			i++
			n := s[i]
			switch {
			case n == '\\':
				b.WriteByte('\\')
			case '0' <= n && n <= '9':
				g := int(n - '0')
				if g > groups {
					return "", fmt.Errorf(`\%d refers to a group the pattern does not have (it has %d)`, g, groups)
				}
				b.WriteString("${" + strconv.Itoa(g) + "}")
			default:
				return "", fmt.Errorf(`invalid escape \%c`, n)
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func compileRedirect(rt *Route, ra *routev3.RedirectAction) error {
	d := &rt.redirect
	switch ra.GetResponseCode() {
	case routev3.RedirectAction_MOVED_PERMANENTLY:
		d.code = 301
	case routev3.RedirectAction_FOUND:
		d.code = 302
	case routev3.RedirectAction_SEE_OTHER:
		d.code = 303
	case routev3.RedirectAction_TEMPORARY_REDIRECT:
		d.code = 307
	case routev3.RedirectAction_PERMANENT_REDIRECT:
		d.code = 308
	default:
		return fmt.Errorf("response_code: %v not supported", ra.GetResponseCode())
	}
	switch s := ra.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_SchemeRedirect:
		d.scheme = strings.ToLower(s.SchemeRedirect)
	case nil:
	default:
		return fmt.Errorf("%T: not supported, use scheme_redirect", s)
	}
	d.host = ra.GetHostRedirect()
	if ra.GetPortRedirect() > 65535 {
		return fmt.Errorf("port_redirect: %d out of range", ra.GetPortRedirect())
	}
	d.port = ra.GetPortRedirect()
	d.stripQuery = ra.GetStripQuery()
	switch p := ra.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		path, query, hasQuery := strings.Cut(p.PathRedirect, "?")
		d.path, d.pathQuery, d.hasQuery = path, query, hasQuery
	case *routev3.RedirectAction_PrefixRewrite:
		rw, err := prefixRewrite(&rt.match, p.PrefixRewrite)
		if err != nil {
			return fmt.Errorf("prefix_rewrite: %w", err)
		}
		d.rewrite = rw
	case nil:
	default:
		return fmt.Errorf("%T: not supported, use path_redirect or prefix_rewrite", p)
	}
	return nil
}

func compileHeaderMutation(adds []*corev3.HeaderValueOption, removes []string, request bool) (headerMutation, error) {
	field := "response_headers_to_"
	if request {
		field = "request_headers_to_"
	}
	var m headerMutation
	for i, name := range removes {
		if err := checkMutableHeader(name, request); err != nil {
			return m, fmt.Errorf("%sremove[%d]: %w", field, i, err)
		}
		m.remove = append(m.remove, textproto.CanonicalMIMEHeaderKey(name))
	}
	for i, opt := range adds {
		key := opt.GetHeader().GetKey()
		if err := checkMutableHeader(key, request); err != nil {
			return m, fmt.Errorf("%sadd[%d].header.key: %w", field, i, err)
		}
		//lint:ignore SA1019 the deprecated field is refused (NACKed), not used
		if opt.GetAppend() != nil {
			return m, fmt.Errorf("%sadd[%d].append: not supported, use append_action", field, i)
		}
		value, err := literalHeaderValue(opt.GetHeader().GetValue())
		if err != nil {
			return m, fmt.Errorf("%sadd[%d].header.value: %w", field, i, err)
		}
		if value == "" {
			// Envoy drops additions with an empty value (keep_empty_value false).
			continue
		}
		var action appendAction
		switch opt.GetAppendAction() {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			action = appendIfExistsOrAdd
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			action = addIfAbsent
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			action = overwriteIfExistsOrAdd
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			action = overwriteIfExists
		default:
			return m, fmt.Errorf("%sadd[%d].append_action: %v not supported", field, i, opt.GetAppendAction())
		}
		m.add = append(m.add, headerAdd{key: textproto.CanonicalMIMEHeaderKey(key), value: value, action: action})
	}
	return m, nil
}

// checkMutableHeader rejects what Envoy refuses to add or remove: empty and
// pseudo-header names, and Host on requests.
func checkMutableHeader(name string, request bool) error {
	switch {
	case name == "":
		return errors.New("empty header name")
	case strings.HasPrefix(name, ":"):
		return fmt.Errorf("pseudo-header %q cannot be modified", name)
	case request && strings.EqualFold(name, "host"):
		return errors.New(`"host" cannot be modified (use host_rewrite_literal)`)
	case strings.ContainsAny(name, " \t\r\n:"):
		return fmt.Errorf("%q is not a valid header name", name)
	}
	return nil
}

// literalHeaderValue resolves Envoy's formatter syntax in a header value: "%%"
// is a literal "%"; any other %COMMAND% is not supported.
func literalHeaderValue(v string) (string, error) {
	if !strings.Contains(v, "%") {
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			b.WriteByte(v[i])
			continue
		}
		if i+1 < len(v) && v[i+1] == '%' {
			b.WriteByte('%')
			i++
			continue
		}
		return "", fmt.Errorf("%q: formatter commands (%%...%%) are not supported; write %%%% for a literal %%", v)
	}
	return b.String(), nil
}
