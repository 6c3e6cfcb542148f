package headermutation

import (
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// Names of the header mutation typed configs (docs/xds.md "Header mutation").
const (
	configType   protoreflect.FullName = "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
	perRouteType protoreflect.FullName = "envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute"
)

// subsetRules is the header mutation filter's part of the subset of docs/xds.md:
// request and response mutations (remove, or append a HeaderValueOption,
// whose core rule allows header and append_action), and the order of the
// per-route levels. Query parameter and trailer mutations, remove_on_match
// and formatters are NACKed.
func subsetRules() xdscheck.Rules {
	return xdscheck.Rules{
		configType:   xdscheck.Allow("mutations", "most_specific_header_mutations_wins"),
		perRouteType: xdscheck.Allow("mutations"),
		"envoy.extensions.filters.http.header_mutation.v3.Mutations": xdscheck.Allow("request_mutations", "response_mutations"),
		"envoy.config.common.mutation_rules.v3.HeaderMutation":       xdscheck.Allow("remove", "append"),
	}
}
