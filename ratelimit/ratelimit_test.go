package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// startRedis starts Debian's redis-server on a free loopback port, without
// persistence, stopped at the end of the test; it returns its address.
func startRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if testing.Short() {
			t.Skip("redis-server not installed")
		}
		t.Fatalf("redis-server: %v (apt-get install redis-server)", err)
	}
	for attempt := 0; ; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		_ = l.Close()
		_, port, _ := net.SplitHostPort(addr)
		cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		store := NewRedisStore(addr, time.Second)
		deadline := time.Now().Add(20 * time.Second)
		for store.Ping(context.Background()) != nil && time.Now().Before(deadline) {
			select {
			case <-exited:
				deadline = time.Time{} // the port was taken: try another
			case <-time.After(20 * time.Millisecond):
			}
		}
		pingErr := store.Ping(context.Background())
		_ = store.Close()
		if pingErr == nil {
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				<-exited
			})
			return addr
		}
		_ = cmd.Process.Kill()
		<-exited
		if attempt == 3 {
			t.Fatalf("redis-server on %s: %v", addr, pingErr)
		}
	}
}

func descriptor(entries ...string) *ratelimitcommonv3.RateLimitDescriptor {
	d := &ratelimitcommonv3.RateLimitDescriptor{}
	for i := 0; i+1 < len(entries); i += 2 {
		d.Entries = append(d.Entries, &ratelimitcommonv3.RateLimitDescriptor_Entry{Key: entries[i], Value: entries[i+1]})
	}
	return d
}

func request(ds ...*ratelimitcommonv3.RateLimitDescriptor) *rlsv3.RateLimitRequest {
	return &rlsv3.RateLimitRequest{Domain: "meshgate", Descriptors: ds}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// stores are the stores under test: memory, and Redis when short is false.
func stores(t *testing.T) map[string]func(t *testing.T) Store {
	return map[string]func(t *testing.T) Store{
		"memory": func(*testing.T) Store { return NewMemoryStore(1000) },
		"redis": func(t *testing.T) Store {
			s := NewRedisStore(startRedis(t), 5*time.Second)
			t.Cleanup(func() { _ = s.Close() })
			return s
		},
	}
}

// TestCounts: 5 requests a minute per client are 5 OK (remaining 4 to 0),
// then OVER_LIMIT; another client and a descriptor without a limit are not
// affected; the next minute starts afresh; the window's end is reported.
func TestCounts(t *testing.T) {
	t.Parallel()
	for name, mk := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			svc := NewService(mk(t), quiet)
			// Near the real clock: Redis expires the counters by its own.
			now := time.Now().Truncate(time.Minute).Add(10 * time.Second)
			svc.now = func() time.Time { return now }
			limited := func(client string) *ratelimitcommonv3.RateLimitDescriptor {
				return descriptor("rule", "default/tp/0", LimitKey, "5/Minute", "remote_address", client)
			}
			ctx := context.Background()
			for i := range 5 {
				resp, err := svc.ShouldRateLimit(ctx, request(limited("a"), descriptor("generic_key", "x")))
				if err != nil {
					t.Fatal(err)
				}
				st := resp.GetStatuses()[0]
				if resp.GetOverallCode() != rlsv3.RateLimitResponse_OK || st.GetLimitRemaining() != uint32(4-i) ||
					st.GetCurrentLimit().GetRequestsPerUnit() != 5 || st.GetCurrentLimit().GetUnit() != rlsv3.RateLimitResponse_RateLimit_MINUTE ||
					st.GetDurationUntilReset().AsDuration() != 50*time.Second {
					t.Fatalf("request %d: %v", i, resp)
				}
			}
			resp, err := svc.ShouldRateLimit(ctx, request(limited("a"), descriptor("generic_key", "x")))
			if err != nil || resp.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT ||
				resp.GetStatuses()[0].GetCode() != rlsv3.RateLimitResponse_OVER_LIMIT || resp.GetStatuses()[1].GetCode() != rlsv3.RateLimitResponse_OK {
				t.Fatalf("6th: %v %v, want OVER_LIMIT for the limited descriptor only", resp, err)
			}
			if resp, err := svc.ShouldRateLimit(ctx, request(limited("b"))); err != nil || resp.GetOverallCode() != rlsv3.RateLimitResponse_OK {
				t.Fatalf("another client: %v %v, want OK", resp, err)
			}
			now = now.Add(time.Minute)
			if resp, err := svc.ShouldRateLimit(ctx, request(limited("a"))); err != nil || resp.GetOverallCode() != rlsv3.RateLimitResponse_OK {
				t.Fatalf("next minute: %v %v, want OK", resp, err)
			}
		})
	}
}

// TestSharedAcrossInstances: three instances of the service over one
// Redis, taking turns, let exactly the limit through in a window.
func TestSharedAcrossInstances(t *testing.T) {
	t.Parallel()
	addr := startRedis(t)
	now := time.Now().Truncate(time.Hour)
	var svcs []*Service
	for range 3 {
		s := NewRedisStore(addr, 5*time.Second)
		t.Cleanup(func() { _ = s.Close() })
		svc := NewService(s, quiet)
		svc.now = func() time.Time { return now }
		svcs = append(svcs, svc)
	}
	ok := 0
	for i := range 100 {
		resp, err := svcs[i%3].ShouldRateLimit(context.Background(), request(descriptor("rule", "r", LimitKey, "40/Hour")))
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetOverallCode() == rlsv3.RateLimitResponse_OK {
			ok++
		}
	}
	if ok != 40 {
		t.Errorf("%d of 100 requests OK over three instances, want 40", ok)
	}
}

// TestStoreDown: when Redis does not answer, ShouldRateLimit fails with
// Unavailable (the proxy's failure mode decides).
func TestStoreDown(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	s := NewRedisStore(addr, time.Second)
	defer s.Close()
	_, err = NewService(s, quiet).ShouldRateLimit(context.Background(), request(descriptor(LimitKey, "1/Second")))
	if status.Code(err) != codes.Unavailable {
		t.Errorf("Redis down: %v, want Unavailable", err)
	}
}

// TestBadRequests: requests out of bounds or with a malformed limit are
// InvalidArgument, counted nowhere.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	many := make([]*ratelimitcommonv3.RateLimitDescriptor, maxDescriptors+1)
	for i := range many {
		many[i] = descriptor("k", strconv.Itoa(i))
	}
	long := string(make([]byte, maxEntryBytes+1))
	for _, tc := range []struct {
		name string
		req  *rlsv3.RateLimitRequest
	}{
		{"no domain", &rlsv3.RateLimitRequest{Descriptors: []*ratelimitcommonv3.RateLimitDescriptor{descriptor("k", "v")}}},
		{"too many descriptors", request(many...)},
		{"empty descriptor", request(descriptor())},
		{"long entry", request(descriptor("k", long))},
		{"bad limit", request(descriptor(LimitKey, "ten/Second"))},
		{"bad unit", request(descriptor(LimitKey, "10/Week"))},
		{"zero limit", request(descriptor(LimitKey, "0/Second"))},
	} {
		_, err := NewService(NewMemoryStore(10), quiet).ShouldRateLimit(context.Background(), tc.req)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", tc.name, err)
		}
	}
}

// TestMemoryStoreBounded: a full memory store drops expired counters, and
// refuses a new one when none has expired.
func TestMemoryStoreBounded(t *testing.T) {
	t.Parallel()
	s := NewMemoryStore(3)
	now := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	ctx := context.Background()
	for i := range 3 {
		if _, err := s.Add(ctx, fmt.Sprint(i), 1, now.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Add(ctx, "new", 1, now.Add(time.Second)); !errors.Is(err, errMemoryFull) {
		t.Fatalf("full: %v, want errMemoryFull", err)
	}
	now = now.Add(2 * time.Second)
	if n, err := s.Add(ctx, "new", 1, now.Add(time.Second)); err != nil || n != 1 || len(s.counters) != 1 {
		t.Fatalf("after expiry: %d %v, %d counters; want 1, nil, 1", n, err, len(s.counters))
	}
}
