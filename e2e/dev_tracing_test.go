package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDevJaeger: meshgate dev --jaeger sends every proxy's spans to a real
// Jaeger (the quickstart has no spec.tracing), prints where to look, and a
// call through the gateway, frontend and orders is one whole trace there.
func TestDevJaeger(t *testing.T) {
	e2eOnly(t)
	t.Parallel()
	j := startJaeger(t)
	dir, gw, _ := quickstartCopy(t)
	cmd := exec.Command(binary, "dev", "--config", dir, "--xds-address", freeAddr(t), "--admin-address", freeAddr(t),
		"--jaeger", j.otlpGRPC, "--jaeger-ui", "http://"+j.query, "--state-dir", t.TempDir())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	banner := &syncBuffer{}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			banner.Write([]byte(sc.Text() + "\n"))
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("dev stdout:\n%s\ndev stderr:\n%s", banner.String(), logs.String())
		}
	})
	eventually(t, 30*time.Second, "dev prints where traces go", func() error {
		if !strings.Contains(banner.String(), "traces") {
			return errors.New("no tracing line yet")
		}
		return nil
	})
	for _, want := range []string{"OTLP/gRPC to " + j.otlpGRPC, "100% of new traces sampled", "look at them in Jaeger: http://" + j.query} {
		if !strings.Contains(banner.String(), want) {
			t.Errorf("banner lacks %q", want)
		}
	}

	var traceID string
	eventually(t, 15*time.Second, "a traced call through the quickstart", func() error {
		r, err := get(gw + "/call/orders/items")
		if err != nil {
			return err
		}
		if err := servedBy("frontend")(r); err != nil {
			return err
		}
		if r.reply.Upstream == nil {
			return fmt.Errorf("frontend did not reach orders: %+v", r.reply)
		}
		tp := r.reply.Upstream.Headers["traceparent"]
		if !strings.HasSuffix(tp, "-01") {
			return fmt.Errorf("orders got traceparent %q, want a sampled one", tp)
		}
		traceID = traceIDOf(tp)
		return nil
	})
	eventually(t, 20*time.Second, "the call's trace whole in jaeger", func() error {
		tr, err := j.trace(traceID)
		if err != nil {
			return err
		}
		services := map[string]bool{}
		for _, s := range tr.Spans {
			services[tr.Processes[s.ProcessID].ServiceName] = true
		}
		if len(tr.Spans) < spansPerCall || !services["edge"] || !services["frontend"] || !services["orders"] {
			return fmt.Errorf("%d spans from %v, want %d from edge, frontend and orders", len(tr.Spans), services, spansPerCall)
		}
		return nil
	})
}
