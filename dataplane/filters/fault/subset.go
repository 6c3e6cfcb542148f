package fault

import (
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// Names of the fault filter's typed configs (docs/xds.md "Fault
// injection"). Envoy's per-route config is an HTTPFault too.
const (
	configType protoreflect.FullName = "envoy.extensions.filters.http.fault.v3.HTTPFault"
	delayType  protoreflect.FullName = "envoy.extensions.filters.common.fault.v3.FaultDelay"
	abortType  protoreflect.FullName = "envoy.extensions.filters.http.fault.v3.FaultAbort"
)

// subsetRules is the fault filter's part of the subset: a fixed delay and
// an HTTP or gRPC abort, each with its percentage, and header matchers
// (HeaderMatcher and FractionalPercent keep their core rules). Header- and
// runtime-controlled faults, max_active_faults, rate limits, downstream
// nodes and upstream cluster are not implemented.
func subsetRules() xdscheck.Rules {
	return xdscheck.Rules{
		configType: xdscheck.Allow("delay", "abort", "headers"),
		delayType:  xdscheck.Allow("fixed_delay", "percentage").Requires("fixed_delay"),
		abortType:  xdscheck.Allow("http_status", "grpc_status", "percentage"),
	}
}
