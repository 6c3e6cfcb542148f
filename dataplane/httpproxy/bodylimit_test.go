package httpproxy

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/filters"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// TestRequestBodyLimits: the buffer filter with the routes' per-route
// configs, as the control plane serves a TrafficPolicy bodyLimits. A body
// over a route's limit gets 413: at once when its Content-Length says so
// (the upstream sees nothing), after the upstream request is aborted when
// it is chunked; a body within the limit, or on a route whose limit is
// disabled, is forwarded whole.
func TestRequestBodyLimits(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	received := map[string][]int{} // path → body lengths read whole
	backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return // the proxy aborted the request
		}
		mu.Lock()
		received[r.URL.Path] = append(received[r.URL.Path], len(body))
		mu.Unlock()
	})
	anyOf := func(m proto.Message) *anypb.Any {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	const limit = 10
	route := func(path string, per *bufferv3.BufferPerRoute) *routev3.Route {
		return &routev3.Route{Match: prefix(path), Action: forwardTo("A"),
			TypedPerFilterConfig: map[string]*anypb.Any{"envoy.filters.http.buffer": anyOf(per)}}
	}
	// A route that retries keeps the body to replay it: an over-limit body
	// is refused while it is read, before any try.
	retried := route("/retried", &bufferv3.BufferPerRoute{Override: &bufferv3.BufferPerRoute_Buffer{Buffer: &bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(limit)}}})
	retried.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2)}
	reg := filters.Default()
	rc := &routev3.RouteConfiguration{Name: "test", VirtualHosts: []*routev3.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{
		route("/limited", &bufferv3.BufferPerRoute{Override: &bufferv3.BufferPerRoute_Buffer{Buffer: &bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(limit)}}}),
		route("/open", &bufferv3.BufferPerRoute{Override: &bufferv3.BufferPerRoute_Disabled{Disabled: true}}),
		retried,
	}}}}
	if err := reg.Check(rc); err != nil {
		t.Fatalf("Check: %v", err)
	}
	tbl, err := router.Compile(rc, reg)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	entries := []*hcmv3.HttpFilter{
		{Name: "envoy.filters.http.buffer", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(&bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(1 << 30)})}},
		{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(&routerv3.Router{})}},
	}
	chain, err := reg.Chain(entries, httpfilter.Env{Stats: reg.NewStats()})
	if err != nil {
		t.Fatalf("Chain: %v", err)
	}
	_, proxy := startProxy(t, &Config{Routes: tbl, Filters: chain,
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(backend))}}, false)

	// chunked hides a reader's length from the client: it sends the body
	// chunked.
	type chunked struct{ io.Reader }
	for _, tc := range []struct {
		name, path string
		body       int
		chunked    bool
		wantStatus int
		wantSeen   []int
	}{
		{name: "length over", path: "/limited/a", body: limit + 1, wantStatus: http.StatusRequestEntityTooLarge},
		{name: "chunked over", path: "/limited/b", body: 64 << 10, chunked: true, wantStatus: http.StatusRequestEntityTooLarge},
		{name: "at the limit", path: "/limited/c", body: limit, wantStatus: http.StatusOK, wantSeen: []int{limit}},
		{name: "chunked at the limit", path: "/limited/d", body: limit, chunked: true, wantStatus: http.StatusOK, wantSeen: []int{limit}},
		{name: "disabled", path: "/open/e", body: 64 << 10, chunked: true, wantStatus: http.StatusOK, wantSeen: []int{64 << 10}},
		{name: "retried route, chunked over", path: "/retried/f", body: limit + 1, chunked: true, wantStatus: http.StatusRequestEntityTooLarge},
		{name: "retried route, within", path: "/retried/g", body: limit, chunked: true, wantStatus: http.StatusOK, wantSeen: []int{limit}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(strings.Repeat("x", tc.body))
			if tc.chunked {
				body = chunked{body}
			}
			req, err := http.NewRequestWithContext(context.Background(), "POST", proxy+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			r := do(t, &http.Client{}, req)
			mu.Lock()
			seen := received[tc.path]
			mu.Unlock()
			if r.status != tc.wantStatus || len(seen) != len(tc.wantSeen) || (len(seen) > 0 && seen[0] != tc.wantSeen[0]) {
				t.Errorf("status %d %q, upstream read %v; want %d, %v", r.status, r.body, seen, tc.wantStatus, tc.wantSeen)
			}
			if tc.wantStatus == http.StatusRequestEntityTooLarge && r.body != "Payload Too Large" {
				t.Errorf("body %q, want %q", r.body, "Payload Too Large")
			}
		})
	}
}
