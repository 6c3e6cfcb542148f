package translate

import (
	"cmp"
	"maps"
	"regexp"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/controlplane/model"
)

// noBackendBody is the body of the 500 a rule without a usable backend gets.
const noBackendBody = "no valid backend for this route\n"

// routes translates rules already in precedence order, adding the clusters
// they forward to to clusters. listenerPort is the port requests arrived
// on, for redirects that keep it. A rule with a route-level authorization
// gets per-route RBAC configs (rbac.go): outer (the gateway's, or nil)
// merged with the route's, since a per-route config replaces the
// connection manager's; a rule with header modifiers gets the header
// mutation filter's (header.go).
func routes(m *model.Model, clusters *clusterCollector, rules []*model.Rule, listenerPort int32, outer *model.Authorization, outerTraffic *model.RouteTraffic) ([]*routev3.Route, error) {
	out := make([]*routev3.Route, 0, len(rules))
	for _, rule := range rules {
		r := &routev3.Route{Match: routeMatch(rule.Match)}
		if rule.Authorization != nil {
			perRoute, err := rbacPerRoute(model.Merge(outer, rule.Authorization))
			if err != nil {
				return nil, err
			}
			r.TypedPerFilterConfig = perRoute
		}
		if rule.Authentication != nil {
			perRoute, err := authnPerRoute(rule.Authentication)
			if err != nil {
				return nil, err
			}
			if len(perRoute) > 0 && r.TypedPerFilterConfig == nil {
				r.TypedPerFilterConfig = map[string]*anypb.Any{}
			}
			maps.Copy(r.TypedPerFilterConfig, perRoute)
		}
		a := rule.Action
		if a.Redirect != nil {
			r.Action = &routev3.Route_Redirect{Redirect: redirect(a.Redirect, rule.Match.Path, listenerPort)}
		} else if d := a.DirectResponse; d != nil {
			r.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
				Status: uint32(d.Status), Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: d.Body}}}}
		} else if ra := forward(m, clusters, a, rule.Match.Path); ra != nil {
			if err := setTraffic(m, clusters, ra, a); err != nil {
				return nil, err
			}
			t, err := setRouteTraffic(ra, a, backendPort(m, a), rule.Traffic, outerTraffic)
			if err != nil {
				return nil, err
			}
			if rule.Match.GRPC {
				setGRPCTimeouts(ra)
			}
			if t != nil {
				if err := setFault(r, t.Fault); err != nil {
					return nil, err
				}
				if err := setBodyLimits(r, t.BodyLimits); err != nil {
					return nil, err
				}
				if err := setRateLimit(m, r, t); err != nil {
					return nil, err
				}
				if err := setRequestValidation(r, t.RequestValidation); err != nil {
					return nil, err
				}
			}
			r.Action = &routev3.Route_Route{Route: ra}
		} else {
			r.Action = internalError()
		}
		if err := setHeaderModifiers(r, a); err != nil {
			return nil, err
		}
		if err := setCORS(r, a); err != nil {
			return nil, err
		}
		if err := setExtAuth(m, clusters, r, a); err != nil {
			return nil, err
		}
		r.Tracing = routeTracing(m, rule)
		out = append(out, pathPrefixRoutes(r, rule.Match.Path)...)
	}
	return out, nil
}

// pathPrefixRoutes is r, built for a rule whose path match is path: for a
// Gateway API PathPrefix other than "/" (routeMatch makes it an exact match
// of the prefix without its trailing slash), the two routes that match what
// Envoy's path_separated_prefix does: the prefix itself (r), then anything
// under it (a prefix match of the prefix and "/"). Both forms are
// understood by every xDS client (grpc-go knows no path_separated_prefix).
// The second route's prefix rewrites keep the separator its match
// includes. Any other route is returned alone.
func pathPrefixRoutes(r *routev3.Route, path model.PathMatch) []*routev3.Route {
	prefix, separated := separatedPrefix(path)
	if !separated {
		return []*routev3.Route{r}
	}
	under := proto.Clone(r).(*routev3.Route)
	under.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: prefix + "/"}
	withSeparator := func(rewrite string) string {
		if rewrite == "" || strings.HasSuffix(rewrite, "/") {
			return rewrite
		}
		return rewrite + "/"
	}
	if ra := under.GetRoute(); ra != nil {
		ra.PrefixRewrite = withSeparator(ra.PrefixRewrite)
	}
	if rd := under.GetRedirect(); rd != nil {
		if pr, ok := rd.PathRewriteSpecifier.(*routev3.RedirectAction_PrefixRewrite); ok {
			pr.PrefixRewrite = withSeparator(pr.PrefixRewrite)
		}
	}
	return []*routev3.Route{r, under}
}

// separatedPrefix is the prefix of a PathPrefix match without its trailing
// slash, and whether it is one other than "/" (which matches every path).
func separatedPrefix(path model.PathMatch) (string, bool) {
	if path.Kind == model.PathExact || path.Kind == model.PathRegex {
		return "", false
	}
	prefix := strings.TrimRight(path.Value, "/")
	return prefix, prefix != ""
}

func routeMatch(m model.Match) *routev3.RouteMatch {
	rm := &routev3.RouteMatch{}
	switch m.Path.Kind {
	case model.PathExact:
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: m.Path.Value}
	case model.PathRegex:
		rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: m.Path.Value}}
	default:
		if prefix, separated := separatedPrefix(m.Path); separated {
			// The prefix itself; pathPrefixRoutes adds what is under it.
			rm.PathSpecifier = &routev3.RouteMatch_Path{Path: prefix}
		} else {
			rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
		}
	}
	if m.Method != "" {
		rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{
			Name:                 ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: stringMatcher(m.Method, false)},
		})
	}
	for _, h := range m.Headers {
		rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{
			Name:                 strings.ToLower(h.Name),
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: stringMatcher(h.Value, h.Regex)},
		})
	}
	if m.GRPC {
		rm.Grpc = &routev3.RouteMatch_GrpcRouteMatchOptions{}
	}
	for _, q := range m.QueryParams {
		rm.QueryParameters = append(rm.QueryParameters, &routev3.QueryParameterMatcher{
			Name:                         q.Name,
			QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: stringMatcher(q.Value, q.Regex)},
		})
	}
	return rm
}

// setGRPCTimeouts gives the route of a GRPCRoute rule gRPC's deadlines:
// the call's grpc-timeout header is its timeout, unbounded
// (max_stream_duration.grpc_timeout_header_max 0, as Envoy reads it), and
// without one the call has no route timeout unless one is configured (a
// TrafficPolicy's): streaming calls last as long as they need.
func setGRPCTimeouts(ra *routev3.RouteAction) {
	ra.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{GrpcTimeoutHeaderMax: durationpb.New(0)}
	if ra.Timeout == nil {
		ra.Timeout = durationpb.New(0)
	}
}

func stringMatcher(value string, regex bool) *matcherv3.StringMatcher {
	if regex {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: value}}}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value}}
}

// invalidBackendCluster is the weighted-cluster entry that carries the share
// of a rule's backendRefs that do not resolve. No cluster has this name (a
// service port's is "<namespace>/<service>:<port>"), so the proxy answers
// the route's cluster_not_found_response_code, 500, for that share, as Envoy
// Gateway does.
const invalidBackendCluster = "invalid-backend-cluster"

// forward builds the route action to the rule's backends, adding their
// clusters to clusters, or returns nil when the Gateway API says every
// request gets a 500: no backends, every weight zero, or no weight on a
// backendRef that resolves. The weight of the backendRefs that do not
// resolve goes to invalidBackendCluster, so that their share of the
// requests gets the 500 and the rest is forwarded.
func forward(m *model.Model, clusters *clusterCollector, a *model.Action, path model.PathMatch) *routev3.RouteAction {
	var weighted []*routev3.WeightedCluster_ClusterWeight
	var invalidWeight uint32
	for _, b := range a.Backends {
		if b.Weight <= 0 {
			continue
		}
		if b.Cluster == "" {
			invalidWeight += uint32(b.Weight)
			continue
		}
		cw := &routev3.WeightedCluster_ClusterWeight{Name: b.Cluster, Weight: wrapperspb.UInt32(uint32(b.Weight))}
		setBackendHeaders(cw, b)
		weighted = append(weighted, cw)
		if svc := m.Service(b.Service.Namespace, b.Service.Name); svc != nil {
			if port := svc.Port(b.Port); port != nil {
				clusters.add(svc, port)
			}
		}
	}
	if len(weighted) == 0 {
		return nil
	}
	if invalidWeight > 0 {
		invalid := &routev3.WeightedCluster_ClusterWeight{Name: invalidBackendCluster, Weight: wrapperspb.UInt32(invalidWeight)}
		weighted = append([]*routev3.WeightedCluster_ClusterWeight{invalid}, weighted...)
	}
	ra := &routev3.RouteAction{}
	if len(weighted) == 1 && !hasBackendFilters(a) {
		ra.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: weighted[0].Name}
	} else {
		ra.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: weighted}}
	}
	if invalidWeight > 0 {
		ra.ClusterNotFoundResponseCode = routev3.RouteAction_INTERNAL_SERVER_ERROR
	}
	if a.Timeout != nil {
		ra.Timeout = durationpb.New(*a.Timeout)
	}
	if rw := a.Rewrite; rw != nil {
		if rw.Hostname != "" {
			ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: rw.Hostname}
		}
		if pm := rw.Path; pm != nil {
			switch pm.Kind {
			case model.ReplaceFullPath:
				// regex_rewrite replaces the matched part of the path (the query
				// string is kept): match all of it.
				ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
					Pattern:      &matcherv3.RegexMatcher{Regex: "^/.*$"},
					Substitution: pm.Value,
				}
			case model.ReplacePrefixMatch:
				setPrefixRewrite(ra, path, pm.Value)
			}
		}
	}
	return ra
}

// setPrefixRewrite replaces the matched path prefix. path_separated_prefix
// matches "/foo" without its trailing slash, so a plain prefix_rewrite works
// except in two cases done with a regex (as Envoy Gateway does): replacing a
// prefix with "/" (which must not leave "//rest"), and replacing the root
// prefix "/" (which must keep the separator before the rest).
func setPrefixRewrite(ra *routev3.RouteAction, path model.PathMatch, replacement string) {
	prefix := strings.TrimRight(path.Value, "/")
	switch {
	case prefix == "" && replacement != "/":
		ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
			Pattern:      &matcherv3.RegexMatcher{Regex: "^/"},
			Substitution: strings.TrimRight(replacement, "/") + "/",
		}
	case prefix != "" && replacement == "/":
		ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
			Pattern:      &matcherv3.RegexMatcher{Regex: "^" + regexp.QuoteMeta(prefix) + "/*"},
			Substitution: "/",
		}
	case prefix != "":
		ra.PrefixRewrite = strings.TrimRight(replacement, "/")
	default:
		ra.PrefixRewrite = replacement
	}
}

func internalError() *routev3.Route_DirectResponse {
	return &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
		Status: 500,
		Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: noBackendBody}},
	}}
}

// wellKnownPort is the port a scheme implies; 0 when it has none.
func wellKnownPort(scheme string) int32 {
	switch scheme {
	case "http":
		return 80
	case "https":
		return 443
	}
	return 0
}

// redirect follows the Gateway API port rules: an explicit port wins; else a
// scheme implies its well-known port; else the listener's port is kept. The
// port is always set (port_redirect): the request's Host keeps the port the
// client sent, which an unset port_redirect would copy into Location. The
// proxy leaves the scheme's well-known port out of Location (Envoy writes
// it; both spellings are the same URL).
func redirect(rd *model.Redirect, path model.PathMatch, listenerPort int32) *routev3.RedirectAction {
	ra := &routev3.RedirectAction{HostRedirect: rd.Hostname}
	scheme := strings.ToLower(rd.Scheme)
	if scheme != "" {
		ra.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: scheme}
	}
	port := rd.Port
	if port == 0 {
		port = cmp.Or(wellKnownPort(scheme), listenerPort)
	}
	ra.PortRedirect = uint32(port)
	if pm := rd.Path; pm != nil {
		switch pm.Kind {
		case model.ReplaceFullPath:
			ra.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: pm.Value}
		case model.ReplacePrefixMatch:
			// As for rewrites: the matched prefix has no trailing slash,
			// except the root prefix "/", whose slash the replacement must keep.
			value := strings.TrimRight(pm.Value, "/")
			if strings.TrimRight(path.Value, "/") == "" || value == "" {
				value += "/"
			}
			ra.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: value}
		}
	}
	switch rd.StatusCode {
	case 301:
		ra.ResponseCode = routev3.RedirectAction_MOVED_PERMANENTLY
	case 303:
		ra.ResponseCode = routev3.RedirectAction_SEE_OTHER
	case 307:
		ra.ResponseCode = routev3.RedirectAction_TEMPORARY_REDIRECT
	case 308:
		ra.ResponseCode = routev3.RedirectAction_PERMANENT_REDIRECT
	default:
		ra.ResponseCode = routev3.RedirectAction_FOUND
	}
	return ra
}
