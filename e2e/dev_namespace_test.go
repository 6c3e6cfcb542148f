package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDevNamespacedService runs `meshgate dev` with a Gateway and a Service
// outside the default namespace: the Service's sidecar must get its
// configuration (its node id carries the namespace), so that a request through
// the gateway reaches the demo app behind it.
func TestDevNamespacedService(t *testing.T) {
	e2eOnly(t)
	t.Parallel()
	c := newCluster(t) // only for its free addresses and ${} expansion
	dir := t.TempDir()
	policy := c.expand(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: meshgate
  listeners:
    - {name: http, protocol: HTTP, port: ${gw.port}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: carts, namespace: shop}
spec:
  parentRefs: [{name: edge}]
  rules:
    - backendRefs: [{name: carts, port: 80}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: carts, namespace: shop}
spec:
  ports: [{name: http, port: 80}]
  endpoints: [{address: "${carts}", sidecar: true}]
`)
	if err := os.WriteFile(filepath.Join(dir, "shop.yaml"), []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	cmd := exec.Command(binary, "dev", "--config", dir, "--xds-address", freeAddr(t), "--admin-address", freeAddr(t))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("dev output:\n%s", out.String())
		}
	})
	gw := "http://" + c.addr("gw")
	eventually(t, 30*time.Second, "carts (namespace shop) through the gateway and its sidecar", func() error {
		r, err := get(gw + "/")
		if err != nil {
			return err
		}
		if strings.Contains(out.String(), "exited") {
			return errors.New("dev exited")
		}
		return servedBy("carts")(r)
	})
}
