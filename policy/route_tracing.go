package policy

import (
	"fmt"
	"strconv"
	"strings"
)

// AnnotationTracingSampling is the HTTPRoute annotation that sets, for the
// requests of the route that start a trace, the percentage sampled
// (0 to 100) in place of MeshConfig spec.tracing.sampling. Requests that
// carry a trace context follow its sampled flag, as everywhere. Without
// MeshConfig spec.tracing it has no effect.
const AnnotationTracingSampling = "meshgate.dev/tracing-sampling"

// RouteTracingSampling reads the AnnotationTracingSampling of a route's
// annotations: the percentage, whether it is set, or why it is invalid.
func RouteTracingSampling(annotations map[string]string) (float64, bool, error) {
	v, ok := annotations[AnnotationTracingSampling]
	if !ok {
		return 0, false, nil
	}
	pct, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), "%"), 64)
	if err != nil || !(pct >= 0 && pct <= 100) {
		return 0, false, fmt.Errorf("invalid sampling %q: want a percentage from 0 to 100", v)
	}
	return pct, true, nil
}

// checkRouteTracing checks the tracing annotation of an HTTPRoute.
func (l *loader) checkRouteTracing(r *HTTPRoute) {
	if _, _, err := RouteTracingSampling(r.Annotations); err != nil {
		l.errorf(r.Source, mapKeyPath("metadata.annotations", AnnotationTracingSampling), "%v", err)
	}
}
