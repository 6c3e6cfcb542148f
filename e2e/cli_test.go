package e2e

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/examples/demoapp"
)

// TestValidate runs `meshgate validate` on good and bad policy.
func TestValidate(t *testing.T) {
	e2eOnly(t)
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: edge}]
  rules:
    - backendRefs:
        - {name: ordrs, port: 80}
      colour: blue
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary, "validate", "-f", bad).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("validate of a bad file: err %v, want exit 1; output:\n%s", err, out)
	}
	for _, want := range []string{
		bad + `:5: spec.parentRefs[0].name: gateway "edge" not found`,
		bad + `:8: spec.rules[0].backendRefs[0].name: service "ordrs" not found`,
		bad + `:9: spec.rules[0].colour: unknown field`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	out, err = exec.Command(binary, "validate", "-f", "../examples/quickstart").CombinedOutput()
	if err != nil {
		t.Fatalf("validate quickstart: %v\n%s", err, out)
	}
	if !strings.HasPrefix(string(out), "ok") {
		t.Errorf("validate quickstart printed %q, want a summary starting with ok", out)
	}
}

// quickstartCopy copies examples/quickstart to a temporary directory with
// its fixed loopback ports (the gateway's listener, the sidecars' inbound
// addresses) moved to free ones: another quickstart running on the machine
// (make run) holds the fixed ones. It returns the directory, the gateway's
// URL, and the new address of each old address.
func quickstartCopy(t *testing.T) (dir, gatewayURL string, moved map[string]string) {
	t.Helper()
	const src = "../examples/quickstart"
	files, err := filepath.Glob(filepath.Join(src, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("quickstart files: %v %v", files, err)
	}
	dir = t.TempDir()
	moved = map[string]string{}
	loopback := regexp.MustCompile(`127\.0\.0\.1:[0-9]+`)
	listenerPort := regexp.MustCompile(`(?m)^(\s+port:\s*)([0-9]+)\s*$`)
	devHTTPSPort := regexp.MustCompile(`(meshgate.dev/dev-https-port:\s*")([0-9]+)"`)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		if filepath.Base(f) == "gateway.yaml" {
			text = listenerPort.ReplaceAllStringFunc(text, func(line string) string {
				m := listenerPort.FindStringSubmatch(line)
				if gatewayURL != "" {
					t.Fatalf("%s: more than one listener port; the test knows one", f)
				}
				addr := freeAddr(t)
				moved["127.0.0.1:"+m[2]] = addr // the listener's address, in comments too
				gatewayURL = "http://" + addr
				_, port, _ := net.SplitHostPort(addr)
				return m[1] + port
			})
			// The HTTPS listener dev adds (its certificate's own port).
			text = devHTTPSPort.ReplaceAllStringFunc(text, func(line string) string {
				m := devHTTPSPort.FindStringSubmatch(line)
				addr := freeAddr(t)
				moved["127.0.0.1:"+m[2]] = addr
				_, port, _ := net.SplitHostPort(addr)
				return m[1] + port + `"`
			})
		}
		text = loopback.ReplaceAllStringFunc(text, func(addr string) string {
			if moved[addr] == "" {
				moved[addr] = freeAddr(t)
			}
			return moved[addr]
		})
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if gatewayURL == "" || len(moved) == 0 {
		t.Fatalf("no gateway listener port or no loopback address found in %s: the test's rewrite is out of date", src)
	}
	return dir, gatewayURL, moved
}

// TestDev runs `meshgate dev` (the README's `make run`) on a copy of the
// quickstart moved to free ports, and tries the commands it prints.
func TestDev(t *testing.T) {
	e2eOnly(t)
	t.Parallel()
	dir, gw, moved := quickstartCopy(t)
	ordersSidecar := moved["127.0.0.1:21011"]
	if ordersSidecar == "" {
		t.Fatalf("the quickstart has no endpoint 127.0.0.1:21011 (orders' sidecar) any more: %v", moved)
	}
	admin := freeAddr(t)
	stateDir := t.TempDir()
	cmd := exec.Command(binary, "dev", "--config", dir,
		"--xds-address", freeAddr(t), "--admin-address", admin, "--state-dir", stateDir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	banner := &syncBuffer{}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			banner.Write([]byte(sc.Text() + "\n"))
		}
		done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("dev stdout:\n%s\ndev stderr:\n%s", banner.String(), logs.String())
		}
	})

	eventually(t, 30*time.Second, "dev prints its banner", func() error {
		if !strings.Contains(banner.String(), "curl") {
			return errors.New("no banner yet")
		}
		return nil
	})
	for _, want := range []string{"curl " + gw + "/", "x-canary: always", "/call/orders/items"} {
		if !strings.Contains(banner.String(), want) {
			t.Errorf("banner lacks %q", want)
		}
	}
	eventually(t, 10*time.Second, "frontend through the gateway", func() error {
		r, err := get(gw + "/")
		if err != nil {
			return err
		}
		return servedBy("frontend")(r)
	})
	// HTTPS on the port of the Gateway's annotation, with the certificate
	// dev made in its state directory, as the banner's curl command says.
	httpsURL := "https://" + moved["127.0.0.1:8443"]
	caFile := filepath.Join(stateDir, "dev-tls.crt")
	if want := "curl --cacert " + caFile + " " + httpsURL + "/"; !strings.Contains(banner.String(), want) {
		t.Errorf("banner lacks %q", want)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatalf("dev's certificate: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	eventually(t, 10*time.Second, "frontend through the gateway's HTTPS listener", func() error {
		resp, err := httpsClient("", roots, false).Get(httpsURL + "/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.TLS == nil {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})

	// The API gateway routes, as the banner's curl commands try them: an
	// API key, a cached route.
	if want := "curl -H 'X-API-Key: quickstart-key' " + gw + "/api/orders"; !strings.Contains(banner.String(), want) {
		t.Errorf("banner lacks %q", want)
	}
	eventually(t, 10*time.Second, "the API-key route with the quickstart's key", func() error {
		r, err := get(gw+"/api/orders", "X-API-Key: quickstart-key")
		if err != nil {
			return err
		}
		if r.status != http.StatusOK || r.reply.Headers["x-consumer"] != "demo" {
			return fmt.Errorf("status %d, headers %v", r.status, r.reply.Headers)
		}
		return nil
	})
	if r, err := get(gw + "/api/orders"); err != nil || r.status != http.StatusUnauthorized {
		t.Errorf("the API-key route without a key: %v %+v, want 401", err, r)
	}
	// The JWT route, as the banner's curl commands try it: dev's token
	// (signed with the key it made in its state directory), and none.
	if want := "curl -i " + gw + "/jwt"; !strings.Contains(banner.String(), want) {
		t.Errorf("banner lacks %q", want)
	}
	m := regexp.MustCompile(`curl -H 'Authorization: Bearer ([A-Za-z0-9_.-]+)' ` + regexp.QuoteMeta(gw) + `/jwt`).FindStringSubmatch(banner.String())
	if m == nil {
		t.Fatalf("banner lacks the curl of the JWT route with a token")
	}
	if _, err := os.Stat(filepath.Join(stateDir, "dev-jwks.json")); err != nil {
		t.Errorf("dev's JWKS file: %v", err)
	}
	eventually(t, 10*time.Second, "the JWT route with dev's token", func() error {
		r, err := get(gw+"/jwt", "Authorization: Bearer "+m[1])
		if err != nil {
			return err
		}
		if r.status != http.StatusOK || r.reply.Headers["x-user"] != "demo-user" {
			return fmt.Errorf("status %d, headers %v", r.status, r.reply.Headers)
		}
		return nil
	})
	if r, err := get(gw + "/jwt"); err != nil || r.status != http.StatusUnauthorized {
		t.Errorf("the JWT route without a token: %v %+v, want 401", err, r)
	}
	var xcache []string
	for range 2 {
		r, err := get(gw + "/cached")
		if err != nil {
			t.Fatal(err)
		}
		xcache = append(xcache, r.header.Get("X-Cache"))
	}
	if fmt.Sprint(xcache) != "[MISS HIT]" {
		t.Errorf("/cached twice: X-Cache %v, want [MISS HIT]", xcache)
	}

	r, err := get(gw+"/orders", "x-canary: always")
	if err != nil || r.reply.Service != "orders-v2" {
		t.Errorf("canary header: %v %+v", err, r)
	}
	seen := map[string]int{}
	for i := 0; i < 200; i++ {
		r, err := get(gw + "/orders")
		if err != nil {
			t.Fatal(err)
		}
		seen[r.reply.Service]++
	}
	if seen["orders"] < 150 || seen["orders-v2"] == 0 {
		t.Errorf("90/10 split over 200 requests: %v", seen)
	}
	r, err = get(gw+"/call/orders/items", "x-version: v2")
	if err != nil || r.reply.Upstream == nil || r.reply.Upstream.Service != "orders-v2" {
		t.Errorf("mesh call with x-version: v2: %v %+v", err, r)
	}

	// The quickstart's TrafficPolicy (retries and outlier detection for
	// the canary) is served, both its targets resolved.
	out, err := exec.Command(binary, "get", "trafficpolicy", "orders-resilient", "-o", "yaml", "--admin", admin).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "type: Accepted") || !strings.Contains(string(out), "status: \"True\"") || strings.Contains(string(out), "status: \"False\"") {
		t.Errorf("meshgate get trafficpolicy orders-resilient: %v\n%s", err, out)
	}

	// Secure by default: the quickstart's policy and STRICT mTLS hold.
	r, err = get(gw + "/call/orders/internal/x")
	if err != nil || r.reply.UpstreamStatus != http.StatusForbidden {
		t.Errorf("frontend calling a denied path of orders: %v %+v", err, r)
	}
	if _, err := get("http://" + ordersSidecar + "/orders"); err == nil {
		t.Error("plaintext request to orders' STRICT sidecar got an HTTP answer")
	}

	// gRPC without a sidecar, as the banner says: a grpc-go client with
	// the bootstrap dev wrote for grpc-client (its xDS resolver and
	// credentials, as examples/proxyless-client) calls greeter through its
	// sidecar, which allows grpc-client alone: the answer proves the mTLS
	// identity dev enrolled.
	pm := regexp.MustCompile(`GRPC_XDS_BOOTSTRAP=(\S+) go run \./examples/proxyless-client (xds:///\S+)`).FindStringSubmatch(banner.String())
	if pm == nil {
		t.Fatalf("banner lacks the proxyless gRPC command")
	}
	if want := filepath.Join(stateDir, "proxyless", "grpc-client", "bootstrap.json"); pm[1] != want || pm[2] != "xds:///greeter:9090" {
		t.Errorf("proxyless command: bootstrap %s, target %s; want %s, xds:///greeter:9090", pm[1], pm[2], want)
	}
	bootstrap, err := os.ReadFile(pm[1])
	if err != nil {
		t.Fatalf("the gRPC bootstrap of the banner: %v", err)
	}
	resolver, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		t.Fatalf("grpc-go refuses dev's bootstrap: %v\n%s", err, bootstrap)
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(pm[2], grpc.WithResolvers(resolver), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	eventually(t, 30*time.Second, "greeter called without a sidecar", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out := new(wrapperspb.StringValue)
		if err := conn.Invoke(ctx, demoapp.GreeterHello, wrapperspb.String("dev"), out); err != nil {
			return err
		}
		if want := "hello dev from greeter v1"; out.GetValue() != want {
			return fmt.Errorf("Hello = %q, want %q", out.GetValue(), want)
		}
		return nil
	})

	// Ctrl-C stops everything cleanly.
	_ = cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("dev exited with %v after Ctrl-C", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("dev did not stop within 15s of Ctrl-C")
	}
	if !strings.Contains(banner.String(), "stopped") {
		t.Errorf("dev did not say it stopped")
	}
}
