package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// contender is one running proxy (or the backend itself for "direct").
type contender struct {
	name string
	// h1 is the base URL for HTTP/1.1; h2 the base URL for h2c ("" when the
	// contender cannot serve it).
	h1, h2 string
	// measured is the process group whose CPU and memory are reported (nil
	// for direct).
	measured *proc
	// admin is a meshgate admin base URL, for PROFILE=1.
	admin string
	stop  func()
}

// meshgateFlags is everything the harness decides about how a meshgate
// process runs; proxyArgs and controlplaneArgs are the ONE place that turns it
// into command-line flags, so that adapting to new flags (--token,
// --insecure...) is a one-function change.
type meshgateFlags struct {
	xds   string // control plane xDS address
	admin string // this process's admin address
	// insecure asks for plaintext xDS without identities (the benchmark's
	// default while mTLS is not measured).
	insecure bool
	// token is a join token (mTLS runs); empty for plaintext.
	token string
	// insecureFlag is the binary's flag for plaintext xDS ("--insecure"),
	// or "" when the binary has none (found from --help at start).
	insecureFlag string
	// cpInsecureFlag is the control plane's flag for plaintext xDS, or "".
	cpInsecureFlag string
	// dataDir is the control plane's --data-dir (CA, tokens, admin token)
	// when the binary has that flag; "" for a control plane without a CA.
	dataDir string
	// http1Server is the proxy's --http1-server (std or fast); "" leaves
	// the binary's default ($MESHGATE_HTTP1_SERVER, else std).
	http1Server string
}

// controlplaneArgs returns the flags of `meshgate controlplane`.
func controlplaneArgs(f meshgateFlags, configDir string) []string {
	args := []string{"controlplane", "--log-level", "warn",
		"--config", configDir, "--xds-address", f.xds, "--admin-address", f.admin}
	if f.dataDir != "" {
		args = append(args, "--data-dir", f.dataDir)
	}
	if f.insecure && f.cpInsecureFlag != "" {
		args = append(args, f.cpInsecureFlag)
	}
	return args
}

// proxyArgs returns the flags of `meshgate gateway` (role "gateway", name =
// Gateway) or `meshgate sidecar` (role "sidecar", name = service).
func proxyArgs(f meshgateFlags, role, name string, sidecar sidecarAddrs) []string {
	args := []string{role, "--log-level", "warn", "--xds", f.xds, "--admin", f.admin}
	switch role {
	case "gateway":
		args = append(args, "--name", name)
	case "sidecar":
		args = append(args, "--service", name, "--app", sidecar.app,
			"--inbound", sidecar.inbound, "--outbound", sidecar.outbound)
	}
	if f.token != "" {
		args = append(args, "--token", f.token)
	} else if f.insecure && f.insecureFlag != "" {
		args = append(args, f.insecureFlag)
	}
	if f.http1Server != "" {
		args = append(args, "--http1-server", f.http1Server)
	}
	return args
}

// sidecarAddrs are a sidecar's listener and app addresses.
type sidecarAddrs struct{ app, inbound, outbound string }

// startNginx runs nginx (master + one worker per core) proxying to backend.
func (r *runner) startNginx(ctx context.Context, backend string) (*contender, error) {
	h1, h2, err := twoAddrs()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(r.work, "nginx")
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
  keepalive_requests 1000000;
  upstream backend { server %[3]s; keepalive 128; keepalive_requests 1000000; }
  server {
    listen %[4]s;
    listen %[5]s http2;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
    }
  }
}
`, r.cores, dir, backend, h1, h2)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("nginx config: %w", err)
	}
	p, err := r.procs.start("nginx", "nginx", []string{"-e", dir + "/error.log", "-p", dir, "-c", path}, nil)
	if err != nil {
		return nil, err
	}
	c := &contender{name: "nginx", h1: "http://" + h1, h2: "http://" + h2, measured: p, stop: p.stop}
	return c, waitHTTP(ctx, c.h1+pathTiny, "", 15*time.Second, p)
}

// startHAProxy runs HAProxy (one thread per core) proxying to backend.
func (r *runner) startHAProxy(ctx context.Context, backend string) (*contender, error) {
	h1, h2, err := twoAddrs()
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`global
  nbthread %d
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind %s
  bind %s proto h2
  default_backend be
backend be
  http-reuse always
  server s1 %s
`, r.cores, h1, h2, backend)
	path := filepath.Join(r.work, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("haproxy config: %w", err)
	}
	p, err := r.procs.start("haproxy", "haproxy", []string{"-db", "-f", path}, nil)
	if err != nil {
		return nil, err
	}
	c := &contender{name: "haproxy", h1: "http://" + h1, h2: "http://" + h2, measured: p, stop: p.stop}
	return c, waitHTTP(ctx, c.h1+pathTiny, "", 15*time.Second, p)
}

// startCaddy runs Caddy's reverse_proxy (HTTP/1.1 and h2c on one port).
func (r *runner) startCaddy(ctx context.Context, backend string) (*contender, error) {
	if r.caddyBin == "" {
		return nil, errSkipped("caddy binary not built (tools/caddy/bin/caddy)")
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	servers {
		protocols h1 h2c
	}
}
http://%s {
	reverse_proxy %s
}
`, addr, backend)
	path := filepath.Join(r.work, "Caddyfile")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("caddy config: %w", err)
	}
	env := []string{"HOME=" + r.work, "XDG_DATA_HOME=" + r.work, "XDG_CONFIG_HOME=" + r.work}
	p, err := r.procs.start("caddy", r.caddyBin, []string{"run", "--adapter", "caddyfile", "--config", path}, env)
	if err != nil {
		return nil, err
	}
	c := &contender{name: "caddy", h1: "http://" + addr, h2: "http://" + addr, measured: p, stop: p.stop}
	return c, waitHTTP(ctx, c.h1+pathTiny, "", 15*time.Second, p)
}

// meshgatePolicy is the policy of the data-plane runs: a gateway "bench"
// routing everything to the backend, and a mesh service "app" (behind a
// sidecar) called by "client" through its sidecar.
func meshgatePolicy(gatewayPort, backend, appInbound, clientInbound string, mtls bool) string {
	sidecarFlag := ""
	if mtls {
		sidecarFlag = "\n      sidecar: true"
	}
	port := gatewayPort[strings.LastIndexByte(gatewayPort, ':')+1:]
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench}
spec:
  gatewayClassName: meshgate
  listeners:
    - {name: http, protocol: HTTP, port: %s}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bench}
spec:
  parentRefs: [{name: bench}]
  rules:
    - backendRefs: [{name: backend, port: 80}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: backend}
spec:
  ports: [{name: http, port: 80}]
  endpoints:
    - address: %s
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: app}
spec:
  ports: [{name: http, port: 80}]
  endpoints:
    - address: %s%s
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: client}
spec:
  ports: [{name: http, port: 80}]
  endpoints:
    - address: %s%s
`, port, backend, appInbound, sidecarFlag, clientInbound, sidecarFlag)
}

// meshgateEnv is the running control plane with its policy addresses.
type meshgateEnv struct {
	cp        *proc
	flags     meshgateFlags
	gatewayAt string
	app       sidecarAddrs
	client    sidecarAddrs
}

// startControlplane writes the data-plane policy and runs the control plane.
func (r *runner) startControlplane(ctx context.Context, backend string) (*meshgateEnv, error) {
	var addrs [9]string
	for i := range addrs {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	env := &meshgateEnv{
		flags: meshgateFlags{xds: addrs[0], admin: addrs[1], insecure: !r.cpHasDataDir,
			insecureFlag: r.insecureFlag, cpInsecureFlag: r.cpInsecureFlag},
		gatewayAt: addrs[2],
		app:       sidecarAddrs{app: backend, inbound: addrs[3], outbound: addrs[4]},
		client:    sidecarAddrs{app: addrs[5], inbound: addrs[6], outbound: addrs[7]},
	}
	if r.cpHasDataDir {
		env.flags.dataDir = filepath.Join(r.work, "cp-data")
	}
	dir := filepath.Join(r.work, "policy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("policy dir: %w", err)
	}
	// With a CA, sidecar inbound listeners are STRICT mTLS: endpoints that are
	// sidecars must say so, and the mesh path is measured over mTLS.
	policy := meshgatePolicy(env.gatewayAt, backend, env.app.inbound, env.client.inbound, r.cpHasDataDir)
	if err := os.WriteFile(filepath.Join(dir, "bench.yaml"), []byte(policy), 0o644); err != nil {
		return nil, fmt.Errorf("policy file: %w", err)
	}
	cp, err := r.procs.start("controlplane", r.meshgate, controlplaneArgs(env.flags, dir), nil)
	if err != nil {
		return nil, err
	}
	env.cp = cp
	if err := waitHTTP(ctx, "http://"+env.flags.admin+"/healthz", "", 15*time.Second, cp); err != nil {
		return nil, err
	}
	return env, nil
}

// startMeshgateGateway runs `meshgate gateway --name bench` as contender
// name: "meshgate" with the binary's default HTTP/1.1 server (the fast path,
// --http1-server fast), "meshgate-std" with net/http's alone (--http1-server
// std), "meshgate-baseline" the baseline binary's gateway (an earlier build,
// as "meshgate"). All serve the same Gateway, one at a time.
func (r *runner) startMeshgateGateway(ctx context.Context, env *meshgateEnv, name string) (*contender, error) {
	admin, err := freeAddr()
	if err != nil {
		return nil, err
	}
	f := env.flags
	f.admin = admin
	bin, hasHTTP1ServerFlag := r.meshgate, r.hasHTTP1ServerFlag
	cpEnv := env
	if name == "meshgate-baseline" {
		if r.baseline == "" {
			return nil, errSkipped("no baseline binary (-baseline or BENCH_BASELINE)")
		}
		bin, hasHTTP1ServerFlag = r.baseline, hasFlag(ctx, r.baseline, "gateway", "--http1-server")
		// The earlier build's gateway gets its configuration from a control
		// plane of its own build, on the same policy: today's control plane
		// may send fields the earlier proxy does not implement (and NACKs).
		if cpEnv, err = r.startBaselineControlplane(ctx, env); err != nil {
			return nil, err
		}
		f.xds = cpEnv.flags.xds
	}
	if hasHTTP1ServerFlag {
		f.http1Server = "fast"
		if name == "meshgate-std" {
			f.http1Server = "std"
		}
	} else if name == "meshgate-std" {
		return nil, errSkipped("this meshgate binary has no --http1-server")
	}
	if f.token, err = cpEnv.joinToken(ctx, "bench"); err != nil {
		return nil, err
	}
	p, err := r.procs.start(strings.Replace(name, "meshgate", "meshgate-gateway", 1), bin, proxyArgs(f, "gateway", "bench", sidecarAddrs{}), nil)
	if err != nil {
		return nil, err
	}
	base := "http://" + env.gatewayAt
	stop := p.stop
	if cpEnv != env {
		stop = func() { p.stop(); cpEnv.cp.stop() }
	}
	c := &contender{name: name, h1: base, h2: base, measured: p, admin: "http://" + admin, stop: stop}
	return c, waitHTTP(ctx, base+pathTiny, "", 20*time.Second, p, cpEnv.cp)
}

// startBaselineControlplane runs the baseline binary's control plane on the
// policy of env, with ports and a data directory of its own.
func (r *runner) startBaselineControlplane(ctx context.Context, env *meshgateEnv) (*meshgateEnv, error) {
	b := *env
	xds, admin, err := twoAddrs()
	if err != nil {
		return nil, err
	}
	b.flags.xds, b.flags.admin = xds, admin
	if b.flags.dataDir != "" {
		b.flags.dataDir = filepath.Join(r.work, "cp-data-baseline")
	}
	if b.cp, err = r.procs.start("controlplane-baseline", r.baseline, controlplaneArgs(b.flags, filepath.Join(r.work, "policy")), nil); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, "http://"+b.flags.admin+"/healthz", "", 15*time.Second, b.cp); err != nil {
		b.cp.stop()
		return nil, err
	}
	return &b, nil
}

// startSidecars runs the two sidecars of the mesh path; the returned
// contender's URL is the client's outbound listener (send Host: app) and its
// measured group is the app's sidecar... both are sampled by the caller.
func (r *runner) startSidecars(ctx context.Context, env *meshgateEnv) (client, app *contender, err error) {
	start := func(name string, a sidecarAddrs) (*contender, error) {
		admin, err := freeAddr()
		if err != nil {
			return nil, err
		}
		f := env.flags
		f.admin = admin
		if f.token, err = env.joinToken(ctx, name); err != nil {
			return nil, err
		}
		p, err := r.procs.start("meshgate-sidecar-"+name, r.meshgate, proxyArgs(f, "sidecar", name, a), nil)
		if err != nil {
			return nil, err
		}
		return &contender{name: "sidecar-" + name, h1: "http://" + a.outbound, measured: p, admin: "http://" + admin, stop: p.stop}, nil
	}
	if app, err = start("app", env.app); err != nil {
		return nil, nil, err
	}
	if client, err = start("client", env.client); err != nil {
		return nil, nil, err
	}
	return client, app, waitHTTP(ctx, client.h1+pathTiny, "app", 20*time.Second, client.measured, app.measured, env.cp)
}

// twoAddrs returns two free loopback addresses.
func twoAddrs() (string, string, error) {
	a, err := freeAddr()
	if err != nil {
		return "", "", err
	}
	b, err := freeAddr()
	return a, b, err
}

// errSkipped marks a contender that cannot run here; it is reported, not fatal.
type errSkipped string

func (e errSkipped) Error() string { return string(e) }

// joinToken creates a join token for a service (or gateway) through the
// control plane's admin API, when the control plane has a CA (a --data-dir);
// "" otherwise (then proxies run with --insecure).
func (env *meshgateEnv) joinToken(ctx context.Context, service string) (string, error) {
	if env.flags.dataDir == "" {
		return "", nil
	}
	admin, err := os.ReadFile(filepath.Join(env.flags.dataDir, "admin-token"))
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	body, _ := json.Marshal(map[string]string{"service": service, "namespace": "default"})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+env.flags.admin+"/tokens", bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("token request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(admin)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("create join token for %s: %w", service, err)
	}
	defer resp.Body.Close()
	var out struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated || out.Token == "" {
		return "", fmt.Errorf("create join token for %s: status %d: %v", service, resp.StatusCode, err)
	}
	return out.Token, nil
}
