package conformance

// gRPC in the mesh namespaces. The suite's mesh pods (Istio's echo app)
// serve gRPC on their grpc port (7070) beside HTTP; a meshgate sidecar has
// one app address. So a mesh backend's sidecar forwards to a small mux the
// runner serves for the pod (meshApp): gRPC calls (content-type
// application/grpc) go to the pod's gRPC echo (the suite's echo-basic with
// GRPC_ECHO_SERVER, h2c), everything else to its HTTP echo, unchanged. The
// echo client's `client grpc://HOST:PORT` calls the gRPC echo's Echo
// through the pod's sidecar outbound listener (meshGRPCClient).

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pb "sigs.k8s.io/gateway-api/conformance/echo-basic/grpcechoserver"
)

// startMeshApp serves the mux of a mesh pod on a free loopback port and
// returns its address: gRPC to grpcAddr (h2c), the rest to httpAddr.
func (w *world) startMeshApp(ctx context.Context, httpAddr, grpcAddr string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		w.t.Fatal(err)
	}
	proxy := func(addr string, transport http.RoundTripper) *httputil.ReverseProxy {
		target := &url.URL{Scheme: "http", Host: addr}
		return &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				pr.Out.Host = pr.In.Host // as the app would see it
			},
			Transport:     transport,
			FlushInterval: -1,
		}
	}
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	grpcProxy := proxy(grpcAddr, &http.Transport{Protocols: &h2c})
	httpProxy := proxy(httpAddr, http.DefaultTransport)
	var serve http.Protocols
	serve.SetHTTP1(true)
	serve.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &serve, ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		if strings.HasPrefix(req.Header.Get("Content-Type"), "application/grpc") {
			grpcProxy.ServeHTTP(rw, req)
			return
		}
		httpProxy.ServeHTTP(rw, req)
	})}
	go func() { _ = srv.Serve(ln) }()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	w.t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// meshGRPCClient makes count calls of the gRPC echo's Echo to u's host
// through outbound (a sidecar's outbound listener), and prints them as the
// Istio echo client does: the status code (200 for OK) and the pod that
// answered.
func meshGRPCClient(u *url.URL, outbound string, count int) (string, error) {
	conn, err := grpc.NewClient("passthrough:///"+outbound, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(u.Host))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	client := pb.NewGrpcEchoClient(conn)
	var out strings.Builder
	for i := 0; i < max(count, 1); i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := client.Echo(ctx, &pb.EchoRequest{})
		cancel()
		n := fmt.Sprintf("[%d]", i)
		fmt.Fprintf(&out, "%s Url=%s\n", n, u)
		if err != nil {
			fmt.Fprintf(&out, "%s StatusCode=%d\n%s Error=%s\n\n", n, grpcHTTPStatus(status.Code(err)), n, status.Convert(err).Message())
			continue
		}
		fmt.Fprintf(&out, "%s StatusCode=200\n%s Hostname=%s\n\n", n, n, resp.GetAssertions().GetContext().GetPod())
	}
	return out.String(), nil
}

// grpcHTTPStatus is the HTTP status the Istio echo client reports for a
// failed gRPC call (never 200).
func grpcHTTPStatus(code fmt.Stringer) int {
	switch code.String() {
	case "Unavailable":
		return http.StatusServiceUnavailable
	case "PermissionDenied":
		return http.StatusForbidden
	case "Unimplemented":
		return http.StatusNotFound
	case "DeadlineExceeded":
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}
