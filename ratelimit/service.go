// Package ratelimit is meshgate's global rate-limit service: it speaks
// Envoy's rate limit service API (envoy.service.ratelimit.v3
// RateLimitService.ShouldRateLimit, the API of Envoy's ratelimit filter)
// and counts requests in fixed windows in a Store shared by every instance
// of the service: Redis (NewRedisStore) in production, memory
// (NewMemoryStore) for meshgate dev.
//
// The service has no configuration of its own: the control plane puts
// each rule's limit in the descriptors the proxies send, as an entry
// ("limit", "<requests>/<unit>") (unit Second, Minute, Hour or Day), next
// to the rule's identity ("rule", "<namespace>/<policy>/<index>") and the
// key's entry (remote_address, header, ...). A descriptor is counted under
// the request's domain and all its entries, in the window of its unit; a
// descriptor without a limit entry is not limited. A request is over the
// limit when one of its descriptors is (overall_code OVER_LIMIT), and each
// descriptor's status has its limit, what remains of it and the time until
// its window ends (Envoy's draft-03 X-RateLimit headers are made from
// them).
//
// When the store fails, ShouldRateLimit fails (gRPC Unavailable): the
// proxy's failure mode decides (failure_mode_deny).
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// LimitKey is the descriptor entry key that carries a rule's limit, as
// "<requests>/<unit>".
const LimitKey = "limit"

// Bounds of a request: what a proxy sends is small; anything larger is
// refused rather than counted.
const (
	maxDescriptors  = 64
	maxEntries      = 16
	maxEntryBytes   = 1024
	maxHitsAddend   = 1 << 20
	storeKeyVersion = "mgrl1"
)

// Store counts hits in fixed windows.
type Store interface {
	// Add adds hits to the counter key, which ends at expires (created
	// then, zero), and returns its count after.
	Add(ctx context.Context, key string, hits uint64, expires time.Time) (uint64, error)
}

// Service is the RateLimitService server.
type Service struct {
	rlsv3.UnimplementedRateLimitServiceServer
	store Store
	log   *slog.Logger
	// now is the clock (time.Now; tests fix it).
	now func() time.Time
}

// NewService returns the service counting in store.
func NewService(store Store, log *slog.Logger) *Service {
	return &Service{store: store, log: log, now: time.Now}
}

// limit is a descriptor's limit.
type limit struct {
	requests uint32
	unit     rlsv3.RateLimitResponse_RateLimit_Unit
	window   time.Duration
}

// ParseLimit reads a limit entry's value, "<requests>/<unit>".
func ParseLimit(v string) (requests uint32, unit string, err error) {
	n, u, ok := strings.Cut(v, "/")
	if !ok {
		return 0, "", fmt.Errorf("limit %q: want <requests>/<unit>", v)
	}
	r, err := strconv.ParseUint(n, 10, 32)
	if err != nil || r == 0 {
		return 0, "", fmt.Errorf("limit %q: requests: want a positive number", v)
	}
	if _, ok := units[u]; !ok {
		return 0, "", fmt.Errorf("limit %q: unit: want Second, Minute, Hour or Day", v)
	}
	return uint32(r), u, nil
}

var units = map[string]struct {
	unit   rlsv3.RateLimitResponse_RateLimit_Unit
	window time.Duration
}{
	"Second": {rlsv3.RateLimitResponse_RateLimit_SECOND, time.Second},
	"Minute": {rlsv3.RateLimitResponse_RateLimit_MINUTE, time.Minute},
	"Hour":   {rlsv3.RateLimitResponse_RateLimit_HOUR, time.Hour},
	"Day":    {rlsv3.RateLimitResponse_RateLimit_DAY, 24 * time.Hour},
}

// descriptorLimit is the limit a descriptor carries, nil when none.
func descriptorLimit(d *ratelimitcommonv3.RateLimitDescriptor) (*limit, error) {
	for _, e := range d.GetEntries() {
		if e.GetKey() != LimitKey {
			continue
		}
		r, u, err := ParseLimit(e.GetValue())
		if err != nil {
			return nil, err
		}
		return &limit{requests: r, unit: units[u].unit, window: units[u].window}, nil
	}
	return nil, nil
}

// ShouldRateLimit counts the request's hits in the window of each of its
// descriptors that has a limit.
func (s *Service) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	if err := checkRequest(req); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	hits := uint64(max(req.GetHitsAddend(), 1))
	now := s.now()
	resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}
	for i, d := range req.GetDescriptors() {
		lim, err := descriptorLimit(d)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "descriptors[%d]: %v", i, err)
		}
		if lim == nil {
			resp.Statuses = append(resp.Statuses, &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK})
			continue
		}
		start := now.Truncate(lim.window)
		end := start.Add(lim.window)
		count, err := s.store.Add(ctx, storeKey(req.GetDomain(), d, start), hits, end)
		if err != nil {
			s.log.Warn("rate limit store", "error", err)
			return nil, status.Errorf(codes.Unavailable, "store: %v", err)
		}
		st := &rlsv3.RateLimitResponse_DescriptorStatus{
			Code:               rlsv3.RateLimitResponse_OK,
			CurrentLimit:       &rlsv3.RateLimitResponse_RateLimit{RequestsPerUnit: lim.requests, Unit: lim.unit},
			DurationUntilReset: durationpb.New(end.Sub(now)),
		}
		if count > uint64(lim.requests) {
			st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
			resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
		} else {
			st.LimitRemaining = lim.requests - uint32(count)
		}
		resp.Statuses = append(resp.Statuses, st)
	}
	return resp, nil
}

func checkRequest(req *rlsv3.RateLimitRequest) error {
	if req.GetDomain() == "" {
		return errors.New("domain: required")
	}
	if len(req.GetDescriptors()) > maxDescriptors {
		return fmt.Errorf("descriptors: %d: at most %d", len(req.GetDescriptors()), maxDescriptors)
	}
	if req.GetHitsAddend() > maxHitsAddend {
		return fmt.Errorf("hits_addend: %d: at most %d", req.GetHitsAddend(), maxHitsAddend)
	}
	for i, d := range req.GetDescriptors() {
		if n := len(d.GetEntries()); n == 0 || n > maxEntries {
			return fmt.Errorf("descriptors[%d].entries: %d: want 1 to %d", i, n, maxEntries)
		}
		for j, e := range d.GetEntries() {
			if len(e.GetKey())+len(e.GetValue()) > maxEntryBytes {
				return fmt.Errorf("descriptors[%d].entries[%d]: longer than %d bytes", i, j, maxEntryBytes)
			}
		}
	}
	return nil
}

// storeKey is the counter of a descriptor in the window starting at start:
// the domain and the entries, each length-prefixed (no value can forge
// another's key), and the window.
func storeKey(domain string, d *ratelimitcommonv3.RateLimitDescriptor, start time.Time) string {
	var b strings.Builder
	b.WriteString(storeKeyVersion)
	field := func(s string) {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	field(domain)
	for _, e := range d.GetEntries() {
		field(e.GetKey())
		field(e.GetValue())
	}
	b.WriteByte(':')
	b.WriteString(strconv.FormatInt(start.Unix(), 10))
	return b.String()
}
