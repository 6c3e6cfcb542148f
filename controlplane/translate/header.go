package translate

import (
	"fmt"
	"strings"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/controlplane/model"
)

// HeaderMutationFilterName is the header mutation HTTP filter
// (envoy.extensions.filters.http.header_mutation.v3.HeaderMutation) on the
// listeners whose routes modify headers: the key of the routes'
// HeaderMutationPerRoute configs.
const HeaderMutationFilterName = "envoy.filters.http.header_mutation"

// headerMutationFilter is the header mutation filter of a listener. It has
// no mutations of its own: each route that modifies headers has its
// per-route config (setHeaderModifiers), and a route without one costs
// nothing.
func headerMutationFilter() (*hcmv3.HttpFilter, error) {
	typed, err := anypb.New(&headermutationv3.HeaderMutation{})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", HeaderMutationFilterName, err)
	}
	return &hcmv3.HttpFilter{Name: HeaderMutationFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed}}, nil
}

// modifiesHeaders reports whether a rule has a RequestHeaderModifier or a
// ResponseHeaderModifier filter.
func modifiesHeaders(rule *model.Rule) bool {
	return rule.Action.RequestHeaders != nil || rule.Action.ResponseHeaders != nil
}

// setHeaderModifiers gives a route the rule's RequestHeaderModifier and
// ResponseHeaderModifier filters, as the per-route config of the header
// mutation filter: on requests and on responses, remove first (the
// headers as they came), then set (overwrite), then add (append), as a
// route's headers_to_remove and headers_to_add apply.
func setHeaderModifiers(r *routev3.Route, a *model.Action) error {
	if a.RequestHeaders == nil && a.ResponseHeaders == nil {
		return nil
	}
	typed, err := anypb.New(&headermutationv3.HeaderMutationPerRoute{Mutations: &headermutationv3.Mutations{
		RequestMutations:  headerMutations(a.RequestHeaders),
		ResponseMutations: headerMutations(a.ResponseHeaders),
	}})
	if err != nil {
		return fmt.Errorf("%s per route: %w", HeaderMutationFilterName, err)
	}
	if r.TypedPerFilterConfig == nil {
		r.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	r.TypedPerFilterConfig[HeaderMutationFilterName] = typed
	return nil
}

// headerMutations are the mutations of a header modifier (nil: none).
func headerMutations(h *model.HeaderModifier) []*mutationrulesv3.HeaderMutation {
	if h == nil {
		return nil
	}
	out := make([]*mutationrulesv3.HeaderMutation, 0, len(h.Remove)+len(h.Set)+len(h.Add))
	for _, name := range h.Remove {
		out = append(out, &mutationrulesv3.HeaderMutation{Action: &mutationrulesv3.HeaderMutation_Remove{Remove: name}})
	}
	for _, s := range h.Set {
		out = append(out, appendHeader(s, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD))
	}
	for _, a := range h.Add {
		out = append(out, appendHeader(a, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD))
	}
	return out
}

// appendHeader is the mutation writing one header. The value is literal in
// the policy and a formatter string on the wire: a "%" is written "%%".
func appendHeader(h model.Header, action corev3.HeaderValueOption_HeaderAppendAction) *mutationrulesv3.HeaderMutation {
	return &mutationrulesv3.HeaderMutation{Action: &mutationrulesv3.HeaderMutation_Append{Append: &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: h.Name, Value: escapePercent(h.Value)},
		AppendAction: action,
	}}}
}

// escapePercent writes a literal value as an Envoy formatter string.
func escapePercent(v string) string { return strings.ReplaceAll(v, "%", "%%") }
