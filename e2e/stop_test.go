package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSecondSignalStopsAtOnce: during the drain delay the gateway keeps
// serving with /ready failing; a second SIGTERM ends the stop at once
// (long before the minute the delay would last).
func TestSecondSignalStopsAtOnce(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("edge.yaml", yamlDocs(edgeGateway, staticServices("app")))
	c.policy("route.yaml", routeTo("app"))
	c.startControlPlane()
	c.app("app", "app", "v1", "")
	gw := c.gateway("edge", "--drain-delay", "1m")
	admin := c.addr("gateway-admin-edge")
	url := "http://" + c.addr("gw") + "/"
	c.expectEventually("the app through the gateway", 15*time.Second, url, nil, servedBy("app"))

	if err := gw.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "/ready to fail with draining", func() error {
		r, err := get("http://" + admin + "/ready")
		if err != nil {
			return err
		}
		if r.status != http.StatusServiceUnavailable || strings.TrimSpace(r.body) != "draining" {
			return fmt.Errorf("%d %q", r.status, r.body)
		}
		return nil
	})
	if r, err := get(url); err != nil || r.status != http.StatusOK {
		t.Errorf("during the drain delay: %v %+v; want served", err, r)
	}
	if err := gw.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the gateway to exit on the second signal", func() error {
		if !gw.exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	if !strings.Contains(gw.out.String(), "second signal during the graceful stop") {
		t.Error("the second signal was not logged")
	}
}
