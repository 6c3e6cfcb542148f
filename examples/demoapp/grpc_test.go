package demoapp

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestServeGRPCAndHTTP: one port answers gRPC (the greeter and the health
// service, over cleartext HTTP/2) and the HTTP API alike.
func TestServeGRPCAndHTTP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, Options{Name: "greeter", Version: "v1"}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	callCtx, callCancel := context.WithTimeout(t.Context(), time.Minute)
	defer callCancel()
	for _, tc := range []struct{ in, want string }{
		{"web", "hello web from greeter v1"},
		{"", "hello there from greeter v1"},
	} {
		out := new(wrapperspb.StringValue)
		if err := conn.Invoke(callCtx, GreeterHello, wrapperspb.String(tc.in), out); err != nil {
			t.Fatalf("Hello(%q): %v", tc.in, err)
		}
		if out.GetValue() != tc.want {
			t.Errorf("Hello(%q) = %q, want %q", tc.in, out.GetValue(), tc.want)
		}
	}
	h, err := healthpb.NewHealthClient(conn).Check(callCtx, &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health Check = %v, %v; want SERVING", h, err)
	}

	req, _ := http.NewRequestWithContext(callCtx, http.MethodGet, "http://"+ln.Addr().String()+"/x", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var reply Reply
	if err := json.Unmarshal(body, &reply); err != nil || reply.Service != "greeter" || reply.Path != "/x" {
		t.Errorf("GET /x = %s (%v), want the JSON reply of greeter", body, err)
	}
}
