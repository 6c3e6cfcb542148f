package router

import (
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestGRPCTimeout: on a route with max_stream_duration.grpc_timeout_header_max,
// a gRPC call's grpc-timeout is its timeout (bounded by the max unless it
// is 0); a malformed one, or a route without the setting, keeps the route
// timeout.
func TestGRPCTimeout(t *testing.T) {
	t.Parallel()
	build := func(max *durationpb.Duration) *Route {
		r := route(prefixMatch("/"), "c")
		r.GetRoute().Timeout = durationpb.New(15 * time.Second)
		if max != nil {
			r.GetRoute().MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{GrpcTimeoutHeaderMax: max}
		}
		tbl := mustCompile(t, rcWith(vhost("vh", []string{"*"}, r)))
		return tbl.Match(newRequest("POST", "/", "h"))
	}
	unbounded, bounded, off := build(durationpb.New(0)), build(durationpb.New(time.Second)), build(nil)
	tests := []struct {
		rt      *Route
		header  string
		want    time.Duration
		comment string
	}{
		{unbounded, "250m", 250 * time.Millisecond, "milliseconds"},
		{unbounded, "3S", 3 * time.Second, "seconds, longer than nothing"},
		{unbounded, "1H", time.Hour, "over the route timeout: the header wins"},
		{unbounded, "", 15 * time.Second, "no header: the route timeout"},
		{unbounded, "12x", 15 * time.Second, "bad unit"},
		{unbounded, "123456789S", 15 * time.Second, "more than 8 digits"},
		{bounded, "5S", time.Second, "bounded by the max"},
		{bounded, "100m", 100 * time.Millisecond, "under the max"},
		{off, "100m", 15 * time.Second, "the route does not honour it"},
	}
	for _, tt := range tests {
		r := newRequest("POST", "/", "h", "Content-Type", "application/grpc")
		if tt.header != "" {
			r.Header.Set("grpc-timeout", tt.header)
		}
		if got := tt.rt.TimeoutOf(r); got != tt.want {
			t.Errorf("%s (grpc-timeout %q): timeout %v, want %v", tt.comment, tt.header, got, tt.want)
		}
	}
}
