package router

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// TracingSampling is a route's Route.tracing: the sampling ratios (0 to 1)
// that replace the connection manager's for its requests. A ratio not set
// on the route (Has... false) stays the connection manager's.
type TracingSampling struct {
	Random, Overall       float64
	HasRandom, HasOverall bool
}

// Tracing returns the route's sampling override, nil when it has none.
func (r *Route) Tracing() *TracingSampling { return r.tracing }

// compileTracing reads Route.tracing (client_sampling has no effect: the
// proxy does not implement x-client-trace-id); nil when it sets no ratio.
func compileTracing(t *routev3.Tracing) *TracingSampling {
	if t == nil || (t.GetRandomSampling() == nil && t.GetOverallSampling() == nil) {
		return nil
	}
	s := &TracingSampling{}
	if p := t.GetRandomSampling(); p != nil {
		s.Random, s.HasRandom = fraction(p), true
	}
	if p := t.GetOverallSampling(); p != nil {
		s.Overall, s.HasOverall = fraction(p), true
	}
	return s
}

// fraction is a FractionalPercent as a ratio, at most 1 (Envoy's reading
// of a numerator above the denominator).
func fraction(p *typev3.FractionalPercent) float64 {
	var denominator float64
	switch p.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		denominator = 10_000
	case typev3.FractionalPercent_MILLION:
		denominator = 1_000_000
	default:
		denominator = 100
	}
	return min(float64(p.GetNumerator())/denominator, 1)
}
