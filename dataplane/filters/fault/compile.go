package fault

import (
	"errors"
	"fmt"
	"time"

	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/meshgate/meshgate/dataplane/internal/match"
)

// maxDelay bounds fixed_delay: a fault must not hold a request (and its
// connection) longer than a route timeout would.
const maxDelay = 5 * time.Minute

// fraction is a FractionalPercent: numerator out of denominator.
type fraction struct{ numerator, denominator uint64 }

// hits reports whether a request with the uniformly random rnd falls in the
// fraction.
func (f fraction) hits(rnd uint64) bool {
	return f.numerator > 0 && (f.numerator >= f.denominator || rnd%f.denominator < f.numerator)
}

// faults is a compiled HTTPFault: what happens to the requests it applies
// to. The zero value injects nothing.
type faults struct {
	headers []match.Header // all must match

	delay        time.Duration // 0: no delay
	delayPercent fraction

	abort        bool
	httpStatus   int    // the abort's status (200 for a gRPC abort)
	grpcStatus   string // the gRPC abort's grpc-status, "" for HTTP
	abortPercent fraction
}

func compile(cfg *faultv3.HTTPFault) (*faults, error) {
	f := &faults{}
	for i, hm := range cfg.GetHeaders() {
		h, err := match.CompileHeader(hm)
		if err != nil {
			return nil, fmt.Errorf("headers[%d] %q: %w", i, hm.GetName(), err)
		}
		f.headers = append(f.headers, h)
	}
	if d := cfg.GetDelay(); d != nil {
		fd := d.GetFixedDelay()
		if fd == nil {
			return nil, errors.New("delay.fixed_delay: required")
		}
		if err := fd.CheckValid(); err != nil || fd.AsDuration() <= 0 || fd.AsDuration() > maxDelay {
			return nil, fmt.Errorf("delay.fixed_delay: %v must be positive and at most %v", fd, maxDelay)
		}
		f.delay = fd.AsDuration()
		p, err := compileFraction(d.GetPercentage())
		if err != nil {
			return nil, fmt.Errorf("delay.percentage.%w", err)
		}
		f.delayPercent = p
	}
	if a := cfg.GetAbort(); a != nil {
		f.abort = true
		switch t := a.GetErrorType().(type) {
		case *faultv3.FaultAbort_HttpStatus:
			if t.HttpStatus < 200 || t.HttpStatus > 599 {
				return nil, fmt.Errorf("abort.http_status: %d must be 200-599", t.HttpStatus)
			}
			f.httpStatus = int(t.HttpStatus)
		case *faultv3.FaultAbort_GrpcStatus:
			f.httpStatus, f.grpcStatus = 200, fmt.Sprint(t.GrpcStatus)
		default:
			return nil, errors.New("abort: http_status or grpc_status is required")
		}
		p, err := compileFraction(a.GetPercentage())
		if err != nil {
			return nil, fmt.Errorf("abort.percentage.%w", err)
		}
		f.abortPercent = p
	}
	return f, nil
}

// compileFraction reads a percentage: unset is 0% (Envoy's default: the
// message's zero value), and a numerator over the denominator is 100%.
func compileFraction(p *typev3.FractionalPercent) (fraction, error) {
	if p == nil {
		return fraction{}, nil
	}
	var d uint64
	switch p.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		d = 100
	case typev3.FractionalPercent_TEN_THOUSAND:
		d = 10_000
	case typev3.FractionalPercent_MILLION:
		d = 1_000_000
	default:
		return fraction{}, fmt.Errorf("denominator: %v not supported", p.GetDenominator())
	}
	return fraction{numerator: uint64(p.GetNumerator()), denominator: d}, nil
}
