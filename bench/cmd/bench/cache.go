package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// wlCache is the section of a cache hit at the gateway against nginx
// proxying the same request uncached.
const wlCache = "(k) response cache: tiny body, max rate (wrk), a meshgate gateway cache hit vs the gateway uncached vs nginx proxying uncached, same run"

// cachePolicyFile is the TrafficPolicy of the cache rows, in the
// data-plane policy directory while they run.
const cachePolicyFile = "cache.yaml"

// cachePolicy caches every gateway route to the backend Service for a
// minute (the backend sends no Cache-Control: the TTL gives its responses
// one), so that every measured request is a hit.
const cachePolicy = `apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: backend-cache}
spec:
  targetRefs: [{kind: Service, name: backend}]
  cache: {ttl: 60s}
`

// responseCache runs workload (h): nginx proxying /tiny (uncached), then
// one meshgate gateway without a cache, with the cache (every request a
// hit), and both again; the policy changes over xDS between the rows.
func (r *runner) responseCache(ctx context.Context, env *meshgateEnv, backendAddr string) error {
	s := r.table.section(wlCache, "nginx (uncached)")
	r.measureNginxUncached(ctx, s, backendAddr, "nginx (uncached)")
	path := filepath.Join(r.work, "policy", cachePolicyFile)
	defer os.Remove(path)
	c, err := r.startMeshgateGateway(ctx, env, "meshgate")
	if err != nil {
		if c != nil {
			c.stop()
		}
		return err
	}
	defer c.stop()
	applied := func(want string) func(context.Context, string) error {
		return func(ctx context.Context, _ string) error {
			got, err := xCache(ctx, c.h1+pathTiny)
			switch {
			case err != nil:
				return err
			case got != want: // a first MISS stores it: the next poll hits
				return fmt.Errorf("X-Cache %q, want %q", got, want)
			}
			return nil
		}
	}
	rows := []policyRow{
		{name: "meshgate, no cache", applied: applied("")},
		{name: "meshgate, cache hit", policy: cachePolicy, applied: applied("HIT")},
		{name: "meshgate, no cache (again)", applied: applied("")},
		{name: "meshgate, cache hit (again)", policy: cachePolicy, applied: applied("HIT")},
	}
	err = r.measurePolicyRows(ctx, c, s, wlCache, path, rows)
	r.measureNginxUncached(ctx, s, backendAddr, "nginx (uncached, again)")
	s.notes = append(s.notes, "nginx proxies every request to the backend (no proxy_cache); the meshgate gateway, with a TrafficPolicy cache {ttl: 60s} on the backend Service, "+
		"answers every measured request from its cache (X-Cache: HIT) after the first. The cache rows are swapped in over xDS (no restart), each twice, alternating: "+
		"nginx is measured first and last. The spread between a row's two runs is the noise. Compare within this run only.")
	return err
}

// xCache returns the X-Cache header of a GET of url.
func xCache(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return resp.Header.Get("X-Cache"), nil
}

// measureNginxUncached adds the row name: nginx proxying /tiny to the
// backend, at max rate.
func (r *runner) measureNginxUncached(ctx context.Context, s *section, backendAddr, name string) {
	n, err := r.startNginx(ctx, backendAddr)
	if err != nil {
		s.rows = append(s.rows, row{contender: name, note: "not run: " + oneLine(err)})
		return
	}
	defer n.stop()
	if r.mode.warmup > 0 {
		_, _, _ = runWrk(ctx, n.h1+pathTiny, r.conns, r.cores, r.mode.warmup)
	}
	res, out, err := runWrk(ctx, n.h1+pathTiny, r.conns, r.cores, r.mode.duration)
	if err != nil {
		s.rows = append(s.rows, row{contender: name, note: "failed: " + oneLine(err) + ": " + oneLine(fmt.Errorf("%s", out))})
		return
	}
	r.log.Info("measured", "workload", wlCache, "variant", name, "rps", int(res.rps), "p99ms", res.p99)
	s.rows = append(s.rows, row{contender: name, res: res})
}
