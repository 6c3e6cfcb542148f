package xds

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

// echoMethod is a unary gRPC method that answers with its server's name.
const echoMethod = "/meshgate.test.Echo/Echo"

// startEchoBackend serves echoMethod on a loopback port, answering name, and
// returns its address.
func startEchoBackend(t *testing.T, name string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "meshgate.test.Echo",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Echo", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return wrapperspb.String(name), nil
		}}},
	}, struct{}{})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// proxylessModel is orders (v1) and orders-v2, each with one endpoint
// (v1, v2), and a GRPCRoute on orders: x-version: v2 goes to v2, the rest is
// split 3:1 between v1 and v2.
func proxylessModel(t *testing.T, v1, v2 string) *model.Model {
	t.Helper()
	set, err := policy.LoadFiles(policy.File{Name: "proxyless.yaml", Data: fmt.Appendf(nil, `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: orders}
spec:
  ports: [{port: 9090, protocol: HTTP2}]
  endpoints: [{address: %q}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: orders-v2}
spec:
  ports: [{port: 9090, protocol: HTTP2}]
  endpoints: [{address: %q}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: orders}
spec:
  parentRefs: [{group: "", kind: Service, name: orders, port: 9090}]
  rules:
    - matches: [{headers: [{name: x-version, value: v2}]}]
      backendRefs: [{name: orders-v2, port: 9090}]
    - backendRefs:
        - {name: orders, port: 9090, weight: 3}
        - {name: orders-v2, port: 9090, weight: 1}
`, v1, v2)})
	if err != nil {
		t.Fatal(err)
	}
	return compileSet(t, set)
}

// proxylessChannel is a channel of an unmodified grpc-go xDS client (its
// own resolver, bootstrapped from JSON) to target, with the control plane
// at xdsAddr, as the proxyless client of the service web.
func proxylessChannel(t *testing.T, xdsAddr, target string) *grpc.ClientConn {
	t.Helper()
	return proxylessChannelOf(t, xdsAddr, strings.NewReplacer(":", "-", "/", "-").Replace(t.Name()), target)
}

// proxylessChannelOf is proxylessChannel for the node proxyless~web~<node>:
// each channel has its own xDS client, and stream.
func proxylessChannelOf(t *testing.T, xdsAddr, node, target string) *grpc.ClientConn {
	t.Helper()
	bootstrap := fmt.Appendf(nil, `{
  "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {"id": "proxyless~web~%s", "cluster": "web", "metadata": {"role": "proxyless", "service": "web"}}
}`, xdsAddr, node)
	resolver, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(target, grpc.WithResolvers(resolver), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// echo calls echoMethod with the metadata md (key, value pairs) and returns
// the backend that answered.
func echo(ctx context.Context, conn *grpc.ClientConn, md ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out := new(wrapperspb.StringValue)
	err := conn.Invoke(metadata.AppendToOutgoingContext(ctx, md...), echoMethod, wrapperspb.String("hi"), out)
	return out.GetValue(), err
}

// TestProxylessGRPCClient runs grpc-go's own xDS client (google.golang.org/grpc/xds,
// the resolver and balancers an application gets with target xds:///...)
// against the xDS server: it asks for a Listener named after its target,
// and must accept what it is served (API listener, route configuration,
// clusters, load assignments) and route by it. Plaintext: the mesh has no
// CA here (mTLS through certificate providers is e2e/proxyless_test.go's).
func TestProxylessGRPCClient(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	v1, v2 := startEchoBackend(t, "v1"), startEchoBackend(t, "v2")
	s := New(ctx, nil)
	s.SetModel(ctx, proxylessModel(t, v1, v2))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(serveCtx, lis) }()
	t.Cleanup(func() { stop(); <-done })
	xdsAddr := lis.Addr().String()

	for _, target := range []string{"xds:///orders", "xds:///orders:9090", "xds:///orders.default:9090"} {
		t.Run("header match "+target, func(t *testing.T) {
			t.Parallel()
			conn := proxylessChannel(t, xdsAddr, target)
			for range 5 {
				got, err := echo(ctx, conn, "x-version", "v2")
				if err != nil || got != "v2" {
					t.Fatalf("call with x-version: v2 = %q, %v; want v2", got, err)
				}
			}
		})
	}
	t.Run("weighted split", func(t *testing.T) {
		t.Parallel()
		conn := proxylessChannel(t, xdsAddr, "xds:///orders")
		const calls = 400
		served := map[string]int{}
		for range calls {
			got, err := echo(ctx, conn)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			served[got]++
		}
		// 3:1: v2 gets 100 of 400 on average (sd 8.7); ±40 is 4.6 sd.
		if served["v2"] < 60 || served["v2"] > 140 || served["v1"]+served["v2"] != calls {
			t.Errorf("served = %v, want about 300 v1 and 100 v2", served)
		}
	})
	t.Run("unknown target", func(t *testing.T) {
		t.Parallel()
		conn := proxylessChannel(t, xdsAddr, "xds:///nosuch")
		_, err := echo(ctx, conn)
		// Served a Listener of that name without virtual hosts, the client
		// fails the call at once (no VirtualHost, or its resolver's zero
		// addresses, depending on when the call comes); without it, it
		// would wait for its resource timeout (15 s) and fail with a
		// listener resource error ("has been removed").
		if status.Code(err) != codes.Unavailable || strings.Contains(err.Error(), "listener resource error") {
			t.Errorf("call to an unknown target = %v, want UNAVAILABLE for want of a virtual host", err)
		}
	})
	t.Run("two streams of one node", func(t *testing.T) {
		t.Parallel()
		// Each subscribes to its own Listener: the node is served both,
		// and neither stream's subscription takes the other's away.
		v2only := proxylessChannelOf(t, xdsAddr, "shared", "xds:///orders-v2")
		if got, err := echo(ctx, v2only); err != nil || got != "v2" {
			t.Fatalf("first stream's call = %q, %v; want v2", got, err)
		}
		orders := proxylessChannelOf(t, xdsAddr, "shared", "xds:///orders")
		if got, err := echo(ctx, orders, "x-version", "v2"); err != nil || got != "v2" {
			t.Fatalf("second stream's call = %q, %v; want v2", got, err)
		}
		if got, err := echo(ctx, v2only); err != nil || got != "v2" {
			t.Fatalf("first stream's call after the second subscribed = %q, %v; want v2", got, err)
		}
	})
	t.Run("proxy status", func(t *testing.T) {
		t.Parallel()
		conn := proxylessChannel(t, xdsAddr, "xds:///orders-v2:9090")
		if got, err := echo(ctx, conn); err != nil || got != "v2" {
			t.Fatalf("call = %q, %v; want v2", got, err)
		}
		for _, p := range s.Proxies() {
			if strings.HasSuffix(p.ID, "proxy-status") && (p.Role != "proxyless" || p.Name != "web" || len(p.Nacked) > 0) {
				t.Errorf("proxy status = %+v", p)
			}
		}
	})
}
