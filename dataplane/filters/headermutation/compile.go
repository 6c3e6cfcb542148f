package headermutation

import (
	"errors"
	"fmt"
	"strings"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"

	"github.com/meshgate/meshgate/dataplane/internal/headers"
)

// mutations is a compiled Mutations: the request and response header
// mutations of one level (the filter's config or one per-route config),
// each applied in order.
type mutations struct {
	request, response headers.List
}

// compileMutations compiles a checked Mutations (nil: no mutation). Errors
// name the field relative to m.
func compileMutations(m *headermutationv3.Mutations) (mutations, error) {
	var out mutations
	for i, hm := range m.GetRequestMutations() {
		if err := compileMutation(&out.request, hm, true); err != nil {
			return out, fmt.Errorf("request_mutations[%d].%w", i, err)
		}
	}
	for i, hm := range m.GetResponseMutations() {
		if err := compileMutation(&out.response, hm, false); err != nil {
			return out, fmt.Errorf("response_mutations[%d].%w", i, err)
		}
	}
	return out, nil
}

// compileMutation appends one HeaderMutation to l.
func compileMutation(l *headers.List, hm *mutationrulesv3.HeaderMutation, request bool) error {
	switch action := hm.GetAction().(type) {
	case *mutationrulesv3.HeaderMutation_Remove:
		if err := headers.CheckName(action.Remove, request); err != nil {
			return fmt.Errorf("remove: %w", err)
		}
		if err := checkProxyOwned(action.Remove, request); err != nil {
			return fmt.Errorf("remove: %w", err)
		}
		l.Remove(action.Remove)
	case *mutationrulesv3.HeaderMutation_Append:
		o, err := headers.CompileOption(action.Append, request, func(name string) error { return checkProxyOwned(name, request) })
		if err != nil {
			return fmt.Errorf("append.%w", err)
		}
		l.Add(o)
	case nil:
		return errors.New("action: one of remove, append is required")
	default:
		return fmt.Errorf("action: %T not supported (remove or append)", action)
	}
	return nil
}

// checkProxyOwned refuses the headers the proxy itself writes or strips
// around the filters, so that a mutation of them would not do what it does
// in Envoy (where the connection manager handles them before the filters):
// the hop-by-hop headers and the message framing, and on requests the
// X-Forwarded-For and X-Forwarded-Proto the proxy sets when it forwards.
func checkProxyOwned(name string, request bool) error {
	switch lower := strings.ToLower(name); lower {
	case "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "trailer",
		"proxy-authorization", "proxy-authenticate":
		return fmt.Errorf("%q is a hop-by-hop header: not supported", name)
	case "content-length":
		return fmt.Errorf("%q frames the message: not supported", name)
	case "x-forwarded-for", "x-forwarded-proto":
		if request {
			return fmt.Errorf("%q is set by the proxy when it forwards: not supported", name)
		}
	}
	return nil
}
