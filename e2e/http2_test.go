package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	bin "encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// grpcEchoService is a gRPC service registered without generated code
// (its messages are google.protobuf.StringValue): Echo answers "echo: "
// and the request; Count streams "1", "2", "3" then ends OK; Missing
// fails NOT_FOUND before any message (a trailers-only response).
var grpcEchoService = grpc.ServiceDesc{
	ServiceName: "meshgate.test.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Echo", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return wrapperspb.String("echo: " + in.GetValue()), nil
		}},
		{MethodName: "Missing", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			if err := dec(new(wrapperspb.StringValue)); err != nil {
				return nil, err
			}
			return nil, status.Error(codes.NotFound, "no such thing")
		}},
	},
	Streams: []grpc.StreamDesc{{StreamName: "Count", ServerStreams: true, Handler: func(_ any, stream grpc.ServerStream) error {
		if err := stream.RecvMsg(new(wrapperspb.StringValue)); err != nil {
			return err
		}
		for _, v := range []string{"1", "2", "3"} {
			if err := stream.SendMsg(wrapperspb.String(v)); err != nil {
				return err
			}
		}
		return nil
	}}},
}

// startGRPCEcho serves grpcEchoService (grpc-go, h2c) on loopback.
func startGRPCEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	srv.RegisterService(&grpcEchoService, struct{}{})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// startH2Echo serves h2c and HTTP/1.1 on loopback: /echo streams the
// request body back as it arrives (full duplex), anything else answers
// its protocol.
func startH2Echo(t *testing.T) string {
	t.Helper()
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: protocols, ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/echo" {
			fmt.Fprintf(w, "proto=%s", r.Proto)
			return
		}
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				http.NewResponseController(w).Flush()
			}
			if err != nil {
				return
			}
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// http2Policy: the Gateway edge with an HTTP listener on ${gw} and an
// HTTPS one on ${gws} (h2.test), routing the gRPC service to grpcecho (a
// Service port with protocol HTTP2, the grpc-go server itself) and
// everything else to h2echo (protocol HTTP2, behind its sidecar).
const http2Policy = `
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
      hostname: h2.test
      tls: {certificateRefs: [{name: h2-cert}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: h2}
spec:
  parentRefs: [{name: edge, sectionName: http}, {name: edge, sectionName: https}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /meshgate.test.Echo/}}]
      backendRefs: [{name: grpcecho, port: 9090}]
    - backendRefs: [{name: h2echo, port: 80}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: grpcecho}
spec:
  ports: [{port: 9090, protocol: HTTP2}]
  endpoints: [{address: "${grpcecho}"}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: h2echo}
spec:
  ports: [{port: 80, protocol: HTTP2}]
  endpoints: [{address: "${h2echo-in}", sidecar: true}]
`

// h2cClient speaks h2c with prior knowledge only (net/http's HTTP/2
// client, golang.org/x/net/http2's code).
func h2cClient() *http.Client {
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: protocols}}
}

// TestHTTP2Edge: the gateway serves HTTP/2 to clients, h2 over TLS (ALPN)
// on its HTTPS listener and h2c with prior knowledge on its plaintext one
// (golang.org/x/net/http2 clients, and h2load with zero errors); an
// "Upgrade: h2c" request is served as HTTP/1.1; a 64 MiB body streams up
// and back down through gateway, sidecar and backend at once (each MiB
// echoed before the next is sent: a hop that buffered whole bodies would
// stall the exchange); gRPC-Web calls (raw framing over HTTP/1.1) reach a
// grpc-go server and come back with their trailers as the last frame.
func TestHTTP2Edge(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	cert := newTestCertificate(t, "h2.test", "h2.test")
	c.addr("grpcecho")
	c.vars["grpcecho"] = startGRPCEcho(t)
	c.policy("h2.yaml", yamlDocs(http2Policy, tlsSecret("h2-cert", cert)))
	c.startControlPlane()
	c.sidecar("h2echo", startH2Echo(t), c.addr("h2echo-in"), c.addr("h2echo-out"))
	c.gateway("edge")
	gw, gws := c.addr("gw"), c.addr("gws")

	h2c := h2cClient()
	eventually(t, 20*time.Second, "h2c through the gateway", func() error {
		return expectBody(h2c, "http://"+gw+"/", 2, "proto=HTTP/2.0", "")
	})

	t.Run("h2 over TLS (ALPN)", func(t *testing.T) {
		protocols := new(http.Protocols)
		protocols.SetHTTP2(true) // h2 only: the handshake fails without ALPN h2
		h2 := &http.Client{Transport: &http.Transport{Protocols: protocols, TLSClientConfig: &tls.Config{ServerName: "h2.test", RootCAs: cert.pool}}}
		eventually(t, 15*time.Second, "h2 over TLS", func() error {
			return expectBody(h2, "https://"+gws+"/", 2, "proto=HTTP/2.0", "h2.test")
		})
	})

	t.Run("Upgrade h2c is served as HTTP/1.1", func(t *testing.T) {
		line, err := rawRequest(gw, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
		if err != nil || line != "HTTP/1.1 200 OK" {
			t.Fatalf("Upgrade: h2c request: %q %v, want HTTP/1.1 200", line, err)
		}
	})

	t.Run("h2load", func(t *testing.T) {
		if _, err := exec.LookPath("h2load"); err != nil {
			t.Fatal("h2load is not installed (bash bench/setup.sh installs it: Debian's nghttp2-client)")
		}
		ctx := ctxTimeout(t, 60*time.Second)
		out, err := exec.CommandContext(ctx, "h2load", "-n", "400", "-c", "4", "-m", "10", "http://"+gw+"/").CombinedOutput()
		if err != nil {
			t.Fatalf("h2load: %v\n%s", err, out)
		}
		if !regexp.MustCompile(`requests: 400 total, 400 started, 400 done, 400 succeeded, 0 failed, 0 errored, 0 timeout`).Match(out) ||
			!regexp.MustCompile(`status codes: 400 2xx`).Match(out) {
			t.Fatalf("h2load did not see 400 successes:\n%s", out)
		}
	})

	t.Run("64 MiB streamed both ways", func(t *testing.T) {
		ctx := ctxTimeout(t, 90*time.Second)
		pr, pw := io.Pipe()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+gw+"/echo", pr)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := h2c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			t.Fatalf("echo: %s %d", resp.Proto, resp.StatusCode)
		}
		chunk, back := make([]byte, 1<<20), make([]byte, 1<<20)
		for i := range 64 {
			_, _ = rand.Read(chunk)
			if _, err := pw.Write(chunk); err != nil {
				t.Fatalf("MiB %d: sending: %v", i, err)
			}
			if _, err := io.ReadFull(resp.Body, back); err != nil {
				t.Fatalf("MiB %d: its echo did not come back before the next was sent: %v", i, err)
			}
			if !bytes.Equal(chunk, back) {
				t.Fatalf("MiB %d: echoed differently", i)
			}
		}
		_ = pw.Close()
		if n, err := io.Copy(io.Discard, resp.Body); err != nil || n != 0 {
			t.Fatalf("after the body: %d more bytes, %v", n, err)
		}
	})

	t.Run("gRPC-Web", func(t *testing.T) {
		tests := []struct {
			name, method, contentType string
			text                      bool
			wantMessages              []string
			wantStatus, wantMessage   string
			trailersOnly              bool
		}{
			{name: "unary", method: "Echo", contentType: "application/grpc-web+proto", wantMessages: []string{"echo: hi"}, wantStatus: "0"},
			{name: "server streaming", method: "Count", contentType: "application/grpc-web", wantMessages: []string{"1", "2", "3"}, wantStatus: "0"},
			{name: "text (base64)", method: "Echo", contentType: "application/grpc-web-text", text: true, wantMessages: []string{"echo: hi"}, wantStatus: "0"},
			{name: "text server streaming", method: "Count", contentType: "application/grpc-web-text+proto", text: true, wantMessages: []string{"1", "2", "3"}, wantStatus: "0"},
			{name: "error, trailers only", method: "Missing", contentType: "application/grpc-web+proto", wantStatus: "5", wantMessage: "no such thing", trailersOnly: true},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				var got *grpcWebResult
				eventually(t, 15*time.Second, "a gRPC-Web call", func() error {
					var err error
					got, err = grpcWebCall("http://"+gw+"/meshgate.test.Echo/"+tc.method, tc.contentType, tc.text, "hi")
					return err
				})
				wantType := "application/grpc-web+proto"
				if tc.text {
					wantType = "application/grpc-web-text+proto"
				}
				if got.contentType != wantType {
					t.Errorf("Content-Type %q, want %q", got.contentType, wantType)
				}
				if strings.Join(got.messages, ",") != strings.Join(tc.wantMessages, ",") {
					t.Errorf("messages %q, want %q", got.messages, tc.wantMessages)
				}
				st, msg := got.trailers["grpc-status"], got.trailers["grpc-message"]
				if tc.trailersOnly {
					if got.sawTrailerFrame {
						t.Errorf("a trailers-only answer got a trailers frame: %v", got.trailers)
					}
					st, msg = got.header.Get("Grpc-Status"), got.header.Get("Grpc-Message")
				} else if !got.sawTrailerFrame {
					t.Errorf("no trailers frame; headers %v", got.header)
				}
				if st != tc.wantStatus || msg != tc.wantMessage {
					t.Errorf("grpc-status %q grpc-message %q, want %q %q (trailers %v, headers %v)", st, msg, tc.wantStatus, tc.wantMessage, got.trailers, got.header)
				}
			})
		}
	})
}

// expectBody checks that url (with Host host when not empty) answers 200
// with body over HTTP/major.
func expectBody(c *http.Client, url string, major int, body, host string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != major || string(b) != body {
		return fmt.Errorf("%s %d %q, want HTTP/%d 200 %q", resp.Proto, resp.StatusCode, b, major, body)
	}
	return nil
}

// grpcWebResult is a gRPC-Web answer, its frames decoded.
type grpcWebResult struct {
	contentType     string
	header          http.Header
	messages        []string          // the StringValue of each message frame
	trailers        map[string]string // of the trailers frame
	sawTrailerFrame bool
}

// grpcWebCall posts one StringValue message as gRPC-Web over HTTP/1.1
// (text: base64, and a base64 answer asked for) and decodes the answer.
func grpcWebCall(url, contentType string, text bool, value string) (*grpcWebResult, error) {
	msg, err := proto.Marshal(wrapperspb.String(value))
	if err != nil {
		return nil, err
	}
	body := grpcWebFrame(0, msg)
	if text {
		body = []byte(base64.StdEncoding.EncodeToString(body))
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("X-Grpc-Web", "1")
	if text {
		req.Header.Set("Accept", "application/grpc-web-text")
	}
	resp, err := client.Do(req) // HTTP/1.1
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("status %d %v %q", resp.StatusCode, resp.Header, b)
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if text {
		raw, err = decodeConcatenatedBase64(raw)
		if err != nil {
			return nil, err
		}
	}
	res := &grpcWebResult{contentType: resp.Header.Get("Content-Type"), header: resp.Header, trailers: map[string]string{}}
	for len(raw) > 0 {
		if len(raw) < 5 {
			return nil, fmt.Errorf("truncated frame head %q", raw)
		}
		flag, n := raw[0], bin.BigEndian.Uint32(raw[1:5])
		if uint32(len(raw)-5) < n {
			return nil, fmt.Errorf("truncated frame: %d of %d bytes", len(raw)-5, n)
		}
		payload := raw[5 : 5+n]
		raw = raw[5+n:]
		if flag&0x80 != 0 {
			res.sawTrailerFrame = true
			sc := bufio.NewScanner(bytes.NewReader(payload))
			for sc.Scan() {
				k, v, _ := strings.Cut(strings.TrimSuffix(sc.Text(), "\r"), ":")
				res.trailers[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
			if len(raw) != 0 {
				return nil, errors.New("data after the trailers frame")
			}
			continue
		}
		m := new(wrapperspb.StringValue)
		if err := proto.Unmarshal(payload, m); err != nil {
			return nil, fmt.Errorf("message frame: %w", err)
		}
		res.messages = append(res.messages, m.GetValue())
	}
	return res, nil
}

// grpcWebFrame is one gRPC(-Web) frame.
func grpcWebFrame(flag byte, payload []byte) []byte {
	b := make([]byte, 5, 5+len(payload))
	b[0] = flag
	bin.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

// decodeConcatenatedBase64 decodes base64 segments each padded on its own
// (a grpc-web-text answer: one per frame).
func decodeConcatenatedBase64(s []byte) ([]byte, error) {
	var out []byte
	for len(s) > 0 {
		if len(s) < 4 {
			return nil, fmt.Errorf("base64 %q: not a multiple of four characters", s)
		}
		dst := make([]byte, 3)
		n, err := base64.StdEncoding.Decode(dst, s[:4])
		if err != nil {
			return nil, fmt.Errorf("base64: %w", err)
		}
		out = append(out, dst[:n]...)
		s = s[4:]
	}
	return out, nil
}
