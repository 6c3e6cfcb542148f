// Package fault is the fault injection HTTP filter
// (envoy.extensions.filters.http.fault.v3.HTTPFault, Envoy's
// envoy.filters.http.fault): it delays a share of the requests by a fixed
// time and aborts a share of them with an HTTP status or a gRPC status,
// optionally only the requests whose headers match, for chaos tests. The
// delay comes first, then the abort, each with its own percentage. A
// per-route HTTPFault (typed_per_filter_config under the filter's name)
// replaces the listener's config on that route, the most specific level
// winning, as Envoy does.
//
// Subset (docs/xds.md "Fault injection"): delay.fixed_delay and
// delay.percentage; abort.http_status or abort.grpc_status and
// abort.percentage; headers. Percentages are FractionalPercent of any
// denominator; unset is 0%.
package fault

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/dataplane/accesslog"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
)

// StatFault is the /stats family counting injected faults: keys
// "delays_injected" and "aborts_injected".
const StatFault = "fault"

// Keys of StatFault.
const (
	statDelays = "delays_injected"
	statAborts = "aborts_injected"
)

// bodyAbort is the body of an abort, Envoy's.
const bodyAbort = "fault filter abort"

// Factory describes the fault filter to the registry.
func Factory() httpfilter.Factory {
	return httpfilter.Factory{
		ConfigType:   configType,
		PerRouteType: configType,
		Rules:        subsetRules(),
		Stats:        []string{StatFault},
		New:          newFilter,
		NewPerRoute:  newPerRoute,
	}
}

// filter is one fault http_filters entry.
type filter struct {
	name   string
	faults *faults
	stats  *httpfilter.Counters
	// rnd returns a uniformly random number (rand.Uint64; tests fix it).
	rnd func() uint64
}

func newFilter(name string, config proto.Message, env httpfilter.Env) (httpfilter.Filter, error) {
	cfg, ok := config.(*faultv3.HTTPFault)
	if !ok {
		return nil, fmt.Errorf("want an HTTPFault, got %T", config)
	}
	f, err := compile(cfg)
	if err != nil {
		return nil, fmt.Errorf("fault: %w", err)
	}
	return &filter{name: name, faults: f, stats: env.Stats.Counters(StatFault), rnd: rand.Uint64}, nil
}

func newPerRoute(config proto.Message) (any, error) {
	cfg, ok := config.(*faultv3.HTTPFault)
	if !ok {
		return nil, fmt.Errorf("want an HTTPFault, got %T", config)
	}
	f, err := compile(cfg)
	if err != nil {
		return nil, fmt.Errorf("fault.%w", err)
	}
	return f, nil
}

// Wrap returns the handler injecting the faults before next.
func (f *filter) Wrap(next httpfilter.Handler) httpfilter.Handler {
	return &handler{filter: f, next: next}
}

type handler struct {
	*filter
	next httpfilter.Handler
}

// ServeHTTP applies the faults of rt (its per-route HTTPFault, else the
// listener's) to r when its headers match: the delay, then the abort.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request, rt *router.Route) {
	fs := h.faults
	if rt != nil {
		if per, ok := rt.PerFilterConfig(h.name).(*faults); ok {
			fs = per
		}
	}
	if (fs.delay == 0 && !fs.abort) || !fs.matches(r) {
		h.next.ServeHTTP(w, r, rt)
		return
	}
	if fs.delay > 0 && fs.delayPercent.hits(h.rnd()) {
		h.stats.Inc(statDelays)
		accesslog.FromContext(r.Context()).Flag(accesslog.DelayInjected)
		t := time.NewTimer(fs.delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return // the client went away during the delay
		}
	}
	if fs.abort && fs.abortPercent.hits(h.rnd()) {
		h.stats.Inc(statAborts)
		accesslog.FromContext(r.Context()).Fail(accesslog.FaultInjected, accesslog.DetailsFaultAbort)
		if fs.grpcStatus != "" {
			header := w.Header()
			header["Content-Type"] = []string{"application/grpc"}
			header["Grpc-Status"] = []string{fs.grpcStatus}
			header["Grpc-Message"] = []string{bodyAbort}
			httpfilter.LocalReply(w, rt, http.StatusOK, "")
			return
		}
		httpfilter.LocalReply(w, rt, fs.httpStatus, bodyAbort)
		return
	}
	h.next.ServeHTTP(w, r, rt)
}

// matches reports whether every header matcher matches r.
func (fs *faults) matches(r *http.Request) bool {
	for i := range fs.headers {
		if !fs.headers[i].Match(r) {
			return false
		}
	}
	return true
}
