package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// wlGRPC is the gRPC workload: unary calls over h2c to a grpc-go backend,
// through each proxy (meshgate: a Service port with protocol HTTP2; nginx:
// grpc_pass; HAProxy: an h2 server line).
const wlGRPC = "(h) gRPC unary over h2c to a grpc-go backend, max rate (h2load; p50 column = mean)"

// grpcEchoMethod is the benchmark's gRPC method: its request and answer
// are google.protobuf.StringValue, no generated code needed.
const grpcEchoMethod = "/meshgate.bench.Echo/Echo"

var benchEchoService = grpc.ServiceDesc{
	ServiceName: "meshgate.bench.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{MethodName: "Echo", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		in := new(wrapperspb.StringValue)
		if err := dec(in); err != nil {
			return nil, err
		}
		return in, nil
	}}},
}

// grpcWorkload runs wlGRPC: direct, nginx, meshgate and HAProxy in turn,
// each checked with one real gRPC call (h2load sees HTTP statuses, not
// grpc-status) before h2load loads it.
func (r *runner) grpcWorkload(ctx context.Context, env *meshgateEnv) error {
	backendAddr, err := freeAddr()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", backendAddr)
	if err != nil {
		return fmt.Errorf("grpc backend: %w", err)
	}
	srv := grpc.NewServer()
	srv.RegisterService(&benchEchoService, struct{}{})
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()

	msg, err := proto.Marshal(wrapperspb.String("hello, world"))
	if err != nil {
		return err
	}
	frame := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	body := filepath.Join(r.work, "grpc-request.bin")
	if err := os.WriteFile(body, append(frame, msg...), 0o644); err != nil {
		return fmt.Errorf("grpc request body: %w", err)
	}

	starts := []struct {
		name  string
		start func() (*contender, error)
	}{
		{"nginx", func() (*contender, error) { return r.startNginxGRPC(ctx, backendAddr) }},
		{"direct", func() (*contender, error) {
			return &contender{name: "direct", h2: "http://" + backendAddr, stop: func() {}}, nil
		}},
		{"meshgate", func() (*contender, error) { return r.startMeshgateGRPC(ctx, env, backendAddr) }},
		{"haproxy", func() (*contender, error) { return r.startHAProxyGRPC(ctx, backendAddr) }},
	}
	s := r.table.section(wlGRPC, "nginx")
	var errs []error
	for _, st := range starts {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if r.contenders != nil && !r.contenders[st.name] {
			continue
		}
		c, err := st.start()
		if err == nil {
			err = waitGRPC(ctx, strings.TrimPrefix(c.h2, "http://"), 20*time.Second)
		}
		if err != nil {
			note := "failed: "
			if isSkipped(err) {
				note = "not run: "
			} else {
				errs = append(errs, fmt.Errorf("%s: %w", st.name, err))
			}
			s.rows = append(s.rows, row{contender: st.name, note: note + oneLine(err)})
			if c != nil {
				c.stop()
			}
			continue
		}
		var before usage
		if c.measured != nil {
			resetPeakRSS(c.measured.pgid())
			before = sampleGroup(c.measured.pgid())
		}
		start := time.Now()
		res, out, err := runH2loadGRPC(ctx, c.h2+grpcEchoMethod, body, r.conns, 10, r.cores, r.mode.duration)
		elapsed := time.Since(start)
		switch {
		case err != nil && toolMissing(err):
			s.rows = append(s.rows, row{contender: c.name, note: "not run: " + oneLine(err)})
		case err != nil:
			s.rows = append(s.rows, row{contender: c.name, note: "failed: " + oneLine(err)})
			errs = append(errs, fmt.Errorf("%s: %s: %w\n%s", wlGRPC, c.name, err, out))
		default:
			rw := row{contender: c.name, res: res}
			if c.measured != nil {
				after := sampleGroup(c.measured.pgid())
				if n := requestsOf(res, elapsed); n > 0 {
					rw.cpuMsPer1k = (after.cpuSeconds - before.cpuSeconds) * 1000 / (n / 1000)
				}
				rw.rssMiB = float64(after.peakRSS) / (1 << 20)
			}
			r.log.Info("measured", "contender", c.name, "workload", wlGRPC, "rps", int(res.rps))
			s.rows = append(s.rows, rw)
		}
		c.stop()
	}
	if len(s.notes) == 0 {
		s.notes = append(s.notes, "Each call is a 19-byte StringValue echoed back (grpc-go server); every contender is checked with a real gRPC call first.")
	}
	return errors.Join(errs...)
}

// runH2loadGRPC runs h2load posting body as a gRPC request to url.
func runH2loadGRPC(ctx context.Context, url, body string, conns, streams, threads int, dur time.Duration) (loadResult, string, error) {
	args := []string{"-c", strconv.Itoa(conns), "-m", strconv.Itoa(streams), "-t", strconv.Itoa(threads),
		"-D", durSeconds(dur), "-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers", url}
	out, err := exec.CommandContext(ctx, "h2load", args...).CombinedOutput()
	if err != nil {
		return loadResult{}, string(out), fmt.Errorf("h2load %s: %w", strings.Join(args, " "), err)
	}
	res, err := parseH2load(string(out))
	return res, string(out), err
}

// waitGRPC calls the echo method at addr until it answers right.
func waitGRPC(ctx context.Context, addr string, timeout time.Duration) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("grpc client: %w", err)
	}
	defer conn.Close()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		out := new(wrapperspb.StringValue)
		last = conn.Invoke(callCtx, grpcEchoMethod, wrapperspb.String("ready?"), out)
		cancel()
		if last == nil && out.GetValue() == "ready?" {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("no gRPC answer from %s: %w", addr, last)
}

// startNginxGRPC runs nginx proxying h2c gRPC to backend with grpc_pass.
func (r *runner) startNginxGRPC(ctx context.Context, backend string) (*contender, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(r.work, "nginx-grpc")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("nginx dir: %w", err)
	}
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes %d;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  upstream grpcbackend { server %[3]s; keepalive 128; }
  server {
    listen %[4]s http2;
    location / { grpc_pass grpc://grpcbackend; }
  }
}
`, r.cores, dir, backend, addr)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("nginx config: %w", err)
	}
	p, err := r.procs.start("nginx-grpc", "nginx", []string{"-e", dir + "/error.log", "-p", dir, "-c", path}, nil)
	if err != nil {
		return nil, err
	}
	return &contender{name: "nginx", h2: "http://" + addr, measured: p, stop: p.stop}, nil
}

// startHAProxyGRPC runs HAProxy proxying h2c gRPC to backend (proto h2 on
// both sides).
func (r *runner) startHAProxyGRPC(ctx context.Context, backend string) (*contender, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`global
  nbthread %d
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind %s proto h2
  default_backend be
backend be
  http-reuse always
  server s1 %s proto h2
`, r.cores, addr, backend)
	path := filepath.Join(r.work, "haproxy-grpc.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("haproxy config: %w", err)
	}
	p, err := r.procs.start("haproxy-grpc", "haproxy", []string{"-db", "-f", path}, nil)
	if err != nil {
		return nil, err
	}
	return &contender{name: "haproxy", h2: "http://" + addr, measured: p, stop: p.stop}, nil
}

// startMeshgateGRPC adds a Gateway bench-grpc to the policy, its listener
// routing to the gRPC backend as a Service port with protocol HTTP2, and
// runs its gateway.
func (r *runner) startMeshgateGRPC(ctx context.Context, env *meshgateEnv, backend string) (*contender, error) {
	listen, admin, err := twoAddrs()
	if err != nil {
		return nil, err
	}
	policy := fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench-grpc}
spec:
  gatewayClassName: meshgate
  listeners:
    - {name: grpc, protocol: HTTP, port: %s}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bench-grpc}
spec:
  parentRefs: [{name: bench-grpc}]
  rules:
    - backendRefs: [{name: grpc-backend, port: 9090}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: grpc-backend}
spec:
  ports: [{name: grpc, port: 9090, protocol: HTTP2}]
  endpoints:
    - address: %s
`, listen[strings.LastIndexByte(listen, ':')+1:], backend)
	if err := os.WriteFile(filepath.Join(r.work, "policy", "grpc.yaml"), []byte(policy), 0o644); err != nil {
		return nil, fmt.Errorf("policy file: %w", err)
	}
	f := env.flags
	f.admin = admin
	if r.hasHTTP1ServerFlag {
		f.http1Server = "fast"
	}
	if f.token, err = env.joinToken(ctx, "bench-grpc"); err != nil {
		return nil, err
	}
	p, err := r.procs.start("meshgate-gateway-grpc", r.meshgate, proxyArgs(f, "gateway", "bench-grpc", sidecarAddrs{}), nil)
	if err != nil {
		return nil, err
	}
	return &contender{name: "meshgate", h2: "http://" + listen, measured: p, admin: "http://" + admin, stop: p.stop}, nil
}
