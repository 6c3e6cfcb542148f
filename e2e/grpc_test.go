package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	bin "encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// grpcRouteService is the gRPC service of TestGRPC's backends, without a
// .proto: its messages are google.protobuf.StringValue.
const grpcRouteService = "meshgate.test.Echo"

// startGRPCRouteBackend starts a gRPC server (google.golang.org/grpc, cleartext
// HTTP/2) named name at addr, serving grpcRouteService:
//   - Echo (unary): "<name>: <request>", with trailer x-served-by: name;
//   - Count (server streaming): "<name> 1" ... "<name> N" for request "N";
//   - Chat (bidi streaming): each message back as "<name>: <message>";
//   - Sum (client streaming): the number of messages received.
func startGRPCRouteBackend(t *testing.T, name, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("gRPC backend %s: %v", name, err)
	}
	srv := grpc.NewServer()
	unary := func(handle func(ctx context.Context, in string) (string, error)) grpc.MethodHandler {
		return func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			out, err := handle(ctx, in.GetValue())
			if err != nil {
				return nil, err
			}
			return wrapperspb.String(out), nil
		}
	}
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: grpcRouteService,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "Echo", Handler: unary(func(ctx context.Context, in string) (string, error) {
				_ = grpc.SetTrailer(ctx, metadata.Pairs("x-served-by", name))
				return name + ": " + in, nil
			})},
		},
		Streams: []grpc.StreamDesc{
			{StreamName: "Count", ServerStreams: true, Handler: func(_ any, stream grpc.ServerStream) error {
				in := new(wrapperspb.StringValue)
				if err := stream.RecvMsg(in); err != nil {
					return err
				}
				n, _ := strconv.Atoi(in.GetValue())
				for i := 1; i <= n; i++ {
					if err := stream.SendMsg(wrapperspb.String(fmt.Sprintf("%s %d", name, i))); err != nil {
						return err
					}
				}
				stream.SetTrailer(metadata.Pairs("x-count", strconv.Itoa(n)))
				return nil
			}},
			{StreamName: "Chat", ServerStreams: true, ClientStreams: true, Handler: func(_ any, stream grpc.ServerStream) error {
				for {
					in := new(wrapperspb.StringValue)
					if err := stream.RecvMsg(in); errors.Is(err, io.EOF) {
						return nil
					} else if err != nil {
						return err
					}
					if err := stream.SendMsg(wrapperspb.String(name + ": " + in.GetValue())); err != nil {
						return err
					}
				}
			}},
			{StreamName: "Sum", ClientStreams: true, Handler: func(_ any, stream grpc.ServerStream) error {
				n := 0
				for {
					if err := stream.RecvMsg(new(wrapperspb.StringValue)); errors.Is(err, io.EOF) {
						return stream.SendMsg(wrapperspb.String(fmt.Sprintf("%s: %d", name, n)))
					} else if err != nil {
						return err
					}
					n++
				}
			}},
		},
	}, struct{}{})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
}

// startSlowH2C starts an h2c server at addr that answers nothing until
// the test ends, whatever a call's grpc-timeout says (a grpc-go server
// resets a call at its deadline itself): a deadline that expires is the
// proxy's.
func startSlowH2C(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protocols, ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		<-done
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { close(done); srv.Close() })
}

// grpcConn is a client connection to addr (cleartext HTTP/2) that calls
// with :authority authority.
func grpcConn(t *testing.T, addr, authority string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(authority))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// grpcUnary calls method with in and returns the answer and its trailer.
func grpcUnary(conn *grpc.ClientConn, method, in string, md ...string) (string, metadata.MD, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	out := new(wrapperspb.StringValue)
	var trailer metadata.MD
	err := conn.Invoke(ctx, "/"+grpcRouteService+"/"+method, wrapperspb.String(in), out, grpc.Trailer(&trailer))
	return out.GetValue(), trailer, err
}

// grpcCount calls Count (server streaming) for n messages.
func grpcCount(conn *grpc.ClientConn, n int) ([]string, metadata.MD, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/"+grpcRouteService+"/Count")
	if err != nil {
		return nil, nil, err
	}
	if err := stream.SendMsg(wrapperspb.String(strconv.Itoa(n))); err != nil {
		return nil, nil, err
	}
	if err := stream.CloseSend(); err != nil {
		return nil, nil, err
	}
	var got []string
	for {
		out := new(wrapperspb.StringValue)
		if err := stream.RecvMsg(out); errors.Is(err, io.EOF) {
			return got, stream.Trailer(), nil
		} else if err != nil {
			return got, nil, err
		}
		got = append(got, out.GetValue())
	}
}

// grpcChat sends msgs on Chat (bidi streaming), each answered before the
// next is sent (so nothing is buffered whole on the way), and returns the
// answers.
func grpcChat(conn *grpc.ClientConn, msgs ...string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/"+grpcRouteService+"/Chat")
	if err != nil {
		return nil, err
	}
	var got []string
	for _, m := range msgs {
		if err := stream.SendMsg(wrapperspb.String(m)); err != nil {
			return got, err
		}
		out := new(wrapperspb.StringValue)
		if err := stream.RecvMsg(out); err != nil {
			return got, err
		}
		got = append(got, out.GetValue())
	}
	if err := stream.CloseSend(); err != nil {
		return got, err
	}
	if err := stream.RecvMsg(new(wrapperspb.StringValue)); !errors.Is(err, io.EOF) {
		return got, fmt.Errorf("end of the stream: %v, want EOF", err)
	}
	return got, nil
}

// grpcSum sends n messages on Sum (client streaming) and returns the answer.
func grpcSum(conn *grpc.ClientConn, n int) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, "/"+grpcRouteService+"/Sum")
	if err != nil {
		return "", err
	}
	for i := range n {
		if err := stream.SendMsg(wrapperspb.String(strconv.Itoa(i))); err != nil {
			return "", err
		}
	}
	if err := stream.CloseSend(); err != nil {
		return "", err
	}
	out := new(wrapperspb.StringValue)
	if err := stream.RecvMsg(out); err != nil {
		return "", err
	}
	return out.GetValue(), nil
}

// grpcGateway is the gateway edge with an HTTP listener (h2c) and an
// HTTPS one (h2 by ALPN) for grpc.example.com.
const grpcGateway = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners:
    - {name: http, protocol: HTTP, port: ${gw.port}}
    - name: https
      protocol: HTTPS
      port: ${gws.port}
      hostname: grpc.example.com
      tls: {certificateRefs: [{name: grpc-cert}]}
`

const grpcPolicy = `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: grpc-v1}
spec:
  ports: [{port: 80, appProtocol: grpc}]
  endpoints: [{address: "${grpc-v1}"}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: grpc-v2}
spec:
  ports: [{port: 80, appProtocol: kubernetes.io/h2c}]
  endpoints: [{address: "${grpc-v2}"}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: grpc-slow}
spec:
  ports: [{port: 80, appProtocol: grpc}]
  endpoints: [{address: "${grpc-slow}"}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: grpc-none}
spec:
  ports: [{port: 80, appProtocol: grpc}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: grpcmesh}
spec:
  ports: [{port: 80, appProtocol: grpc}]
  endpoints: [{address: "${grpcmesh-in}", sidecar: true}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: caller}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${caller-in}", sidecar: true}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo}
spec:
  parentRefs: [{name: edge}]
  hostnames: [grpc.example.com]
  rules:
    - matches: [{method: {service: meshgate.test.Echo, method: Echo}, headers: [{name: x-split, value: "yes"}]}]
      backendRefs: [{name: grpc-v1, port: 80, weight: 1}, {name: grpc-v2, port: 80, weight: 3}]
    - matches: [{method: {service: meshgate.test.Echo, method: Echo}}]
      backendRefs: [{name: grpc-v1, port: 80}]
    - matches: [{method: {method: Slow}}]
      filters:
        - type: ResponseHeaderModifier
          responseHeaderModifier: {add: [{name: x-route, value: slow}]}
      backendRefs: [{name: grpc-slow, port: 80}]
    - matches: [{method: {type: RegularExpression, service: "meshgate\\.test\\.E.*", method: "Count|Chat|Sum"}}]
      backendRefs: [{name: grpc-v2, port: 80}]
    - matches: [{method: {method: Unavailable}}]
      backendRefs: [{name: grpc-none, port: 80}]
    - matches: [{method: {method: Secret}}]
      backendRefs: [{name: grpc-v1, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: mesh}
spec:
  parentRefs: [{kind: Service, name: grpcmesh}]
  rules:
    - matches: [{method: {service: meshgate.test.Echo}}]
      backendRefs: [{name: grpcmesh, port: 80}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: no-secrets}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  rules:
    - name: no-secret
      action: DENY
      to: [{paths: ["/meshgate.test.Echo/Secret"]}]
`

// TestGRPC: gRPC calls (google.golang.org/grpc) through the gateway (h2c,
// h2 over TLS, and gRPC-Web), routed by GRPCRoute (method and header matches,
// weights), and sidecar to sidecar (mTLS), in every streaming mode with
// their trailers; the
// proxy's own errors arrive as gRPC statuses (UNAVAILABLE without an
// endpoint, PERMISSION_DENIED from a SecurityPolicy, UNIMPLEMENTED without
// a route, DEADLINE_EXCEEDED when grpc-timeout runs out).
func TestGRPC(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	cert := newTestCertificate(t, "grpc", "grpc.example.com")
	c.policy("grpc.yaml", yamlDocs(grpcGateway, tlsSecret("grpc-cert", cert), grpcPolicy))
	startGRPCRouteBackend(t, "v1", c.addr("grpc-v1"))
	startGRPCRouteBackend(t, "v2", c.addr("grpc-v2"))
	startGRPCRouteBackend(t, "mesh", c.addr("grpcmesh-app"))
	startSlowH2C(t, c.addr("grpc-slow"))
	c.startControlPlane()
	c.sidecar("grpcmesh", c.addr("grpcmesh-app"), c.addr("grpcmesh-in"), c.addr("grpcmesh-out"))
	c.sidecar("caller", c.addr("caller-app"), c.addr("caller-in"), c.addr("caller-out"))
	c.gateway("edge")
	gw := grpcConn(t, c.addr("gw"), "grpc.example.com")
	eventually(t, 15*time.Second, "a gRPC call through the gateway", func() error {
		out, _, err := grpcUnary(gw, "Echo", "hi")
		if err == nil && out != "v1: hi" {
			return fmt.Errorf("answer %q, want v1: hi", out)
		}
		return err
	})

	t.Run("unary with its trailer, by method", func(t *testing.T) {
		out, trailer, err := grpcUnary(gw, "Echo", "hello")
		if err != nil || out != "v1: hello" || strings.Join(trailer.Get("x-served-by"), ",") != "v1" {
			t.Fatalf("Echo: %q, trailer %v, %v; want v1: hello with x-served-by v1", out, trailer, err)
		}
	})
	t.Run("server streaming", func(t *testing.T) {
		got, trailer, err := grpcCount(gw, 50)
		if err != nil || len(got) != 50 || got[49] != "v2 50" || strings.Join(trailer.Get("x-count"), ",") != "50" {
			t.Fatalf("Count: %d messages (last %q), trailer %v, %v; want 50 from v2, x-count 50", len(got), last(got), trailer, err)
		}
	})
	t.Run("bidi streaming", func(t *testing.T) {
		got, err := grpcChat(gw, "one", "two", "three")
		if err != nil || strings.Join(got, "|") != "v2: one|v2: two|v2: three" {
			t.Fatalf("Chat: %q, %v", got, err)
		}
	})
	t.Run("client streaming", func(t *testing.T) {
		got, err := grpcSum(gw, 20)
		if err != nil || got != "v2: 20" {
			t.Fatalf("Sum: %q, %v; want v2: 20", got, err)
		}
	})
	t.Run("over TLS (h2 by ALPN)", func(t *testing.T) {
		conn, err := grpc.NewClient("passthrough:///"+c.addr("gws"),
			grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: cert.pool, ServerName: "grpc.example.com"})))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		out, trailer, err := grpcUnary(conn, "Echo", "secure")
		if err != nil || out != "v1: secure" || strings.Join(trailer.Get("x-served-by"), ",") != "v1" {
			t.Fatalf("Echo over TLS: %q, trailer %v, %v", out, trailer, err)
		}
		got, err := grpcChat(conn, "x", "y")
		if err != nil || strings.Join(got, "|") != "v2: x|v2: y" {
			t.Fatalf("Chat over TLS: %q, %v", got, err)
		}
	})
	t.Run("gRPC-Web to a GRPCRoute", func(t *testing.T) {
		msg, err := proto.Marshal(wrapperspb.String("web"))
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequest(http.MethodPost, "http://"+c.addr("gw")+"/"+grpcRouteService+"/Echo", bytes.NewReader(grpcWebFrame(0, msg)))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "grpc.example.com"
		req.Header.Set("Content-Type", "application/grpc-web+proto")
		resp, err := client.Do(req) // HTTP/1.1
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || len(body) < 5 || body[0] != 0 {
			t.Fatalf("status %d, body %q, %v; want 200 and a message frame", resp.StatusCode, body, err)
		}
		n := int(bin.BigEndian.Uint32(body[1:5]))
		out := new(wrapperspb.StringValue)
		if len(body) < 5+n || proto.Unmarshal(body[5:5+n], out) != nil || out.GetValue() != "v1: web" || !strings.Contains(string(body[5+n:]), "grpc-status:0") {
			t.Fatalf("answer %q, want the message v1: web and grpc-status 0 in the trailers frame", body)
		}
	})
	t.Run("weights, by header match", func(t *testing.T) {
		seen := map[string]int{}
		for range 100 {
			_, trailer, err := grpcUnary(gw, "Echo", "w", "x-split", "yes")
			if err != nil {
				t.Fatal(err)
			}
			seen[strings.Join(trailer.Get("x-served-by"), ",")]++
		}
		// Weights 1:3: both serve, v2 about three times as often (the
		// chance that v2 serves fewer than v1 in 100 calls is below 1e-6).
		if seen["v1"] == 0 || seen["v2"] <= seen["v1"] || seen["v1"]+seen["v2"] != 100 {
			t.Fatalf("served by %v, want v1 and v2 about 1:3", seen)
		}
	})
	t.Run("local errors as gRPC statuses", func(t *testing.T) {
		// The proxy's answer is the gRPC status itself, with its message
		// (not an HTTP error status the client maps to a code).
		tests := []struct {
			method string
			conn   *grpc.ClientConn
			want   codes.Code
			msg    string
		}{
			{"Unavailable", gw, codes.Unavailable, "no healthy upstream"},
			{"Secret", gw, codes.PermissionDenied, "access denied"},
			{"Echo", grpcConn(t, c.addr("gw"), "no-route.example.com"), codes.Unimplemented, "no route"},
		}
		for _, tt := range tests {
			_, _, err := grpcUnary(tt.conn, tt.method, "x")
			if st, _ := status.FromError(err); st.Code() != tt.want || st.Message() != tt.msg {
				t.Errorf("%s: %v, want %s %q", tt.method, err, tt.want, tt.msg)
			}
		}
	})
	t.Run("grpc-timeout is the call's deadline", func(t *testing.T) {
		// A raw HTTP/2 call with grpc-timeout and no deadline of the
		// client's own: the DEADLINE_EXCEEDED is the gateway's.
		var protocols http.Protocols
		protocols.SetUnencryptedHTTP2(true)
		client := &http.Client{Transport: &http.Transport{Protocols: &protocols}, Timeout: 10 * time.Second}
		req, err := http.NewRequest(http.MethodPost, "http://"+c.addr("gw")+"/"+grpcRouteService+"/Slow", strings.NewReader("\x00\x00\x00\x00\x00"))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "grpc.example.com"
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		req.Header.Set("Grpc-Timeout", "300m")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		code := resp.Header.Get("Grpc-Status") + resp.Trailer.Get("Grpc-Status")
		if resp.StatusCode != http.StatusOK || code != strconv.Itoa(int(codes.DeadlineExceeded)) || resp.Header.Get("X-Route") != "slow" {
			t.Fatalf("status %d, grpc-status %q, x-route %q; want 200, 4 (DEADLINE_EXCEEDED), slow", resp.StatusCode, code, resp.Header.Get("X-Route"))
		}
	})
	t.Run("sidecar to sidecar", func(t *testing.T) {
		mesh := grpcConn(t, c.addr("caller-out"), "grpcmesh")
		eventually(t, 15*time.Second, "a gRPC call sidecar to sidecar", func() error {
			out, trailer, err := grpcUnary(mesh, "Echo", "hi")
			if err == nil && (out != "mesh: hi" || strings.Join(trailer.Get("x-served-by"), ",") != "mesh") {
				return fmt.Errorf("answer %q trailer %v, want mesh: hi", out, trailer)
			}
			return err
		})
		got, trailer, err := grpcCount(mesh, 20)
		if err != nil || len(got) != 20 || got[19] != "mesh 20" || strings.Join(trailer.Get("x-count"), ",") != "20" {
			t.Errorf("Count: %d messages, trailer %v, %v", len(got), trailer, err)
		}
		chat, err := grpcChat(mesh, "a", "b")
		if err != nil || strings.Join(chat, "|") != "mesh: a|mesh: b" {
			t.Errorf("Chat: %q, %v", chat, err)
		}
		// The grpcmesh sidecar's inbound listener takes mTLS only: the
		// calls above came over mTLS.
		_, _, err = grpcUnary(grpcConn(t, c.addr("grpcmesh-in"), "grpcmesh"), "Echo", "plain")
		if status.Code(err) != codes.Unavailable {
			t.Errorf("plaintext to the inbound listener: %v, want a failed connection (UNAVAILABLE)", err)
		}
	})
}

func last(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}
