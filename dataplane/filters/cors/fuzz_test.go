package cors

import (
	"net/http"
	"net/http/httptest"
	"testing"

	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/internal/protofuzz"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// FuzzCorsPolicy mutates a valid CorsPolicy field by field and runs those
// the check accepts through NewPerRoute and the handler's policy lookups,
// with an origin and a method the input picks: never a panic.
func FuzzCorsPolicy(f *testing.F) {
	seed := &corsv3.CorsPolicy{
		AllowOriginStringMatch: []*matcherv3.StringMatcher{exact("https://a.com"), regex(`https://.*\.b\.com`)},
		AllowMethods:           "*", AllowHeaders: "x-a", ExposeHeaders: "x-b", MaxAge: "5",
		AllowCredentials: wrapperspb.Bool(true), ForwardNotMatchingPreflights: wrapperspb.Bool(false),
	}
	f.Add([]byte{0, 1, 2, 3})
	f.Add([]byte{9, 200, 7})
	checker, err := xdscheck.New(xdscheckFilter())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 1 {
			return
		}
		cfg := proto.Clone(seed).(*corsv3.CorsPolicy)
		protofuzz.Mutate(cfg, data[1:])
		if checker.Check(cfg) != nil {
			return
		}
		per, err := newPerRoute(cfg)
		if err != nil {
			return
		}
		ps := policies{per}
		origin := []string{"https://a.com", "https://x.b.com", "null", ""}[int(data[0])%4]
		r := httptest.NewRequest([]string{"OPTIONS", "GET"}[int(data[0]/4)%2], "/", nil)
		r.Header.Set("Origin", origin)
		r.Header.Set("Access-Control-Request-Method", "PUT")
		h := &handler{filter: &filter{name: "cors"}, next: httpfilter.HandlerFunc(func(w http.ResponseWriter, _ *http.Request, _ *router.Route) {
			w.WriteHeader(http.StatusOK)
		})}
		if ps.originAllowed(origin) && r.Method == "OPTIONS" {
			h.preflight(httptest.NewRecorder(), r, ps, origin, "PUT", true)
		}
		h.ServeHTTP(httptest.NewRecorder(), r, nil)
	})
}
