package globalratelimit

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/dataplane/filters/localratelimit"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/internal/protofuzz"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// FuzzGlobalRateLimit mutates a valid filter config and a valid per-route
// config field by field and runs them through the check, the factory and
// the handler (with a fake service).
func FuzzGlobalRateLimit(f *testing.F) {
	f.Add([]byte{0})
	f.Add([]byte{1, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Add([]byte{2, 9, 8, 7, 6, 5, 4})
	self, local := Factory(), localratelimit.Factory()
	checker, err := xdscheck.New(self.Subset(), local.Subset())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		cfg := proto.Clone(config(data[0]%2 == 0)).(*ratelimitv3.RateLimit)
		per := proto.Clone(perRouteConfig()).(*ratelimitv3.RateLimitPerRoute)
		if data[0]%3 == 0 {
			protofuzz.Mutate(cfg, data[1:])
		} else {
			protofuzz.Mutate(per, data[1:])
		}
		if checker.Check(cfg) != nil || checker.Check(per) != nil {
			return
		}
		fl, err := Factory().New("rl", cfg, httpfilter.Env{Stats: new(httpfilter.Stats)})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "ratelimit: ") {
				t.Fatalf("error does not name the filter: %v", err)
			}
			return
		}
		fl.(*filter).client = &fakeService{resp: status(rlsv3.RateLimitResponse_OVER_LIMIT, 0)}
		if _, err := newPerRoute(per); err != nil {
			if !strings.HasPrefix(err.Error(), "ratelimit.") {
				t.Fatalf("per-route error does not name the filter: %v", err)
			}
			return
		}
		rt, err := routeWith(per)
		if err != nil {
			t.Fatalf("a per-route config the filter accepts, refused by the router: %v", err)
		}
		h := fl.Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, _ *http.Request, _ *router.Route) {
			w.WriteHeader(http.StatusOK)
		}))
		for _, remote := range []string{"192.0.2.1:1", "[2001:db8::1]:1", "garbage"} {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = remote
			r.Header.Set("X-Client", "c")
			h.ServeHTTP(httptest.NewRecorder(), r, rt)
		}
	})
}
