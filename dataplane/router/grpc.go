package router

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// compileGRPCTimeout reads max_stream_duration.grpc_timeout_header_max:
// set, a request's grpc-timeout header is its timeout (Envoy's semantics),
// bounded by the value unless it is 0.
func compileGRPCTimeout(rt *Route, ra *routev3.RouteAction) error {
	msd := ra.GetMaxStreamDuration()
	if msd == nil {
		return nil
	}
	max := msd.GetGrpcTimeoutHeaderMax()
	if max == nil {
		return errors.New("max_stream_duration: grpc_timeout_header_max is required (max_stream_duration itself is not supported)")
	}
	if err := max.CheckValid(); err != nil || max.AsDuration() < 0 {
		return fmt.Errorf("max_stream_duration.grpc_timeout_header_max: invalid duration %v", max)
	}
	rt.grpcTimeout, rt.grpcTimeoutMax = true, max.AsDuration()
	return nil
}

// TimeoutOf is the timeout of a forward of r on the route: the route
// timeout, or, on a route that honours grpc-timeout and a gRPC request
// that carries one, that deadline (bounded by grpc_timeout_header_max; 0
// when the header says 0), as Envoy has it.
func (rt *Route) TimeoutOf(r *http.Request) time.Duration {
	if !rt.grpcTimeout {
		return rt.timeout
	}
	v := r.Header["Grpc-Timeout"]
	if len(v) == 0 {
		return rt.timeout
	}
	d, ok := ParseGRPCTimeout(v[0])
	if !ok {
		return rt.timeout
	}
	if rt.grpcTimeoutMax > 0 && (d == 0 || d > rt.grpcTimeoutMax) {
		d = rt.grpcTimeoutMax
	}
	return d
}

// ParseGRPCTimeout parses a grpc-timeout header value: at most 8 digits
// and a unit (H, M, S, m, u, n), as the gRPC spec defines it.
func ParseGRPCTimeout(s string) (time.Duration, bool) {
	if len(s) < 2 || len(s) > 9 {
		return 0, false
	}
	n, err := strconv.ParseUint(s[:len(s)-1], 10, 64)
	if err != nil {
		return 0, false
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	if n > uint64(math.MaxInt64/int64(unit)) {
		return math.MaxInt64, true
	}
	return time.Duration(n) * unit, true
}
