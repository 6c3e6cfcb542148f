package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// wlHTTPS is the section of TLS termination: each contender terminates TLS
// 1.3 (ECDSA P-256, keep-alive) and proxies in plaintext to the backend.
const wlHTTPS = "(i) HTTPS, TLS 1.3 terminated, keep-alive, tiny body, max rate (wrk)"

// httpsPolicyFile is the Gateway "bench-tls" of the HTTPS rows, in the
// data-plane policy directory while they run.
const httpsPolicyFile = "https.yaml"

// benchTLSName is the name the bench certificate is for (the SNI).
const benchTLSName = "bench.local"

// benchCert is the certificate the contenders present: its files and a
// pool that trusts it.
type benchCert struct {
	certFile, keyFile, bundleFile string // bundleFile: certificate then key (HAProxy's crt)
	pool                          *x509.CertPool
}

// httpsRows runs workload (i) for nginx, meshgate and HAProxy, one at a
// time, each terminating TLS 1.3 on a port of its own.
func (r *runner) httpsRows(ctx context.Context, env *meshgateEnv, backend string) error {
	cert, err := writeBenchCert(filepath.Join(r.work, "tls"))
	if err != nil {
		return err
	}
	starts := []struct {
		name  string
		start func() (*contender, error)
	}{
		{"nginx", func() (*contender, error) { return r.startNginxTLS(ctx, backend, cert) }},
		{"meshgate", func() (*contender, error) { return r.startMeshgateTLS(ctx, env, cert) }},
		{"haproxy", func() (*contender, error) { return r.startHAProxyTLS(ctx, backend, cert) }},
	}
	s := r.table.section(wlHTTPS, "nginx")
	var errs []error
	for _, st := range starts {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if r.contenders != nil && !r.contenders[st.name] {
			continue
		}
		c, err := st.start()
		if err != nil {
			s.rows = append(s.rows, row{contender: st.name, note: "not run: " + oneLine(err)})
			if !isSkipped(err) {
				errs = append(errs, fmt.Errorf("%s: %w", st.name, err))
			}
			if c != nil {
				c.stop()
			}
			continue
		}
		if err := r.measureHTTPS(ctx, c, s); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
		}
		c.stop()
	}
	if len(s.notes) == 0 {
		s.notes = append(s.notes, fmt.Sprintf("TLS 1.3 only, ECDSA P-256 certificate for %s, %d keep-alive connections "+
			"(a handshake each, then requests on it); plaintext to the backend.", benchTLSName, r.conns))
	}
	return errors.Join(errs...)
}

// measureHTTPS runs wrk over HTTPS against c, recording its CPU and peak
// RSS as workloads (a)-(d) do.
func (r *runner) measureHTTPS(ctx context.Context, c *contender, s *section) error {
	r.log.Info("measuring", "contender", c.name, "url", c.h1, "workload", wlHTTPS)
	if r.mode.warmup > 0 {
		if _, out, err := runWrk(ctx, c.h1+pathTiny, r.conns, r.cores, r.mode.warmup); err != nil {
			return fmt.Errorf("warm-up: %w\n%s", err, out)
		}
	}
	resetPeakRSS(c.measured.pgid())
	before := sampleGroup(c.measured.pgid())
	start := time.Now()
	res, out, err := runWrk(ctx, c.h1+pathTiny, r.conns, r.cores, r.mode.duration)
	elapsed := time.Since(start)
	switch {
	case err != nil && toolMissing(err):
		s.rows = append(s.rows, row{contender: c.name, note: "not run: " + oneLine(err)})
		return nil
	case err != nil:
		s.rows = append(s.rows, row{contender: c.name, note: "failed: " + oneLine(err)})
		return fmt.Errorf("%s: %w\n%s", wlHTTPS, err, out)
	}
	rw := row{contender: c.name, res: res}
	after := sampleGroup(c.measured.pgid())
	if n := requestsOf(res, elapsed); n > 0 {
		rw.cpuMsPer1k = (after.cpuSeconds - before.cpuSeconds) * 1000 / (n / 1000)
	}
	rw.rssMiB = float64(after.peakRSS) / (1 << 20)
	r.log.Info("measured", "contender", c.name, "workload", wlHTTPS, "rps", int(res.rps), "p99ms", res.p99)
	s.rows = append(s.rows, rw)
	return nil
}

// writeBenchCert writes a self-signed ECDSA P-256 certificate for
// benchTLSName and 127.0.0.1 into dir.
func writeBenchCert(dir string) (*benchCert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("bench certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: benchTLSName},
		DNSNames: []string{benchTLSName}, IPAddresses: nil,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("bench certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("bench certificate: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bench certificate: %w", err)
	}
	c := &benchCert{certFile: filepath.Join(dir, "bench.crt"), keyFile: filepath.Join(dir, "bench.key"),
		bundleFile: filepath.Join(dir, "bench.pem"), pool: x509.NewCertPool()}
	for path, data := range map[string][]byte{c.certFile: certPEM, c.keyFile: keyPEM, c.bundleFile: append(append([]byte{}, certPEM...), keyPEM...)} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, fmt.Errorf("bench certificate: %w", err)
		}
	}
	c.pool.AppendCertsFromPEM(certPEM)
	return c, nil
}

// startNginxTLS runs nginx terminating TLS 1.3 and proxying to backend.
func (r *runner) startNginxTLS(ctx context.Context, backend string, cert *benchCert) (*contender, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(r.work, "nginx-tls")
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
    listen %[4]s ssl;
    ssl_certificate %[5]s;
    ssl_certificate_key %[6]s;
    ssl_protocols TLSv1.3;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
    }
  }
}
`, r.cores, dir, backend, addr, cert.certFile, cert.keyFile)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("nginx config: %w", err)
	}
	p, err := r.procs.start("nginx-tls", "nginx", []string{"-e", dir + "/error.log", "-p", dir, "-c", path}, nil)
	if err != nil {
		return nil, err
	}
	c := &contender{name: "nginx", h1: "https://" + addr, measured: p, stop: p.stop}
	return c, waitHTTPS(ctx, c.h1+pathTiny, cert, 15*time.Second, p)
}

// startHAProxyTLS runs HAProxy terminating TLS 1.3 and proxying to backend.
func (r *runner) startHAProxyTLS(ctx context.Context, backend string, cert *benchCert) (*contender, error) {
	addr, err := freeAddr()
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
  bind %s ssl crt %s ssl-min-ver TLSv1.3 alpn http/1.1
  default_backend be
backend be
  http-reuse always
  server s1 %s
`, r.cores, addr, cert.bundleFile, backend)
	path := filepath.Join(r.work, "haproxy-tls.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("haproxy config: %w", err)
	}
	p, err := r.procs.start("haproxy-tls", "haproxy", []string{"-db", "-f", path}, nil)
	if err != nil {
		return nil, err
	}
	c := &contender{name: "haproxy", h1: "https://" + addr, measured: p, stop: p.stop}
	return c, waitHTTPS(ctx, c.h1+pathTiny, cert, 15*time.Second, p)
}

// startMeshgateTLS adds the Gateway "bench-tls" (an HTTPS listener, TLS
// 1.3 minimum, the bench certificate as a Secret naming its files) to the
// data-plane policy and runs its gateway.
func (r *runner) startMeshgateTLS(ctx context.Context, env *meshgateEnv, cert *benchCert) (*contender, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	admin, err := freeAddr()
	if err != nil {
		return nil, err
	}
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	policy := fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench-tls}
spec:
  gatewayClassName: meshgate
  listeners:
    - name: https
      protocol: HTTPS
      port: %s
      tls:
        certificateRefs: [{name: bench-tls}]
        options: {meshgate.dev/min-tls-version: "1.3"}
---
apiVersion: v1
kind: Secret
metadata:
  name: bench-tls
  annotations: {meshgate.dev/tls-cert-file: %q, meshgate.dev/tls-key-file: %q}
type: kubernetes.io/tls
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bench-tls}
spec:
  parentRefs: [{name: bench-tls}]
  rules:
    - backendRefs: [{name: backend, port: 80}]
`, port, cert.certFile, cert.keyFile)
	file := filepath.Join(r.work, "policy", httpsPolicyFile)
	if err := os.WriteFile(file, []byte(policy), 0o644); err != nil {
		return nil, fmt.Errorf("policy file: %w", err)
	}
	f := env.flags
	f.admin = admin
	if r.hasHTTP1ServerFlag {
		f.http1Server = "fast"
	}
	if f.token, err = env.joinToken(ctx, "bench-tls"); err != nil {
		return nil, err
	}
	p, err := r.procs.start("meshgate-gateway-tls", r.meshgate, proxyArgs(f, "gateway", "bench-tls", sidecarAddrs{}), nil)
	if err != nil {
		return nil, err
	}
	stop := func() { p.stop(); _ = os.Remove(file) }
	c := &contender{name: "meshgate", h1: "https://" + addr, measured: p, admin: "http://" + admin, stop: stop}
	return c, waitHTTPS(ctx, c.h1+pathTiny, cert, 20*time.Second, p, env.cp)
}

// waitHTTPS polls url, trusting the bench certificate (SNI benchTLSName),
// until it answers 200 over TLS 1.3.
func waitHTTPS(ctx context.Context, url string, cert *benchCert, timeout time.Duration, procs ...*proc) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: cert.pool, ServerName: benchTLSName, MinVersion: tls.VersionTLS13},
	}}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		for _, p := range procs {
			if p.exited() {
				return fmt.Errorf("%s exited while waiting for %s:\n%s", p.name, url, p.tail())
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("request %s: %w", url, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("status %d", resp.StatusCode)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not serving after %v: %w", url, timeout, last)
}
