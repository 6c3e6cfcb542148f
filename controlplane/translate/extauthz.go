package translate

import (
	"cmp"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshgate/meshgate/controlplane/model"
)

// ExtAuthzFilterPrefix starts the names of the external authorization
// filters (envoy.extensions.filters.http.ext_authz.v3.ExtAuthz): a
// listener some of whose routes have an external authorization has one
// such filter per distinct authorization ("<prefix>/<hash of its
// config>"), after CORS and gRPC-Web and before the RBAC filters, as
// Envoy Gateway orders them. A route with an external authorization
// enables its own filter with an ExtAuthzPerRoute of empty check
// settings; every other route of the listener disables each of them
// (ExtAuthzPerRoute disabled), so that a route without one costs a lookup
// per filter. A listener without such routes does not have them.
const ExtAuthzFilterPrefix = "envoy.filters.http.ext_authz"

// extAuthName is the filter name of an external authorization: the same
// configuration, on any route, is one filter.
func extAuthName(ea *model.ExtAuth) string {
	b, _ := json.Marshal(ea) // a struct of plain fields: cannot fail
	h := fnv.New64a()
	_, _ = h.Write(b)
	return ExtAuthzFilterPrefix + "/" + strconv.FormatUint(h.Sum64(), 16)
}

// addExtAuth records a rule's external authorization in a listener's
// filters, once per distinct configuration, sorted by name.
func (f *listenerFilters) addExtAuth(ea *model.ExtAuth) {
	if ea == nil {
		return
	}
	name := extAuthName(ea)
	i, found := slices.BinarySearchFunc(f.extAuth, name, func(e *model.ExtAuth, n string) int {
		return cmp.Compare(extAuthName(e), n)
	})
	if !found {
		f.extAuth = slices.Insert(f.extAuth, i, ea)
	}
}

// extAuthCluster is the cluster an external authorization calls:
// invalidBackendCluster when its reference does not resolve (a check then
// fails: 403, or the request goes through when it fails open).
func extAuthCluster(ea *model.ExtAuth) string {
	if ea.Backend.Cluster == "" {
		return invalidBackendCluster
	}
	return ea.Backend.Cluster
}

// extAuthzFilter is the listener-level filter of an external
// authorization, as Envoy Gateway writes it: an http_service on the
// authorization service's cluster (the request's path after path_prefix;
// the allowed headers besides those always sent; the answer's allowed
// headers copied onto the request, every one but Host when none is
// listed; all of a denial's headers to the client), or a grpc_service
// (envoy_grpc) speaking envoy.service.auth.v3; failure_mode_allow when it
// fails open; the request body up to the limit, allowing a partial one.
func extAuthzFilter(ea *model.ExtAuth) (*hcmv3.HttpFilter, error) {
	name := extAuthName(ea)
	cluster := extAuthCluster(ea)
	cfg := &extauthzv3.ExtAuthz{
		TransportApiVersion: corev3.ApiVersion_V3,
		FailureModeAllow:    ea.FailOpen,
		AllowedHeaders:      headerList(ea.AllowedHeaders),
	}
	if ea.MaxBodyBytes > 0 {
		cfg.WithRequestBody = &extauthzv3.BufferSettings{MaxRequestBytes: ea.MaxBodyBytes, AllowPartialMessage: true}
	}
	switch ea.Protocol {
	case model.ExtAuthGRPC:
		cfg.Services = &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster}},
			Timeout:         durationpb.New(ea.Timeout),
		}}
	default:
		upstream := headerList(ea.AllowedUpstreamHeaders)
		if upstream == nil {
			// Every header of the answer but Host (the Gateway API's
			// default): the proxy never copies Host nor framing headers.
			upstream = &matcherv3.ListStringMatcher{Patterns: []*matcherv3.StringMatcher{{
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}}}}
		}
		cfg.Services = &extauthzv3.ExtAuthz_HttpService{HttpService: &extauthzv3.HttpService{
			ServerUri: &corev3.HttpUri{
				Uri:              "http://" + ea.Backend.Service.Name + "." + ea.Backend.Service.Namespace + ":" + strconv.Itoa(int(ea.Backend.Port)),
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: cluster},
				Timeout:          durationpb.New(ea.Timeout),
			},
			PathPrefix:            ea.PathPrefix,
			AuthorizationResponse: &extauthzv3.AuthorizationResponse{AllowedUpstreamHeaders: upstream},
		}}
	}
	typed, err := anypb.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed}}, nil
}

// headerList matches header names (case-insensitively); nil for none.
func headerList(names []string) *matcherv3.ListStringMatcher {
	if len(names) == 0 {
		return nil
	}
	l := &matcherv3.ListStringMatcher{}
	for _, n := range names {
		l.Patterns = append(l.Patterns, &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: n}, IgnoreCase: true})
	}
	return l
}

// setExtAuth enables a rule's external authorization on its route (an
// ExtAuthzPerRoute with empty check settings under its filter's name) and
// adds the authorization service's cluster.
func setExtAuth(m *model.Model, clusters *clusterCollector, r *routev3.Route, a *model.Action) error {
	ea := a.ExtAuth
	if ea == nil {
		return nil
	}
	addExtAuthCluster(m, clusters, ea)
	return enableExtAuth(r, ea)
}

// enableExtAuth enables an external authorization's filter on a route.
func enableExtAuth(r *routev3.Route, ea *model.ExtAuth) error {
	return setExtAuthPerRoute(r, extAuthName(ea), &extauthzv3.ExtAuthzPerRoute{
		Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{CheckSettings: &extauthzv3.CheckSettings{}}})
}

// addExtAuthCluster adds the cluster of an external authorization's
// service (ea may be nil).
func addExtAuthCluster(m *model.Model, clusters *clusterCollector, ea *model.ExtAuth) {
	if ea == nil || ea.Backend.Cluster == "" {
		return
	}
	if svc := m.Service(ea.Backend.Service.Namespace, ea.Backend.Service.Name); svc != nil {
		if port := svc.Port(ea.Backend.Port); port != nil {
			clusters.add(svc, port)
		}
	}
}

func setExtAuthPerRoute(r *routev3.Route, name string, per *extauthzv3.ExtAuthzPerRoute) error {
	typed, err := anypb.New(per)
	if err != nil {
		return fmt.Errorf("%s per route: %w", name, err)
	}
	if r.TypedPerFilterConfig == nil {
		r.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	r.TypedPerFilterConfig[name] = typed
	return nil
}

// disableExtAuthElsewhere disables each external authorization filter of
// a listener (want.extAuth) on every route of rc that does not enable it,
// after enabling the gateway's (fallback, nil: none) on every route
// without one of its own.
func disableExtAuthElsewhere(rc *routev3.RouteConfiguration, want listenerFilters, fallback *model.ExtAuth) error {
	if fallback != nil {
		for _, vh := range rc.VirtualHosts {
			for _, r := range vh.Routes {
				if !hasExtAuth(r) {
					if err := enableExtAuth(r, fallback); err != nil {
						return err
					}
				}
			}
		}
	}
	for _, ea := range want.extAuth {
		name := extAuthName(ea)
		for _, vh := range rc.VirtualHosts {
			for _, r := range vh.Routes {
				if _, ok := r.TypedPerFilterConfig[name]; ok {
					continue
				}
				if err := setExtAuthPerRoute(r, name, &extauthzv3.ExtAuthzPerRoute{
					Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true}}); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// hasExtAuth reports whether a route enables an external authorization.
func hasExtAuth(r *routev3.Route) bool {
	for name := range r.TypedPerFilterConfig {
		if strings.HasPrefix(name, ExtAuthzFilterPrefix+"/") {
			return true
		}
	}
	return false
}
