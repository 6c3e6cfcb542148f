package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// proxylessPolicy: orders and orders-v2, gRPC servers behind sidecars
// (STRICT mTLS), web a service without endpoints (the proxyless client's
// identity); a GRPCRoute on orders sends x-version: v2 to orders-v2 and
// splits the rest 3:1; both allow web, except the method Forbidden.
const proxylessPolicy = `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: orders}
spec:
  ports: [{port: 9090, protocol: HTTP2}]
  endpoints: [{address: "${orders-in}", sidecar: true}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: orders-v2}
spec:
  ports: [{port: 9090, protocol: HTTP2}]
  endpoints: [{address: "${orders-v2-in}", sidecar: true}]
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
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: orders-callers}
spec:
  targetRefs: [{kind: Service, name: orders}, {kind: Service, name: orders-v2}]
  rules:
    - name: no-forbidden
      action: DENY
      to: [{paths: ["/` + grpcRouteService + `/Forbidden"]}]
    - name: web
      action: ALLOW
      from: [{services: [web]}]
`

// TestProxylessGRPC: an unmodified grpc-go client (xds:/// target, xDS
// credentials) in this process, bootstrapped by `meshgate bootstrap grpc`
// running as a process, calls gRPC servers behind meshgate sidecars over
// mTLS: its identity is web's (the servers' sidecars allow web and nobody
// else), the GRPCRoute's header match and weighted split are honoured, the
// SecurityPolicy's deny is PERMISSION_DENIED, and an unknown target fails
// at once with UNAVAILABLE.
func TestProxylessGRPC(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("mesh.yaml", proxylessPolicy)
	c.startControlPlane()
	for _, svc := range []string{"orders", "orders-v2"} {
		app := c.addr(svc + "-app")
		startGRPCRouteBackend(t, svc, app)
		c.sidecar(svc, app, c.addr(svc+"-in"), c.addr(svc+"-out"))
	}

	dir := t.TempDir()
	bootstrapFile := filepath.Join(dir, "bootstrap.json")
	start(t, "bootstrap grpc web", "bootstrap", "grpc", "--service", "web", "--token", c.token("web"),
		"--control-plane", c.xds, "--dir", dir, "--out", bootstrapFile)
	var bootstrap []byte
	eventually(t, 15*time.Second, "the bootstrap written", func() error {
		var err error
		bootstrap, err = os.ReadFile(bootstrapFile)
		return err
	})
	for _, f := range []string{"cert.pem", "key.pem", "ca.pem"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("bootstrap grpc wrote no %s: %v", f, err)
		}
	}

	resolver, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		t.Fatalf("grpc-go refuses the bootstrap: %v\n%s", err, bootstrap)
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	channel := func(target string) *grpc.ClientConn {
		conn, err := grpc.NewClient(target, grpc.WithResolvers(resolver), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	call := func(conn *grpc.ClientConn, method string, md ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
		out := new(wrapperspb.StringValue)
		err := conn.Invoke(ctx, "/"+grpcRouteService+"/"+method, wrapperspb.String("hi"), out)
		return out.GetValue(), err
	}

	orders := channel("xds:///orders:9090")
	t.Run("mTLS as web", func(t *testing.T) {
		// The sidecars allow web alone: an answer means they verified the
		// client's certificate as spiffe://…/svc/web.
		eventually(t, 30*time.Second, "a call over xDS", func() error {
			_, err := call(orders, "Echo", "x-version", "v2")
			return err
		})
		got, err := call(orders, "Echo")
		if err != nil || !strings.HasPrefix(got, "orders") {
			t.Fatalf("Echo = %q, %v", got, err)
		}
		st, err := c.status()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, p := range st.Proxies {
			if p.Role == "proxyless" && p.Name == "web" && strings.HasSuffix(p.SPIFFEID, "/ns/default/svc/web") {
				found = true
			}
		}
		if !found {
			t.Errorf("the control plane does not show the proxyless client web: %+v", st.Proxies)
		}
	})
	t.Run("header match", func(t *testing.T) {
		for range 10 {
			if got, err := call(orders, "Echo", "x-version", "v2"); err != nil || !strings.HasPrefix(got, "orders-v2:") {
				t.Fatalf("Echo with x-version: v2 = %q, %v; want orders-v2", got, err)
			}
		}
	})
	t.Run("weighted split", func(t *testing.T) {
		const calls = 200
		v2 := 0
		for range calls {
			got, err := call(orders, "Echo")
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(got, "orders-v2:") {
				v2++
			}
		}
		// 3:1: 50 of 200 on average (sd 6.1); ±25 is 4 sd.
		if v2 < 25 || v2 > 75 {
			t.Errorf("orders-v2 served %d of %d calls, want about 50", v2, calls)
		}
	})
	t.Run("SecurityPolicy deny", func(t *testing.T) {
		_, err := call(orders, "Forbidden", "x-version", "v1")
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("Forbidden = %v, want PERMISSION_DENIED", err)
		}
	})
	t.Run("unknown target", func(t *testing.T) {
		_, err := call(channel("xds:///nosuch:9090"), "Echo")
		// (Not the listener resource error of the client's resource timeout.)
		if status.Code(err) != codes.Unavailable || strings.Contains(err.Error(), "listener resource error") {
			t.Errorf("call to an unknown target = %v, want UNAVAILABLE at once (no virtual host)", err)
		}
	})
}
