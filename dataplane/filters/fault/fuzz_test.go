package fault

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/internal/protofuzz"
	"github.com/meshgate/meshgate/dataplane/router"
)

// fuzzSeeds are valid configs using every field of the subset.
func fuzzSeeds() []*faultv3.HTTPFault {
	return []*faultv3.HTTPFault{
		{Delay: delay(time.Millisecond, percent(50, typev3.FractionalPercent_HUNDRED)),
			Abort:   abortHTTP(503, percent(10, typev3.FractionalPercent_TEN_THOUSAND)),
			Headers: []*routev3.HeaderMatcher{{Name: "x-chaos", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}}},
		{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 14}, Percentage: percent(1, typev3.FractionalPercent_MILLION)}},
		{},
	}
}

// FuzzFault mutates valid fault configs field by field and runs them
// through the filter's check, factory and handler (a delay is cut short by
// the request's context).
func FuzzFault(f *testing.F) {
	seeds := fuzzSeeds()
	f.Add([]byte{0})
	f.Add([]byte{1, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Add([]byte{2, 9, 8, 7, 6, 5, 4})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		cfg := proto.Clone(seeds[int(data[0])%len(seeds)]).(*faultv3.HTTPFault)
		protofuzz.Mutate(cfg, data[1:])
		if checker(t).Check(cfg) != nil {
			return
		}
		filter, err := Factory().New("fault", cfg, httpfilter.Env{})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fault: ") {
				t.Fatalf("error does not name the filter: %v", err)
			}
			return
		}
		h := filter.Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, _ *http.Request, _ *router.Route) {
			w.WriteHeader(http.StatusOK)
		}))
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // no delay waits
		r := httptest.NewRequest("GET", "/", nil).WithContext(ctx)
		r.Header.Set("X-Chaos", "1")
		h.ServeHTTP(httptest.NewRecorder(), r, nil)
	})
}
