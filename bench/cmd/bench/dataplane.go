package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Workload titles, in report order.
const (
	wlTiny   = "(a) HTTP/1.1 keep-alive, tiny body, max rate (wrk)"
	wlLarge  = "(b) HTTP/1.1 keep-alive, 16 KiB body, max rate (wrk)"
	wlFixed  = "(c1) fixed 1000 req/s (fortio)"
	wlHalf   = "(c2) fixed 50% of nginx's max rate (fortio)"
	wlH2     = "(d) HTTP/2 h2c, max rate (h2load; p50 column = mean)"
	wlMesh   = "(e) mesh path: client → sidecar outbound → sidecar inbound → app, fixed rate (fortio)"
	fixedQPS = 1000
)

// dataPlane runs workloads (a)–(h). Contenders run one at a time so that
// idle ones take no CPU from the measured one.
func (r *runner) dataPlane(ctx context.Context, skip map[string]bool) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("own executable: %w", err)
	}
	backendAddr, err := freeAddr()
	if err != nil {
		return err
	}
	be, err := r.procs.start("backend", self, []string{"backend", "-addr", backendAddr}, nil)
	if err != nil {
		return err
	}
	defer be.stop()
	if err := waitHTTP(ctx, "http://"+backendAddr+pathTiny, "", 10*time.Second, be); err != nil {
		return err
	}
	env, err := r.startControlplane(ctx, backendAddr)
	if err != nil {
		return fmt.Errorf("meshgate control plane: %w", err)
	}
	defer env.cp.stop()

	var errs []error
	if !skip["dataplane"] {
		starts := []struct {
			name  string
			start func() (*contender, error)
		}{
			{"nginx", func() (*contender, error) { return r.startNginx(ctx, backendAddr) }},
			{"direct", func() (*contender, error) {
				u := "http://" + backendAddr
				return &contender{name: "direct", h1: u, h2: u, stop: func() {}}, nil
			}},
			{"meshgate", func() (*contender, error) { return r.startMeshgateGateway(ctx, env, "meshgate") }},
			{"meshgate-std", func() (*contender, error) { return r.startMeshgateGateway(ctx, env, "meshgate-std") }},
			{"meshgate-baseline", func() (*contender, error) { return r.startMeshgateGateway(ctx, env, "meshgate-baseline") }},
			{"haproxy", func() (*contender, error) { return r.startHAProxy(ctx, backendAddr) }},
			{"caddy", func() (*contender, error) { return r.startCaddy(ctx, backendAddr) }},
		}
		for _, s := range starts {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if r.contenders != nil && !r.contenders[s.name] {
				continue
			}
			c, err := s.start()
			if err != nil {
				r.skipContender(s.name, err)
				if !isSkipped(err) {
					errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
				}
				if c != nil {
					c.stop()
				}
				continue
			}
			if err := r.measureContender(ctx, c); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
			}
			c.stop()
		}
	}
	if !skip["https"] && ctx.Err() == nil {
		if err := r.httpsRows(ctx, env, backendAddr); err != nil {
			errs = append(errs, fmt.Errorf("https: %w", err))
		}
	}
	if !skip["grpc"] && ctx.Err() == nil {
		if err := r.grpcWorkload(ctx, env); err != nil {
			errs = append(errs, fmt.Errorf("grpc: %w", err))
		}
	}
	if !skip["observability"] && ctx.Err() == nil && (r.contenders == nil || r.contenders["meshgate"]) {
		if err := r.observability(ctx, env, backendAddr); err != nil {
			errs = append(errs, fmt.Errorf("observability: %w", err))
		}
	}
	if !skip["resilience"] && ctx.Err() == nil && (r.contenders == nil || r.contenders["meshgate"]) {
		if err := r.resilience(ctx, env); err != nil {
			errs = append(errs, fmt.Errorf("resilience: %w", err))
		}
	}
	if !skip["ratelimit"] && ctx.Err() == nil && (r.contenders == nil || r.contenders["meshgate"]) {
		if err := r.rateLimit(ctx, env); err != nil {
			errs = append(errs, fmt.Errorf("rate limit: %w", err))
		}
	}
	if !skip["jwt"] && ctx.Err() == nil && (r.contenders == nil || r.contenders["meshgate"]) {
		if err := r.jwtValidation(ctx, env); err != nil {
			errs = append(errs, fmt.Errorf("jwt: %w", err))
		}
	}
	if !skip["cache"] && ctx.Err() == nil && (r.contenders == nil || r.contenders["meshgate"]) {
		if err := r.responseCache(ctx, env, backendAddr); err != nil {
			errs = append(errs, fmt.Errorf("response cache: %w", err))
		}
	}
	if !skip["mesh"] && ctx.Err() == nil {
		if err := r.meshPath(ctx, env, backendAddr); err != nil && toolMissing(err) {
			r.table.section(wlMesh, "direct").rows = append(r.table.section(wlMesh, "direct").rows,
				row{contender: "meshgate sidecars", note: "not run: " + oneLine(err)})
		} else if err != nil {
			r.table.section(wlMesh, "direct").rows = append(r.table.section(wlMesh, "direct").rows,
				row{contender: "meshgate sidecars", note: "failed: " + oneLine(err)})
			errs = append(errs, fmt.Errorf("mesh path: %w", err))
		}
	}
	if !skip["capture"] && ctx.Err() == nil && (r.contenders == nil || r.contenders["meshgate"]) {
		if err := r.captureSection(ctx, env, backendAddr); err != nil {
			errs = append(errs, fmt.Errorf("capture: %w", err))
		}
	}
	return errors.Join(errs...)
}

// isSkipped reports whether a contender could not start for a reason that
// is not meshgate's: marked errSkipped, or its binary is not installed.
func isSkipped(err error) bool {
	var skipped errSkipped
	return errors.As(err, &skipped) || toolMissing(err)
}

// toolMissing reports whether err is a binary that is not installed (a
// contender or a load generator): reported as not run, never a failure.
func toolMissing(err error) bool {
	var pathErr *fs.PathError
	return errors.Is(err, exec.ErrNotFound) ||
		errors.As(err, &pathErr) && pathErr.Op == "fork/exec" && errors.Is(pathErr.Err, fs.ErrNotExist)
}

// skipContender records a contender that could not run in every section.
func (r *runner) skipContender(name string, err error) {
	r.log.Warn("contender skipped", "contender", name, "error", err)
	for _, title := range []string{wlTiny, wlLarge, wlFixed, wlHalf, wlH2} {
		s := r.table.section(title, "nginx")
		s.rows = append(s.rows, row{contender: name, note: "not run: " + oneLine(err)})
	}
}

// measureContender runs workloads (a)–(d) against one running contender.
func (r *runner) measureContender(ctx context.Context, c *contender) error {
	r.log.Info("measuring", "contender", c.name, "url", c.h1)
	if r.mode.warmup > 0 {
		if _, out, err := runWrk(ctx, c.h1+pathTiny, r.conns, r.cores, r.mode.warmup); err != nil {
			return fmt.Errorf("warm-up: %w\n%s", err, out)
		}
	}
	var errs []error
	measure := func(title string, load func() (loadResult, string, error)) {
		s := r.table.section(title, "nginx")
		var before usage
		if c.measured != nil {
			resetPeakRSS(c.measured.pgid())
			before = sampleGroup(c.measured.pgid())
		}
		start := time.Now()
		res, out, err := load()
		elapsed := time.Since(start)
		if err != nil && toolMissing(err) { // the load generator, not the contender
			s.rows = append(s.rows, row{contender: c.name, note: "not run: " + oneLine(err)})
			r.log.Warn("workload not run", "workload", title, "error", err)
			return
		}
		if err != nil {
			s.rows = append(s.rows, row{contender: c.name, note: "failed: " + oneLine(err)})
			errs = append(errs, fmt.Errorf("%s: %w\n%s", title, err, out))
			return
		}
		rw := row{contender: c.name, res: res}
		if c.measured != nil {
			after := sampleGroup(c.measured.pgid())
			if n := requestsOf(res, elapsed); n > 0 {
				rw.cpuMsPer1k = (after.cpuSeconds - before.cpuSeconds) * 1000 / (n / 1000)
			}
			rw.rssMiB = float64(after.peakRSS) / (1 << 20)
		}
		r.log.Info("measured", "contender", c.name, "workload", title, "rps", int(res.rps), "p99ms", res.p99)
		s.rows = append(s.rows, rw)
	}
	measure(wlTiny, func() (loadResult, string, error) {
		stopProfile := r.startProfile(ctx, c, strings.Replace(c.name, "meshgate", "gateway", 1)) // gateway, gateway-std
		defer stopProfile()
		return runWrk(ctx, c.h1+pathTiny, r.conns, r.cores, r.mode.duration)
	})
	measure(wlLarge, func() (loadResult, string, error) {
		return runWrk(ctx, c.h1+pathLarge, r.conns, r.cores, r.mode.duration)
	})
	measure(wlFixed, func() (loadResult, string, error) {
		return runFortio(ctx, r.fortio, c.h1+pathTiny, "", fixedQPS, 16, r.mode.duration)
	})
	half := 0.0
	if n, ok := r.table.section(wlTiny, "nginx").find("nginx"); ok {
		half = n.res.rps / 2
	}
	if half > 0 {
		measure(wlHalf, func() (loadResult, string, error) {
			return runFortio(ctx, r.fortio, c.h1+pathTiny, "", half, 16, r.mode.duration)
		})
		s := r.table.section(wlHalf, "nginx")
		if len(s.notes) == 0 {
			s.notes = append(s.notes, fmt.Sprintf("Target rate: %.0f req/s.", half))
		}
	}
	if c.h2 != "" {
		measure(wlH2, func() (loadResult, string, error) {
			return runH2load(ctx, c.h2+pathTiny, r.conns, 10, r.cores, r.mode.duration)
		})
	}
	return errors.Join(errs...)
}

// requestsOf is the number of requests a result covers.
func requestsOf(res loadResult, elapsed time.Duration) float64 {
	if res.requests > 0 {
		return res.requests
	}
	return res.rps * elapsed.Seconds()
}

// meshPath runs workload (e): the same fixed rate direct and through two
// sidecars; the latency the mesh adds is the difference.
func (r *runner) meshPath(ctx context.Context, env *meshgateEnv, backend string) error {
	client, app, err := r.startSidecars(ctx, env)
	if err != nil {
		return err
	}
	defer client.stop()
	defer app.stop()
	s := r.table.section(wlMesh, "direct")
	idle := rssOf(app.measured.pgid())
	qps := float64(fixedQPS)
	direct, out, err := runFortio(ctx, r.fortio, "http://"+backend+pathTiny, "", qps, 16, r.mode.duration)
	if err != nil {
		return fmt.Errorf("direct: %w\n%s", err, out)
	}
	s.rows = append(s.rows, row{contender: "direct", res: direct})
	resetPeakRSS(client.measured.pgid())
	resetPeakRSS(app.measured.pgid())
	b1, b2 := sampleGroup(client.measured.pgid()), sampleGroup(app.measured.pgid())
	stopProfile := r.startProfile(ctx, client, "sidecar-client")
	start := time.Now()
	mesh, out, err := runFortio(ctx, r.fortio, client.h1+pathTiny, "app", qps, 16, r.mode.duration)
	elapsed := time.Since(start)
	stopProfile()
	if err != nil {
		return fmt.Errorf("mesh: %w\n%s", err, out)
	}
	a1, a2 := sampleGroup(client.measured.pgid()), sampleGroup(app.measured.pgid())
	rw := row{contender: "meshgate (2 sidecars)", res: mesh}
	if n := requestsOf(mesh, elapsed); n > 0 {
		rw.cpuMsPer1k = (a1.cpuSeconds - b1.cpuSeconds + a2.cpuSeconds - b2.cpuSeconds) * 1000 / (n / 1000)
	}
	rw.rssMiB = float64(a1.peakRSS+a2.peakRSS) / (1 << 20)
	s.rows = append(s.rows, rw)
	loaded := rssOf(app.measured.pgid())
	s.notes = append(s.notes, fmt.Sprintf("The app's sidecar, RSS total / anonymous / file-backed (the mapped binary, shared and reclaimable): "+
		"idle %.1f / %.1f / %.1f MiB, after the run %.1f / %.1f / %.1f MiB.",
		idle.total, idle.anon, idle.file, loaded.total, loaded.anon, loaded.file))
	hop := "plain HTTP"
	if r.cpHasDataDir {
		hop = "mTLS"
	}
	s.notes = append(s.notes, fmt.Sprintf("Target rate %d req/s, 16 connections, %s between the sidecars. "+
		"Added by the mesh: p50 %+.3f ms, p90 %+.3f ms, p99 %+.3f ms, p99.9 %+.3f ms. CPU and RSS are the two sidecars together.",
		fixedQPS, hop, mesh.p50-direct.p50, mesh.p90-direct.p90, mesh.p99-direct.p99, mesh.p999-direct.p999))
	return nil
}

// startProfile saves a CPU profile of a meshgate process over the next
// run's duration and a heap profile after it, when PROFILE=1. meshgate
// serves them at its admin /debug/pprof/ once that endpoint exists; without
// it a note says so. The returned func waits for the profile.
func (r *runner) startProfile(ctx context.Context, c *contender, name string) func() {
	if !r.profile || c.admin == "" {
		return func() {}
	}
	dir := filepath.Join(r.results, "profiles")
	done := make(chan struct{})
	go func() {
		defer close(done)
		secs := int(r.mode.duration.Seconds()) - 1
		if secs < 1 {
			secs = 1
		}
		if err := fetchTo(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", c.admin, secs), filepath.Join(dir, name+"-cpu.pprof")); err != nil {
			r.log.Warn("CPU profile not saved", "process", name, "error", err)
		}
	}()
	return func() {
		<-done
		if err := fetchTo(ctx, c.admin+"/debug/pprof/heap", filepath.Join(dir, name+"-heap.pprof")); err != nil {
			r.log.Warn("heap profile not saved", "process", name, "error", err)
		}
	}
}

// fetchTo saves the body of a GET to path.
func fetchTo(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d (does this build serve /debug/pprof on its admin address?)", url, resp.StatusCode)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("profiles dir: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// oneLine shortens an error for a table cell.
func oneLine(err error) string {
	s := err.Error()
	for i, c := range s {
		if c == '\n' {
			s = s[:i]
			break
		}
	}
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}
