// Package headermutation is Envoy's header mutation HTTP filter
// (envoy.extensions.filters.http.header_mutation.v3.HeaderMutation, per
// route HeaderMutationPerRoute) for the meshgate proxy, in the subset of
// docs/xds.md ("Header mutation"): request mutations change the request
// before the filters after it and the router see it; response mutations
// change the head of every response to the requests the filter saw (from
// the upstream, a local reply, or a filter after it), after the route's
// response_headers_to_add/remove.
//
// As in Envoy, the filter's own mutations apply first, then those of every
// per-route level (route, virtual host, route configuration), most specific
// first, or least specific first with most_specific_header_mutations_wins.
// Each mutation removes a header, or appends a value with its append_action
// (APPEND_IF_EXISTS_OR_ADD, ADD_IF_ABSENT, OVERWRITE_IF_EXISTS_OR_ADD,
// OVERWRITE_IF_EXISTS), in order.
//
// The package holds the filter whole: Factory, subset.go (its part of the
// xDS subset), compile.go and this runtime. A request pays only for what is
// configured: nothing when neither the filter nor the route has mutations,
// one allocation (the ResponseWriter wrapper) when response mutations apply.
package headermutation

import (
	"fmt"
	"net/http"

	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
)

// Factory describes the header mutation filter to the registry.
func Factory() httpfilter.Factory {
	return httpfilter.Factory{
		ConfigType:   configType,
		PerRouteType: perRouteType,
		Rules:        subsetRules(),
		New:          newFilter,
		NewPerRoute:  newPerRoute,
	}
}

// filter is one header_mutation http_filters entry.
type filter struct {
	name string    // the entry's name: the key of its per-route configs
	own  mutations // the filter's config
	// leastSpecificFirst is most_specific_header_mutations_wins: the
	// per-route levels apply least specific first, so the route's win.
	leastSpecificFirst bool
}

func newFilter(name string, config proto.Message, _ httpfilter.Env) (httpfilter.Filter, error) {
	cfg, ok := config.(*headermutationv3.HeaderMutation)
	if !ok {
		return nil, fmt.Errorf("want a HeaderMutation, got %T", config)
	}
	own, err := compileMutations(cfg.GetMutations())
	if err != nil {
		return nil, fmt.Errorf("mutations.%w", err)
	}
	return &filter{name: name, own: own, leastSpecificFirst: cfg.GetMostSpecificHeaderMutationsWins()}, nil
}

func newPerRoute(config proto.Message) (any, error) {
	cfg, ok := config.(*headermutationv3.HeaderMutationPerRoute)
	if !ok {
		return nil, fmt.Errorf("want a HeaderMutationPerRoute, got %T", config)
	}
	m, err := compileMutations(cfg.GetMutations())
	if err != nil {
		return nil, fmt.Errorf("mutations.%w", err)
	}
	return &m, nil
}

// Wrap returns the handler applying the mutations around next.
func (f *filter) Wrap(next httpfilter.Handler) httpfilter.Handler {
	return &handler{filter: f, next: next}
}

type handler struct {
	*filter
	next httpfilter.Handler
}

// ServeHTTP applies the request mutations to r, wraps w when response
// mutations apply, and calls next.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request, rt *router.Route) {
	var levels []any // per-route configs, most specific first
	if rt != nil {
		levels = rt.PerFilterConfigs(h.name)
	}
	h.own.request.Apply(r.Header)
	respond := !h.own.response.Empty()
	for i := range levels {
		m := h.level(levels, i)
		if m == nil {
			continue
		}
		m.request.Apply(r.Header)
		respond = respond || !m.response.Empty()
	}
	if !respond {
		h.next.ServeHTTP(w, r, rt)
		return
	}
	rw := &responseMutator{filter: h.filter, levels: levels}
	rw.Reset(w, rw)
	h.next.ServeHTTP(rw, r, rt)
}

// level returns the i-th per-route level in application order (most
// specific first unless leastSpecificFirst); nil for a config of another
// filter's type under this filter's name (ignored, as Envoy does).
func (f *filter) level(levels []any, i int) *mutations {
	if f.leastSpecificFirst {
		i = len(levels) - 1 - i
	}
	m, _ := levels[i].(*mutations)
	return m
}

// responseMutator applies the response mutations to the response head.
type responseMutator struct {
	httpfilter.ResponseWriter
	filter *filter
	levels []any
}

// BeforeResponse applies the filter's response mutations, then the
// per-route levels'.
func (m *responseMutator) BeforeResponse(_ int, h http.Header) {
	m.filter.own.response.Apply(h)
	for i := range m.levels {
		if l := m.filter.level(m.levels, i); l != nil {
			l.response.Apply(h)
		}
	}
}
