package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshgate/meshgate/internal/netnstest"
)

// devNetNS lists the network namespaces of meshgate dev --capture.
func devNetNS(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if name, _, _ := strings.Cut(strings.TrimSpace(line), " "); strings.HasPrefix(name, "meshgate-dev-") {
			names = append(names, name)
		}
	}
	return names
}

// TestDevCapture: meshgate dev --capture refuses to run as another user
// than root; a dev killed with SIGKILL leaves its namespaces (its children
// die with it), which the next one removes, with any other leftover
// meshgate-dev-* namespace; it runs every demo service in its own namespace behind a
// capturing sidecar, and prints a curl by plain service name that, run in
// the frontend's namespace, reaches orders through the mesh (the orders
// sidecar logs the frontend's SPIFFE ID); on SIGINT the namespaces are
// removed.
func TestDevCapture(t *testing.T) {
	e2eOnly(t)
	if why := netnstest.Available(); why != "" {
		if testing.Short() {
			t.Skip(why)
		}
		t.Fatal(why)
	}
	// Not root: a clear error, nothing created.
	notRoot := exec.Command(binary, "dev", "--capture", "--xds-address", freeAddr(t), "--admin-address", freeAddr(t))
	notRoot.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if res, err := notRoot.CombinedOutput(); err == nil || !strings.Contains(string(res), "meshgate dev --capture needs root") {
		t.Errorf("dev --capture as nobody: %v: %s, want the error that it needs root", err, res)
	}
	// What a crashed dev would leave.
	if out, err := exec.Command("ip", "netns", "add", "meshgate-dev-stale").CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", "meshgate-dev-stale").Run() })
	dir := t.TempDir()
	logFile := filepath.Join(t.TempDir(), "access.log")
	policy := `
apiVersion: meshgate.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  accessLog: {path: "` + logFile + `"}
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: frontend}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "` + freeAddr(t) + `", sidecar: true, labels: {version: v1}}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: orders}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "` + freeAddr(t) + `", sidecar: true, labels: {version: v1}}]
`
	if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	const printed = "ip netns exec meshgate-dev-frontend curl http://orders/items"
	startDev := func(what string) (*exec.Cmd, chan error) {
		out := &syncBuffer{}
		cmd := exec.Command(binary, "dev", "--capture", "--config", dir, "--xds-address", freeAddr(t),
			"--admin-address", freeAddr(t), "--state-dir", t.TempDir())
		cmd.Stdout, cmd.Stderr = out, out
		// Children that outlive dev keep its output open: Wait returns
		// anyway, after a delay longer than the check that they die with
		// dev (which they would too, of SIGPIPE, once it is closed).
		cmd.WaitDelay = 30 * time.Second
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			exited <- <-exited
			if t.Failed() {
				t.Logf("output of the %s dev:\n%s", what, out.String())
			}
		})
		eventually(t, 60*time.Second, "the banner of the "+what+" dev", func() error {
			if !strings.Contains(out.String(), printed) {
				return fmt.Errorf("no %q printed yet", printed)
			}
			return nil
		})
		return cmd, exited
	}

	// A dev killed leaves its namespaces; what ran in them dies with it.
	crashed, crashedExit := startDev("crashed")
	_ = crashed.Process.Kill()
	eventually(t, 15*time.Second, "the crashed dev's children gone", func() error {
		pids, err := exec.Command("ip", "netns", "pids", "meshgate-dev-orders").CombinedOutput()
		if err != nil || strings.TrimSpace(string(pids)) != "" {
			return fmt.Errorf("processes in meshgate-dev-orders: %q, %v", pids, err)
		}
		return nil
	})
	crashedExit <- <-crashedExit
	if got := devNetNS(t); !slices.Contains(got, "meshgate-dev-orders") {
		t.Fatalf("namespaces after SIGKILL: %v, want the crashed dev's left", got)
	}

	cmd, exited := startDev("second")
	if got := devNetNS(t); strings.Contains(strings.Join(got, " "), "meshgate-dev-stale") {
		t.Errorf("namespaces %v: the leftover is still there", got)
	}
	eventually(t, 30*time.Second, "the printed curl answers 200 from orders", func() error {
		args := append(strings.Fields(printed), "-sS", "-m", "5", "-w", "\n%{http_code}")
		res, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, res)
		}
		if !strings.HasSuffix(string(res), "\n200") || !strings.Contains(string(res), `"service":"orders"`) {
			return fmt.Errorf("answer %.300s", res)
		}
		return nil
	})
	lines := waitLines(t, logFile, 1, "the orders sidecar's line", func(l accessLine) bool {
		return l.str("proxy") == "default/orders" && l.str("path") == "/items"
	})
	if peer := lines[0].str("peer"); !strings.HasSuffix(peer, "/ns/default/svc/frontend") {
		t.Errorf("orders saw peer %q, want frontend's SPIFFE ID", peer)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("dev: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("dev did not stop within 60s of SIGINT")
	}
	if got := devNetNS(t); len(got) > 0 {
		t.Errorf("namespaces after dev stopped: %v, want none", got)
	}
}
