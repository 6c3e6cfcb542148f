package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tcpEcho serves, on a free loopback port, connections that answer each
// line with "<name>: <line>"; with cert set, over TLS (the backend's own
// certificate, for passthrough). It returns the address.
func tcpEcho(t *testing.T, name string, cert *testCertificate) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cert != nil {
		pair, err := tls.X509KeyPair([]byte(cert.certPEM), []byte(cert.keyPEM))
		if err != nil {
			t.Fatal(err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{pair}})
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
				r := bufio.NewReader(conn)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := fmt.Fprintf(conn, "%s: %s", name, line); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// echoOnce sends a line on a new connection to addr (over TLS with SNI
// when tlsConfig is set) and returns the answer, and the subject of the
// certificate the server presented.
func echoOnce(addr, line string, tlsConfig *tls.Config) (answer, subject string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var conn net.Conn
	if tlsConfig != nil {
		conn, err = (&tls.Dialer{NetDialer: &net.Dialer{}, Config: tlsConfig}).DialContext(ctx, "tcp", addr)
	} else {
		conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return "", "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if tc, ok := conn.(*tls.Conn); ok {
		subject = tc.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if _, err := io.WriteString(conn, line+"\n"); err != nil {
		return "", subject, err
	}
	answer, err = bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(answer), subject, err
}

// TestTCPRoute: a Gateway listener of protocol TCP proxies connections to
// its TCPRoute's backends by weight, both ways, and logs one access-log
// line per connection (bytes, upstream, duration); a backend that does not
// resolve takes its share of the connections, closed.
func TestTCPRoute(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	logFile := filepath.Join(t.TempDir(), "access.log")
	c.vars["v1"], c.vars["v2"] = tcpEcho(t, "v1", nil), tcpEcho(t, "v2", nil)
	c.policy("tcp.yaml", `
apiVersion: meshgate.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  accessLog: {path: "`+logFile+`"}
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: echo-v1}
spec:
  ports: [{port: 7000}]
  endpoints: [{address: "${v1}"}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: echo-v2}
spec:
  ports: [{port: 7000}]
  endpoints: [{address: "${v2}"}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners:
    - {name: echo, protocol: TCP, port: ${tcp.port}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: echo}
spec:
  parentRefs: [{name: edge, sectionName: echo}]
  rules:
    - backendRefs:
        - {name: echo-v1, port: 7000, weight: 3}
        - {name: echo-v2, port: 7000, weight: 1}
`)
	c.startControlPlane()
	c.gateway("edge", "--id", "gateway~edge~tcp")
	addr := c.addr("tcp")
	eventually(t, 15*time.Second, "the TCP listener proxies", func() error {
		got, _, err := echoOnce(addr, "hello", nil)
		if err != nil {
			return err
		}
		if got != "v1: hello" && got != "v2: hello" {
			return fmt.Errorf("answer %q", got)
		}
		return nil
	})

	t.Run("weights", func(t *testing.T) {
		counts := map[string]int{}
		const n = 200
		for i := range n {
			got, _, err := echoOnce(addr, fmt.Sprint("n", i), nil)
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			counts[strings.SplitN(got, ":", 2)[0]]++
		}
		// 3:1 → 150 expected for v1; a loose bound against flakes (p < 1e-6).
		if counts["v1"] < 115 || counts["v1"] > 185 || counts["v1"]+counts["v2"] != n {
			t.Errorf("connections by backend %v, want about 3:1 of %d", counts, n)
		}
	})

	t.Run("one access-log line per connection", func(t *testing.T) {
		if _, _, err := echoOnce(addr, "logged-line", nil); err != nil {
			t.Fatal(err)
		}
		lines := waitLines(t, logFile, 1, "a connection's line", func(l accessLine) bool {
			return l.str("role") == "gateway" && l.num("bytes_received") == float64(len("logged-line\n"))
		})
		l := lines[0]
		if l.str("upstream_cluster") != "default/echo-v1:7000" && l.str("upstream_cluster") != "default/echo-v2:7000" ||
			l.str("upstream_host") == "" || l.num("bytes_sent") != float64(len("v1: logged-line\n")) || l.str("response_flags") != "-" {
			t.Errorf("line %v: want the upstream, bytes both ways, no flags", l)
		}
		if _, ok := l["duration"].(float64); !ok {
			t.Errorf("line %v: no duration", l)
		}
	})

	t.Run("connection metrics", func(t *testing.T) {
		r, err := get("http://" + c.addr("gateway-admin-edge") + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		listener := `listener="default/edge/` + c.vars["tcp.port"] + `"`
		for _, want := range []string{
			`meshgate_proxy_tcp_connections_total{cluster="default/echo-v1:7000",` + listener + `}`,
			`meshgate_proxy_tcp_connections_active{cluster="default/echo-v2:7000",` + listener + `}`,
			`meshgate_proxy_tcp_received_bytes_total{cluster="default/echo-v1:7000",` + listener + `}`,
			`meshgate_proxy_tcp_sent_bytes_total{cluster="default/echo-v1:7000",` + listener + `}`,
		} {
			if !strings.Contains(r.body, want) {
				t.Errorf("/metrics has no %s", want)
			}
		}
	})
}

// TestTLSPassthrough: a Gateway listener of protocol TLS, mode
// Passthrough, sends each TLS connection, not terminated, to the TLSRoute
// its SNI selects: the client sees the backend's own certificate.
func TestTLSPassthrough(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	shop := newTestCertificate(t, "shop backend", "shop.test")
	wild := newTestCertificate(t, "wildcard backend", "*.example.test")
	c.vars["shop"], c.vars["wild"] = tcpEcho(t, "shop", &shop), tcpEcho(t, "wild", &wild)
	c.policy("tls.yaml", `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: shop}
spec:
  ports: [{port: 443}]
  endpoints: [{address: "${shop}"}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: wild}
spec:
  ports: [{port: 443}]
  endpoints: [{address: "${wild}"}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners:
    - {name: tls, protocol: TLS, port: ${tls.port}, tls: {mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: shop}
spec:
  parentRefs: [{name: edge}]
  hostnames: [shop.test]
  rules:
    - backendRefs: [{name: shop, port: 443}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: wild}
spec:
  parentRefs: [{name: edge}]
  hostnames: ["*.example.test"]
  rules:
    - backendRefs: [{name: wild, port: 443}]
`)
	c.startControlPlane()
	c.gateway("edge", "--id", "gateway~edge~tls")
	addr := c.addr("tls")
	client := func(sni string) *tls.Config { return &tls.Config{ServerName: sni, InsecureSkipVerify: true} }
	eventually(t, 15*time.Second, "the TLS listener passes through", func() error {
		_, _, err := echoOnce(addr, "hi", client("shop.test"))
		return err
	})
	for sni, want := range map[string][2]string{
		"shop.test":        {"shop backend", "shop: ping"},
		"a.example.test":   {"wildcard backend", "wild: ping"},
		"b.c.example.test": {"wildcard backend", "wild: ping"},
	} {
		answer, subject, err := echoOnce(addr, "ping", client(sni))
		if err != nil {
			t.Fatalf("SNI %q: %v", sni, err)
		}
		if subject != want[0] || answer != want[1] {
			t.Errorf("SNI %q: certificate %q, answer %q; want %q, %q", sni, subject, answer, want[0], want[1])
		}
	}
	// No route for this SNI, nor for plaintext: the connection is closed.
	if _, _, err := echoOnce(addr, "ping", client("other.test")); err == nil {
		t.Error("SNI other.test: a handshake completed, want the connection closed")
	}
	if got, _, err := echoOnce(addr, "ping", nil); err == nil {
		t.Errorf("plaintext: answer %q, want the connection closed", got)
	}
}

// num is a numeric field of the line (-1 when absent).
func (l accessLine) num(k string) float64 {
	if f, ok := l[k].(float64); ok {
		return f
	}
	return -1
}

// TestMeshTCPService: a service whose port is TCP, behind a sidecar, is
// reached by a caller's sidecar through an outbound TCP listener
// (--outbound-tcp): the bytes cross between the sidecars over mTLS (the
// server's sidecar logs the caller's SPIFFE ID), and a SecurityPolicy rule
// on identities closes the connections of a denied caller, whose line names
// the rule.
func TestMeshTCPService(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	logFile := filepath.Join(t.TempDir(), "access.log")
	c.vars["db-app"] = tcpEcho(t, "db", nil)
	c.policy("mesh.yaml", yamlDocs(meshServices("web", "batch"), `
apiVersion: meshgate.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  accessLog: {path: "`+logFile+`"}
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: db}
spec:
  ports: [{port: 5432, protocol: TCP}]
  endpoints: [{address: "${db-in}", sidecar: true}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: db-guard}
spec:
  targetRefs: [{kind: Service, name: db}]
  rules:
    - name: no-batch
      action: DENY
      from: [{services: [batch]}]
`))
	c.startControlPlane()
	sidecar := func(svc string, extra ...string) {
		admin := c.addr("sidecar-admin-" + svc)
		args := append([]string{"sidecar", "--service", svc, "--app", c.addr(svc + "-app"),
			"--inbound", c.addr(svc + "-in"), "--outbound", c.addr(svc + "-out"), "--xds", c.xds, "--admin", admin,
			"--id", "sidecar~" + svc + "~tcp", "--token", c.token(svc), "--log-level", "debug"}, extra...)
		start(t, "sidecar "+svc, args...)
		c.waitReady(admin)
	}
	sidecar("db")
	sidecar("web", "--outbound-tcp", "db:5432="+c.addr("web-db"))
	sidecar("batch", "--outbound-tcp", "db.default:5432="+c.addr("batch-db"))

	eventually(t, 15*time.Second, "web reaches db over TCP", func() error {
		got, _, err := echoOnce(c.addr("web-db"), "select 1", nil)
		if err != nil {
			return err
		}
		if got != "db: select 1" {
			return fmt.Errorf("answer %q", got)
		}
		return nil
	})
	lines := waitLines(t, logFile, 1, "the db sidecar's line", func(l accessLine) bool {
		return l.str("proxy") == "default/db" && l.num("bytes_received") == float64(len("select 1\n"))
	})
	if l := lines[0]; !strings.HasSuffix(l.str("peer"), "/ns/default/svc/web") || l.str("upstream_cluster") != "inbound|db" {
		t.Errorf("db sidecar line %v: want the peer web's SPIFFE ID, to inbound|db", l)
	}

	// batch is denied: its connection is closed without an answer.
	eventually(t, 15*time.Second, "batch denied", func() error {
		got, _, err := echoOnce(c.addr("batch-db"), "select 2", nil)
		if err == nil {
			return fmt.Errorf("batch got %q, want the connection closed", got)
		}
		return nil
	})
	lines = waitLines(t, logFile, 1, "the denial's line", func(l accessLine) bool {
		return l.str("proxy") == "default/db" && strings.Contains(l.str("denied_by"), "no-batch")
	})
	if l := lines[0]; !strings.HasSuffix(l.str("peer"), "/ns/default/svc/batch") ||
		!strings.HasPrefix(l.str("response_code_details"), "rbac_access_denied_matched_policy[") || l["upstream_host"] != nil {
		t.Errorf("denial line %v: want batch's identity, the rule, no upstream", l)
	}
}

// TestTLSTerminate: a Gateway listener of protocol TLS, mode Terminate,
// terminates TLS with its own certificate (the client sees the gateway's,
// verified) and sends the plaintext bytes to its TLSRoute's TCP backend;
// beside it, on the same port, a Passthrough listener still forwards
// another SNI's connections untouched to a backend presenting its own.
func TestTLSTerminate(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	gatewayCert := newTestCertificate(t, "gateway certificate", "db.test")
	backendCert := newTestCertificate(t, "passthrough backend", "shop.test")
	c.vars["db"], c.vars["shop"] = tcpEcho(t, "db", nil), tcpEcho(t, "shop", &backendCert)
	c.policy("tls.yaml", tlsSecret("db-cert", gatewayCert)+`
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: db}
spec:
  ports: [{port: 5432}]
  endpoints: [{address: "${db}"}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: shop}
spec:
  ports: [{port: 443}]
  endpoints: [{address: "${shop}"}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners:
    - name: db
      protocol: TLS
      port: ${tls.port}
      hostname: db.test
      tls: {mode: Terminate, certificateRefs: [{name: db-cert}], options: {meshgate.dev/min-tls-version: "1.3"}}
    - {name: shop, protocol: TLS, port: ${tls.port}, hostname: shop.test, tls: {mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: db}
spec:
  parentRefs: [{name: edge, sectionName: db}]
  rules:
    - backendRefs: [{name: db, port: 5432}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: shop}
spec:
  parentRefs: [{name: edge, sectionName: shop}]
  rules:
    - backendRefs: [{name: shop, port: 443}]
`)
	c.startControlPlane()
	c.gateway("edge", "--id", "gateway~edge~tls")
	addr := c.addr("tls")
	terminated := &tls.Config{ServerName: "db.test", RootCAs: gatewayCert.pool}
	eventually(t, 15*time.Second, "the TLS listener terminates", func() error {
		_, _, err := echoOnce(addr, "hi", terminated)
		return err
	})
	answer, subject, err := echoOnce(addr, "ping", terminated)
	if err != nil || subject != "gateway certificate" || answer != "db: ping" {
		t.Errorf("SNI db.test: certificate %q, answer %q, error %v; want the gateway's certificate and the plaintext backend's answer", subject, answer, err)
	}
	answer, subject, err = echoOnce(addr, "ping", &tls.Config{ServerName: "shop.test", RootCAs: backendCert.pool})
	if err != nil || subject != "passthrough backend" || answer != "shop: ping" {
		t.Errorf("SNI shop.test: certificate %q, answer %q, error %v; want the backend's own certificate", subject, answer, err)
	}
	// The listener's minimum version is the gateway's to enforce.
	if _, _, err := echoOnce(addr, "ping", &tls.Config{ServerName: "db.test", RootCAs: gatewayCert.pool, MaxVersion: tls.VersionTLS12}); err == nil {
		t.Error("TLS 1.2 to a listener of minimum 1.3: a handshake completed")
	}
}
