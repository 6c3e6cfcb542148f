package router

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/dataplane/internal/headers"
	"github.com/meshgate/meshgate/dataplane/internal/match"
)

// PerFilterCompiler compiles the values of typed_per_filter_config (of a
// route, a virtual host or the route configuration). The key is the name of
// the http_filters entry the value configures; the value's type selects the
// filter (dataplane/filters: the registry). The router keeps the result
// opaque, for the filter to find with Route.PerFilterConfig.
type PerFilterCompiler interface {
	CompilePerFilterConfig(name string, config *anypb.Any) (any, error)
}

// Compile compiles rc, already checked against the subset of docs/xds.md
// (xdscheck: the apply path checks every resource once, before compiling;
// Compile does not check again, and what it does not use it ignores). The
// error names the virtual host, route and field of the first problem: an
// invalid regular expression, a duplicate domain, a typed_per_filter_config
// value perFilter refuses... perFilter may be nil when rc has no
// typed_per_filter_config.
func Compile(rc *routev3.RouteConfiguration, perFilter PerFilterCompiler) (*Table, error) {
	if rc == nil {
		return nil, errors.New("nil route configuration")
	}
	t := &Table{name: rc.GetName(), exact: make(map[string]*virtualHost), ignorePort: rc.GetIgnorePortInHostMatching()}
	rcFilters, err := compilePerFilterConfig(perFilter, rc.GetTypedPerFilterConfig(), nil)
	if err != nil {
		return nil, fmt.Errorf("route configuration %q: %w", rc.GetName(), err)
	}
	seenDomains := make(map[string]string)
	clusters := make(map[string]struct{})
	for i, vhc := range rc.GetVirtualHosts() {
		vh, err := compileVirtualHost(vhc, clusters, perFilter, rcFilters)
		if err != nil {
			return nil, fmt.Errorf("route configuration %q: virtual_hosts[%d] %q: %w", rc.GetName(), i, vhc.GetName(), err)
		}
		for _, rt := range vh.routes {
			rt.index = len(t.routes)
			t.routes = append(t.routes, rt)
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
	t.perFilterTypes = perFilterTypes(rc)
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

func compileVirtualHost(vhc *routev3.VirtualHost, clusters map[string]struct{}, perFilter PerFilterCompiler, rcFilters []perFilterConfig) (*virtualHost, error) {
	if len(vhc.GetDomains()) == 0 {
		return nil, errors.New("domains: at least one domain is required")
	}
	vhFilters, err := compilePerFilterConfig(perFilter, vhc.GetTypedPerFilterConfig(), rcFilters)
	if err != nil {
		return nil, err
	}
	vh := &virtualHost{name: vhc.GetName(), routes: make([]*Route, 0, len(vhc.GetRoutes()))}
	// The virtual host's response headers apply after each route's, as
	// Envoy applies them (weighted cluster, route, virtual host).
	vhResponse, err := compileHeaderMutation(vhc.GetResponseHeadersToAdd(), nil, false)
	if err != nil {
		return nil, err
	}
	for i, rc := range vhc.GetRoutes() {
		rt, err := compileRoute(rc, perFilter, vhFilters)
		if err != nil {
			if rc.GetName() != "" {
				return nil, fmt.Errorf("routes[%d] %q: %w", i, rc.GetName(), err)
			}
			return nil, fmt.Errorf("routes[%d]: %w", i, err)
		}
		rt.responseHeads.Append(vhResponse)
		rt.vhostName = vh.name
		rt.attemptCountRequest = vhc.GetIncludeRequestAttemptCount()
		rt.attemptCountResponse = vhc.GetIncludeAttemptCountInResponse()
		if rt.cluster != "" {
			clusters[rt.cluster] = struct{}{}
		}
		for _, w := range rt.weighted {
			clusters[w.name] = struct{}{}
		}
		for _, m := range rt.mirrors {
			clusters[m.Cluster] = struct{}{}
		}
		vh.routes = append(vh.routes, rt)
	}
	return vh, nil
}

func compileRoute(rc *routev3.Route, perFilter PerFilterCompiler, vhFilters []perFilterConfig) (*Route, error) {
	rt := &Route{name: rc.GetName()}
	m, err := compileMatch(rc.GetMatch())
	if err != nil {
		return nil, fmt.Errorf("match: %w", err)
	}
	rt.match = m
	rt.tracing = compileTracing(rc.GetTracing())

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

	if rt.perFilter, err = compilePerFilterConfig(perFilter, rc.GetTypedPerFilterConfig(), vhFilters); err != nil {
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

// compilePerFilterConfig compiles one level's typed_per_filter_config and
// merges it with the less specific levels' (outer, already merged): the
// result holds, by filter name, the configs most specific first. With no
// config of its own a level shares outer.
func compilePerFilterConfig(perFilter PerFilterCompiler, configs map[string]*anypb.Any, outer []perFilterConfig) ([]perFilterConfig, error) {
	if len(configs) == 0 {
		return outer, nil
	}
	if perFilter == nil {
		return nil, errors.New("typed_per_filter_config: not supported")
	}
	merged := slices.Clone(outer)
	for _, name := range slices.Sorted(maps.Keys(configs)) {
		cfg, err := perFilter.CompilePerFilterConfig(name, configs[name])
		if err != nil {
			return nil, fmt.Errorf("typed_per_filter_config[%q]: %w", name, err)
		}
		i, found := slices.BinarySearchFunc(merged, name, func(p perFilterConfig, name string) int { return strings.Compare(p.name, name) })
		if found {
			merged[i].configs = append([]any{cfg}, merged[i].configs...)
			continue
		}
		merged = slices.Insert(merged, i, perFilterConfig{name: name, configs: []any{cfg}})
	}
	return merged, nil
}

// perFilterTypes collects the message types of rc's typed_per_filter_config
// values at every level, by filter name; nil when there are none.
func perFilterTypes(rc *routev3.RouteConfiguration) map[string][]string {
	var types map[string][]string
	collect := func(configs map[string]*anypb.Any) {
		for name, config := range configs {
			if types == nil {
				types = make(map[string][]string)
			}
			if t := string(config.MessageName()); !slices.Contains(types[name], t) {
				types[name] = append(types[name], t)
			}
		}
	}
	collect(rc.GetTypedPerFilterConfig())
	for _, vh := range rc.GetVirtualHosts() {
		collect(vh.GetTypedPerFilterConfig())
		for _, r := range vh.GetRoutes() {
			collect(r.GetTypedPerFilterConfig())
		}
	}
	for _, t := range types {
		slices.Sort(t)
	}
	return types
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
	m.grpc = mc.GetGrpc() != nil
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
			if err := compileClusterHeaders(rt, i, cw); err != nil {
				return err
			}
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

	switch code := ra.GetClusterNotFoundResponseCode(); code {
	case routev3.RouteAction_SERVICE_UNAVAILABLE:
		rt.clusterNotFound = http.StatusServiceUnavailable
	case routev3.RouteAction_NOT_FOUND:
		rt.clusterNotFound = http.StatusNotFound
	case routev3.RouteAction_INTERNAL_SERVER_ERROR:
		rt.clusterNotFound = http.StatusInternalServerError
	default:
		return fmt.Errorf("cluster_not_found_response_code: value %d not supported", code)
	}

	rt.timeout = DefaultTimeout
	if d := ra.GetTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return fmt.Errorf("timeout: invalid duration %v", d)
		}
		rt.timeout = d.AsDuration()
	}
	if err := compileTraffic(rt, ra); err != nil {
		return err
	}
	if err := compileUpgrade(rt, ra); err != nil {
		return err
	}
	if err := compileGRPCTimeout(rt, ra); err != nil {
		return err
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

func compileHeaderMutation(adds []*corev3.HeaderValueOption, removes []string, request bool) (headers.List, error) {
	field := "response_headers_to_"
	if request {
		field = "request_headers_to_"
	}
	var m headers.List
	for i, name := range removes {
		if err := headers.CheckName(name, request); err != nil {
			return m, fmt.Errorf("%sremove[%d]: %w", field, i, err)
		}
		m.Remove(name)
	}
	for i, opt := range adds {
		o, err := headers.CompileOption(opt, request, nil)
		if err != nil {
			return m, fmt.Errorf("%sadd[%d].%w", field, i, err)
		}
		m.Add(o)
	}
	return m, nil
}
