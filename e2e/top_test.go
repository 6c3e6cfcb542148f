package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// topRow is a row of meshgate top -o json.
type topRow struct {
	Service           string   `json:"service"`
	Cluster           string   `json:"cluster"`
	Proxy             string   `json:"proxy"`
	Route             string   `json:"route"`
	Requests          float64  `json:"requests"`
	ServerErrors      float64  `json:"serverErrors"`
	RequestsPerSecond float64  `json:"requestsPerSecond"`
	SuccessRate       *float64 `json:"successRate"`
	P50Seconds        *float64 `json:"p50Seconds"`
	P99Seconds        *float64 `json:"p99Seconds"`
	// --by consumer
	Kind        string  `json:"kind"`
	Consumer    string  `json:"consumer"`
	RateLimited float64 `json:"rateLimited"`
}

// topView is meshgate top -o json's answer.
type topView struct {
	By      string   `json:"by"`
	Rows    []topRow `json:"rows"`
	Proxies []struct {
		ID    string `json:"id"`
		Role  string `json:"role"`
		Admin string `json:"admin"`
		Error string `json:"error"`
	} `json:"proxies"`
}

// topWhile runs meshgate top --once with args over interval and calls send
// once its first scrape is done. ok is false when the interval ended before
// send returned (the requests were not all inside it).
func (c *cluster) topWhile(interval time.Duration, send func(), args ...string) (view topView, ok bool) {
	c.t.Helper()
	args = append([]string{"top", "--once", "-o", "json", "--interval", interval.String(),
		"--admin", c.admin, "--data-dir", c.dataDir}, args...)
	cmd := exec.Command(binary, args...)
	var stdout, stderrCopy bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	lines := bufio.NewScanner(io.TeeReader(stderr, &stderrCopy))
	started := false
	for !started && lines.Scan() {
		started = strings.Contains(lines.Text(), "first scrape")
	}
	if !started {
		_ = cmd.Wait()
		c.t.Fatalf("meshgate top ended before its first scrape: %s", stderrCopy.String())
	}
	done := make(chan error, 1)
	go func() {
		_, _ = io.Copy(&stderrCopy, stderr)
		done <- cmd.Wait()
	}()
	send()
	select {
	case <-done:
		return topView{}, false
	default:
	}
	if err := <-done; err != nil {
		c.t.Fatalf("meshgate %s: %v: %s", strings.Join(args, " "), err, stderrCopy.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), &view); err != nil {
		c.t.Fatalf("meshgate top -o json: %v: %s", err, stdout.String())
	}
	return view, true
}

// TestTopShowsTheMeshTraffic: 10 requests through gateway → sidecar → app,
// 2 of them answered 500 by the app, appear in meshgate top --once -o json
// as 10 requests to the frontend at a rate above 0 and an 80% success rate,
// on the gateway's cluster and on the sidecar's inbound one; the control
// plane's /status tells top where each proxy's metrics are; without a
// control plane top says so.
func TestTopShowsTheMeshTraffic(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("mesh.yaml", meshPolicy())
	c.startControlPlane()
	m := startMesh(c, c.sidecar, []string{"frontend"})
	c.expectEventually("frontend via gateway", 15*time.Second, m.gw+"/hello", nil, servedBy("frontend"))

	send := func() {
		for i := range 10 {
			path, want := "/hello", 200
			if i%5 == 4 {
				path, want = "/status/500", 500
			}
			r, err := get(m.gw + path)
			if err != nil || r.status != want {
				t.Errorf("request %d %s: %v %v, want %d", i, path, r, err, want)
			}
		}
	}
	var view topView
	// The interval must hold the 10 requests: a longer one if the machine
	// was too slow for it.
	for interval := 3 * time.Second; ; interval *= 2 {
		v, ok := c.topWhile(interval, send, "--service", "frontend")
		if ok {
			view = v
			break
		}
		if interval > 20*time.Second {
			t.Fatalf("10 requests did not fit in a %s interval", interval)
		}
		t.Logf("the requests outlasted the %s interval; again with a longer one", interval)
	}

	if len(view.Proxies) != 2 {
		t.Errorf("top scraped %d proxies, want 2 (gateway, frontend sidecar): %+v", len(view.Proxies), view.Proxies)
	}
	admins := m.admins()
	for _, p := range view.Proxies {
		if p.Error != "" {
			t.Errorf("proxy %s: %s", p.ID, p.Error)
		}
		if p.Admin != admins["gateway"] && p.Admin != admins["frontend sidecar"] {
			t.Errorf("proxy %s: admin %q, want one of %v", p.ID, p.Admin, admins)
		}
	}
	for _, cluster := range []string{"default/frontend:80", "inbound|frontend"} {
		var row *topRow
		for i := range view.Rows {
			if view.Rows[i].Cluster == cluster {
				row = &view.Rows[i]
			}
		}
		if row == nil {
			t.Errorf("no row for %s: %+v", cluster, view.Rows)
			continue
		}
		if row.Service != "default/frontend" || row.Requests != 10 || row.ServerErrors != 2 || row.RequestsPerSecond <= 0 {
			t.Errorf("%s: %+v, want default/frontend with 10 requests, 2 server errors, a rate > 0", cluster, *row)
		}
		if row.SuccessRate == nil || *row.SuccessRate != 0.8 {
			t.Errorf("%s: success rate %v, want 0.8", cluster, fmtPtr(row.SuccessRate))
		}
		if row.P50Seconds == nil || row.P99Seconds == nil || *row.P50Seconds <= 0 || *row.P99Seconds < *row.P50Seconds {
			t.Errorf("%s: p50 %v p99 %v", cluster, fmtPtr(row.P50Seconds), fmtPtr(row.P99Seconds))
		}
	}

	t.Run("by route, one role, as a table", func(t *testing.T) {
		out, err := c.cli("top", "--once", "--interval", "200ms", "--by", "route", "--role", "gateway")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "PROXY") || !strings.Contains(out, "default/edge") || strings.Contains(out, "default/frontend ") {
			t.Errorf("meshgate top --by route --role gateway:\n%s", out)
		}
	})

	t.Run("no control plane", func(t *testing.T) {
		cmd := exec.Command(binary, "top", "--once", "--admin", freeAddr(t), "--admin-token", "x")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "no control plane admin API") {
			t.Errorf("meshgate top without a control plane: %v: %s", err, out)
		}
	})
}

func fmtPtr(f *float64) string {
	if f == nil {
		return "null"
	}
	return fmt.Sprint(*f)
}
