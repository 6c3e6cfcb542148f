package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/meshgate/meshgate/controlplane/model"
)

// setHeaderModifiers applies a rule's RequestHeaderModifier and
// ResponseHeaderModifier filters to its route: set overwrites, add
// appends, remove removes.
func setHeaderModifiers(r *routev3.Route, a *model.Action) {
	if h := a.RequestHeaders; h != nil {
		r.RequestHeadersToAdd = headersToAdd(h)
		r.RequestHeadersToRemove = h.Remove
	}
	if h := a.ResponseHeaders; h != nil {
		r.ResponseHeadersToAdd = headersToAdd(h)
		r.ResponseHeadersToRemove = h.Remove
	}
}

func headersToAdd(h *model.HeaderModifier) []*corev3.HeaderValueOption {
	out := make([]*corev3.HeaderValueOption, 0, len(h.Set)+len(h.Add))
	for _, s := range h.Set {
		out = append(out, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: s.Name, Value: s.Value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	for _, a := range h.Add {
		out = append(out, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: a.Name, Value: a.Value},
			AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
		})
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
