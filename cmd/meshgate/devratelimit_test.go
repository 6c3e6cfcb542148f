package main

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshgate/meshgate/policy"
)

// TestDevRateLimitService: meshgate dev runs an in-memory rate-limit
// service at a loopback rateLimitService address (and counts there), none
// for another address or without one.
func TestDevRateLimitService(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	mesh := func(address string) *policy.Set {
		return &policy.Set{MeshConfig: &policy.MeshConfig{Spec: policy.MeshConfigSpec{RateLimitService: &policy.RateLimitService{Address: address}}}}
	}
	quiet := slog.New(slog.DiscardHandler)
	if _, ok := devRateLimitService(&policy.Set{}, quiet); ok {
		t.Error("a service without a MeshConfig")
	}
	if _, ok := devRateLimitService(mesh("10.1.2.3:8089"), quiet); ok {
		t.Error("a service at a non-loopback address")
	}
	task, ok := devRateLimitService(mesh(addr), quiet)
	if !ok {
		t.Fatal("no service at a loopback address")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- task.run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := rlsv3.NewRateLimitServiceClient(conn)
	req := &rlsv3.RateLimitRequest{Domain: "meshgate", Descriptors: []*ratelimitcommonv3.RateLimitDescriptor{{
		Entries: []*ratelimitcommonv3.RateLimitDescriptor_Entry{{Key: "limit", Value: "1/Hour"}}}}}
	// WaitForReady: the first call waits for the service to listen.
	callCtx, cancelCalls := context.WithTimeout(ctx, 30*time.Second)
	defer cancelCalls()
	var codes []rlsv3.RateLimitResponse_Code
	for range 2 {
		resp, err := client.ShouldRateLimit(callCtx, req, grpc.WaitForReady(true))
		if err != nil {
			t.Fatal(err)
		}
		codes = append(codes, resp.GetOverallCode())
	}
	if codes[0] != rlsv3.RateLimitResponse_OK || codes[1] != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Errorf("codes %v, want OK then OVER_LIMIT (1 an hour)", codes)
	}
}
