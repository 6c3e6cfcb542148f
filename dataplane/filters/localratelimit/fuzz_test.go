package localratelimit

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/internal/protofuzz"
	"github.com/meshgate/meshgate/dataplane/router"
)

// fuzzSeeds are valid configs using every field of the subset.
func fuzzSeeds() []*localratelimitv3.LocalRateLimit {
	return []*localratelimitv3.LocalRateLimit{
		keyed("remote_address", remoteAddress(), bucketOf(2, 1, time.Second), 4),
		keyed("masked_remote_address", maskedAddress(24), bucketOf(2, 1, time.Second), 4),
		keyed("header", requestHeader("x-key"), bucketOf(2, 1, time.Second), 4),
		{StatPrefix: "rl", FilterEnabled: full(), FilterEnforced: full(), TokenBucket: bucketOf(3, 1, time.Second)},
		{StatPrefix: "rl"},
	}
}

// FuzzLocalRateLimit mutates valid configs field by field and runs them
// through the filter's check, factory and handler.
func FuzzLocalRateLimit(f *testing.F) {
	seeds := fuzzSeeds()
	f.Add([]byte{0})
	f.Add([]byte{1, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Add([]byte{2, 9, 8, 7, 6, 5, 4})
	f.Add([]byte{3, 3, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		cfg := proto.Clone(seeds[int(data[0])%len(seeds)]).(*localratelimitv3.LocalRateLimit)
		protofuzz.Mutate(cfg, data[1:])
		if checker(t).Check(cfg) != nil {
			return
		}
		filter, err := Factory().New("rl", cfg, httpfilter.Env{Stats: new(httpfilter.Stats)})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "local_ratelimit: ") {
				t.Fatalf("error does not name the filter: %v", err)
			}
			return
		}
		h := filter.Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, _ *http.Request, _ *router.Route) {
			w.WriteHeader(http.StatusOK)
		}))
		for _, remote := range []string{"192.0.2.1:1", "[2001:db8::1]:1", "garbage"} {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = remote
			r.Header.Set("X-Key", "k")
			h.ServeHTTP(httptest.NewRecorder(), r, nil)
		}
	})
}
