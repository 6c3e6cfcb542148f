package localratelimit

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

func checker(t testing.TB) *xdscheck.Checker {
	t.Helper()
	f := Factory()
	c, err := xdscheck.New(f.Subset())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func bucketOf(burst, perFill uint32, fill time.Duration) *typev3.TokenBucket {
	return &typev3.TokenBucket{MaxTokens: burst, TokensPerFill: wrapperspb.UInt32(perFill), FillInterval: durationpb.New(fill)}
}

func full() *corev3.RuntimeFractionalPercent {
	return &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100}}
}

// keyed is the config the control plane makes of a rule keyed by action:
// an unlimited token_bucket, and one wildcard descriptor ("rule",
// "rule-0"), (key, "") with bucket.
func keyed(key string, act *routev3.RateLimit_Action, bucket *typev3.TokenBucket, maxKeys uint32) *localratelimitv3.LocalRateLimit {
	return &localratelimitv3.LocalRateLimit{
		StatPrefix: "rl", FilterEnabled: full(), FilterEnforced: full(),
		TokenBucket:                     bucketOf(1<<32-1, 1<<32-1, time.Second),
		AlwaysConsumeDefaultTokenBucket: wrapperspb.Bool(false),
		EnableXRatelimitHeaders:         ratelimitcommonv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03,
		EnableRetryAfterHeader:          true,
		MaxDynamicDescriptors:           wrapperspb.UInt32(maxKeys),
		RateLimits: []*routev3.RateLimit{{Actions: []*routev3.RateLimit_Action{
			{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{GenericKey: &routev3.RateLimit_Action_GenericKey{DescriptorKey: "rule", DescriptorValue: "rule-0"}}},
			act,
		}}},
		Descriptors: []*ratelimitcommonv3.LocalRateLimitDescriptor{{
			Entries:     []*ratelimitcommonv3.RateLimitDescriptor_Entry{{Key: "rule", Value: "rule-0"}, {Key: key}},
			TokenBucket: bucket,
		}},
	}
}

func remoteAddress() *routev3.RateLimit_Action {
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RemoteAddress_{RemoteAddress: &routev3.RateLimit_Action_RemoteAddress{}}}
}

func maskedAddress(v4 uint32) *routev3.RateLimit_Action {
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_MaskedRemoteAddress_{
		MaskedRemoteAddress: &routev3.RateLimit_Action_MaskedRemoteAddress{V4PrefixMaskLen: wrapperspb.UInt32(v4)}}}
}

func requestHeader(name string) *routev3.RateLimit_Action {
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RequestHeaders_{
		RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{HeaderName: name, DescriptorKey: "header"}}}
}

// testHandler is the filter of cfg in front of a handler answering 200.
func testHandler(t *testing.T, cfg *localratelimitv3.LocalRateLimit, stats *httpfilter.Stats) httpfilter.Handler {
	t.Helper()
	if err := checker(t).Check(cfg); err != nil {
		t.Fatalf("check: %v", err)
	}
	f, err := newFilter("rl", cfg, httpfilter.Env{Stats: stats})
	if err != nil {
		t.Fatal(err)
	}
	return f.Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, _ *http.Request, _ *router.Route) {
		w.WriteHeader(http.StatusOK)
	}))
}

func get(h httpfilter.Handler, remote string, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = remote
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r, nil)
	return w
}

// TestTokenBucket: a bucket of 5 tokens refilled 5 per second lets 5
// requests through, answers the 6th 429 with Retry-After and the rate
// limit headers, and after one (virtual) second lets 5 more through; the
// refusals are counted.
func TestTokenBucket(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		stats := new(httpfilter.Stats)
		cfg := &localratelimitv3.LocalRateLimit{StatPrefix: "rl", FilterEnabled: full(), FilterEnforced: full(),
			TokenBucket:             bucketOf(5, 5, time.Second),
			EnableXRatelimitHeaders: ratelimitcommonv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03, EnableRetryAfterHeader: true}
		h := testHandler(t, cfg, stats)
		for round := range 2 {
			for i := range 5 {
				w := get(h, "192.0.2.1:1000")
				if w.Code != http.StatusOK {
					t.Fatalf("round %d request %d: %d, want 200", round, i, w.Code)
				}
				wantRemaining := fmt.Sprint(4 - i)
				if got := w.Header().Get("X-RateLimit-Remaining"); got != wantRemaining {
					t.Errorf("round %d request %d: X-RateLimit-Remaining %q, want %q", round, i, got, wantRemaining)
				}
				if got := w.Header().Get("RateLimit"); got != `"default";r=`+wantRemaining+`;t=1` {
					t.Errorf("round %d request %d: RateLimit %q", round, i, got)
				}
			}
			w := get(h, "192.0.2.1:1000")
			want := map[string]string{
				"Retry-After": "1", "X-RateLimit-Limit": "5, 5;w=1", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1",
				"RateLimit-Policy": `"default";q=5;w=1`, "RateLimit": `"default";r=0;t=1`,
			}
			if w.Code != http.StatusTooManyRequests || w.Body.String() != bodyLimited {
				t.Fatalf("round %d: 6th request %d %q, want 429 %q", round, w.Code, w.Body.String(), bodyLimited)
			}
			for k, v := range want {
				if got := w.Header().Get(k); got != v {
					t.Errorf("round %d: 429 %s = %q, want %q", round, k, got, v)
				}
			}
			time.Sleep(time.Second) // virtual: the bucket refills
		}
		if got := stats.Counters(StatLocalRateLimit).Get(statRateLimited); got != 2 {
			t.Errorf("rate_limited = %d, want 2", got)
		}
	})
}

// TestKeys: a bucket per client address, per /24 network, per header
// value; a request without the key falls to the (unlimited) token_bucket.
func TestKeys(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		cfg         *localratelimitv3.LocalRateLimit
		a, b        []string // remote address, then header name and value
		shared      bool     // a and b share a bucket
		unkeyedFree bool     // a request without the key is never limited
	}{
		{name: "client address", cfg: keyed("remote_address", remoteAddress(), bucketOf(2, 2, time.Minute), 10),
			a: []string{"192.0.2.1:1"}, b: []string{"192.0.2.2:1"}},
		{name: "same address, other port", cfg: keyed("remote_address", remoteAddress(), bucketOf(2, 2, time.Minute), 10),
			a: []string{"192.0.2.1:1"}, b: []string{"192.0.2.1:2"}, shared: true},
		{name: "network", cfg: keyed("masked_remote_address", maskedAddress(24), bucketOf(2, 2, time.Minute), 10),
			a: []string{"192.0.2.1:1"}, b: []string{"192.0.2.200:1"}, shared: true},
		{name: "other network", cfg: keyed("masked_remote_address", maskedAddress(24), bucketOf(2, 2, time.Minute), 10),
			a: []string{"192.0.2.1:1"}, b: []string{"192.0.3.1:1"}},
		{name: "header", cfg: keyed("header", requestHeader("x-api-key"), bucketOf(2, 2, time.Minute), 10),
			a: []string{"192.0.2.1:1", "X-Api-Key", "k1"}, b: []string{"192.0.2.1:1", "X-Api-Key", "k2"}, unkeyedFree: true},
		{name: "same header value", cfg: keyed("header", requestHeader("x-api-key"), bucketOf(2, 2, time.Minute), 10),
			a: []string{"192.0.2.1:1", "X-Api-Key", "k1"}, b: []string{"192.0.2.9:1", "X-Api-Key", "k1"}, shared: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				h := testHandler(t, tc.cfg, new(httpfilter.Stats))
				for i := range 2 {
					if w := get(h, tc.a[0], tc.a[1:]...); w.Code != http.StatusOK {
						t.Fatalf("a %d: %d", i, w.Code)
					}
				}
				if w := get(h, tc.a[0], tc.a[1:]...); w.Code != http.StatusTooManyRequests {
					t.Fatalf("a, 3rd: %d, want 429", w.Code)
				} else if got := w.Header().Get("RateLimit-Policy"); got != `"rule-0";q=2;w=60` {
					t.Errorf("RateLimit-Policy %q", got)
				}
				want := http.StatusOK
				if tc.shared {
					want = http.StatusTooManyRequests
				}
				if w := get(h, tc.b[0], tc.b[1:]...); w.Code != want {
					t.Errorf("b: %d, want %d", w.Code, want)
				}
				if tc.unkeyedFree {
					for i := range 10 {
						if w := get(h, tc.a[0]); w.Code != http.StatusOK {
							t.Fatalf("without the key, %d: %d", i, w.Code)
						}
					}
				}
			})
		})
	}
}

// TestKeysBounded: a flood of distinct keys keeps at most
// max_dynamic_descriptors buckets; a key dropped comes back with a full
// bucket.
func TestKeysBounded(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		cfg := keyed("header", requestHeader("x-key"), bucketOf(1, 1, time.Hour), 3)
		h := testHandler(t, cfg, new(httpfilter.Stats))
		if w := get(h, "192.0.2.1:1", "X-Key", "first"); w.Code != http.StatusOK {
			t.Fatalf("first: %d", w.Code)
		}
		if w := get(h, "192.0.2.1:1", "X-Key", "first"); w.Code != http.StatusTooManyRequests {
			t.Fatalf("first again: %d, want 429", w.Code)
		}
		for i := range 1000 {
			get(h, "192.0.2.1:1", "X-Key", fmt.Sprint("flood-", i))
		}
		l := h.(*handler).limits
		if n := l.descriptors[0].dynamic.len(); n != 3 {
			t.Errorf("buckets kept = %d, want 3", n)
		}
		if w := get(h, "192.0.2.1:1", "X-Key", "first"); w.Code != http.StatusOK {
			t.Errorf("first after the flood: %d, want 200 (its bucket was dropped)", w.Code)
		}
	})
}

// TestNotEnabled: a LocalRateLimit without filter_enabled (the listener's,
// as the control plane makes it) limits nothing and adds no header; not
// enforced, a refusal is counted and the request served.
func TestNotEnabled(t *testing.T) {
	t.Parallel()
	h := testHandler(t, &localratelimitv3.LocalRateLimit{StatPrefix: "rl"}, new(httpfilter.Stats))
	for range 3 {
		if w := get(h, "192.0.2.1:1"); w.Code != http.StatusOK || len(w.Header()) != 0 {
			t.Fatalf("%d %v, want 200 without headers", w.Code, w.Header())
		}
	}
	stats := new(httpfilter.Stats)
	h = testHandler(t, &localratelimitv3.LocalRateLimit{StatPrefix: "rl", FilterEnabled: full(), TokenBucket: bucketOf(1, 1, time.Hour)}, stats)
	for range 3 {
		if w := get(h, "192.0.2.1:1"); w.Code != http.StatusOK {
			t.Fatalf("not enforced: %d, want 200", w.Code)
		}
	}
	if got := stats.Counters(StatLocalRateLimit).Get(statRateLimited); got != 2 {
		t.Errorf("rate_limited = %d, want 2", got)
	}
}

// TestConfigErrors: configs the check passes that the filter refuses, and
// what the check refuses.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		cfg     *localratelimitv3.LocalRateLimit
		check   bool // the check refuses it
		wantErr string
	}{
		{name: "enabled without bucket", cfg: &localratelimitv3.LocalRateLimit{StatPrefix: "rl", FilterEnabled: full()}, wantErr: "token_bucket: required"},
		{name: "zero tokens", cfg: &localratelimitv3.LocalRateLimit{StatPrefix: "rl", TokenBucket: bucketOf(0, 1, time.Second)}, check: true},
		{name: "short fill", cfg: &localratelimitv3.LocalRateLimit{StatPrefix: "rl", TokenBucket: bucketOf(1, 1, time.Millisecond)}, wantErr: "token_bucket.fill_interval"},
		{name: "half enabled", cfg: &localratelimitv3.LocalRateLimit{StatPrefix: "rl", TokenBucket: bucketOf(1, 1, time.Second),
			FilterEnabled: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 50}}}, wantErr: "only 0% and 100%"},
		{name: "too many keys", cfg: keyed("remote_address", remoteAddress(), bucketOf(1, 1, time.Second), maxDynamic+1), wantErr: "max_dynamic_descriptors"},
		{name: "mask too long", cfg: keyed("masked_remote_address", maskedAddress(33), bucketOf(1, 1, time.Second), 1), check: true},
		{name: "no stat prefix", cfg: &localratelimitv3.LocalRateLimit{}, check: true},
		{name: "per connection", cfg: &localratelimitv3.LocalRateLimit{StatPrefix: "rl", LocalRateLimitPerDownstreamConnection: true}, check: true},
		{name: "query action", cfg: keyed("q", &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_QueryParameters_{
			QueryParameters: &routev3.RateLimit_Action_QueryParameters{QueryParameterName: "q", DescriptorKey: "q"}}}, bucketOf(1, 1, time.Second), 1), check: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := checker(t).Check(tc.cfg)
			if tc.check {
				if err == nil {
					t.Fatal("check passed, want a violation")
				}
				return
			}
			if err != nil {
				t.Fatalf("check: %v", err)
			}
			_, err = newFilter("rl", tc.cfg, httpfilter.Env{Stats: new(httpfilter.Stats)})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "local_ratelimit: ") {
				t.Errorf("New: %v, want an error with %q", err, tc.wantErr)
			}
			if _, err := newPerRoute(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("NewPerRoute: %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

// TestCountsRefusalsOfDeclaredConsumers: the 429s of a declared consumer
// are counted under <kind>/<name> (consumer_rate_limited); those of a
// caller that is no declared consumer (a JWT subject no provider
// declares, an unauthenticated client) are not, and requests that pass
// count nothing there.
func TestCountsRefusalsOfDeclaredConsumers(t *testing.T) {
	t.Parallel()
	stats := new(httpfilter.Stats)
	cfg := &localratelimitv3.LocalRateLimit{StatPrefix: "rl", FilterEnabled: full(), FilterEnforced: full(),
		TokenBucket: bucketOf(1, 1, time.Hour)}
	h := testHandler(t, cfg, stats)
	serve := func(a *httpfilter.Auth) int {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if a != nil {
			r = r.WithContext(httpfilter.WithAuth(r.Context(), a))
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r, nil)
		return w.Code
	}
	acme := &httpfilter.Auth{Kind: httpfilter.AuthAPIKey, Principal: "acme", Consumer: "acme"}
	if code := serve(acme); code != http.StatusOK {
		t.Fatalf("first request: %d, want 200", code)
	}
	if got := stats.Counters(httpfilter.StatConsumerRateLimited).Snapshot(); len(got) != 0 {
		t.Errorf("after a request that passed: consumer_rate_limited = %v, want none", got)
	}
	for range 2 {
		if code := serve(acme); code != http.StatusTooManyRequests {
			t.Fatalf("acme: %d, want 429", code)
		}
	}
	if code := serve(&httpfilter.Auth{Kind: httpfilter.AuthJWT, Principal: "user-1"}); code != http.StatusTooManyRequests {
		t.Fatalf("undeclared subject: %d, want 429", code)
	}
	if code := serve(nil); code != http.StatusTooManyRequests {
		t.Fatalf("unauthenticated: %d, want 429", code)
	}
	want := map[string]uint64{"apikey/acme": 2}
	if got := stats.Counters(httpfilter.StatConsumerRateLimited).Snapshot(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("consumer_rate_limited = %v, want %v", got, want)
	}
	if got := stats.Counters(StatLocalRateLimit).Get(statRateLimited); got != 4 {
		t.Errorf("rate_limited = %d, want 4 (every refusal)", got)
	}
}
