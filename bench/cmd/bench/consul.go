package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// consulFlipTimeout bounds one health flip reaching the gateway.
const consulFlipTimeout = 10 * time.Second

// consulFlipPolicy routes a gateway "flip" to the Consul service "flipsvc".
const consulFlipPolicy = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: flip}
spec:
  gatewayClassName: meshgate
  listeners:
    - {name: http, protocol: HTTP, port: %s}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: flip}
spec:
  parentRefs: [{name: flip}]
  rules:
    - backendRefs: [{name: flipsvc, port: 80}]
`

// consulResult is the propagation of Consul health flips to a gateway.
type consulResult struct {
	flips           int
	removed, added  []time.Duration // critical → endpoint gone; passing → endpoint back
	note            string          // set when not run
	controlPlaneCPU float64
}

// consulFlips measures a Consul health flip reaching a proxy: a real Consul
// agent (-dev, free loopback ports), a control plane with --consul, a
// gateway routing to a Consul service of two instances, one with a TTL check
// that is flipped critical and back n times. Each time is from the TTL update
// (answered by the agent) to the gateway's /config_dump no longer (or again)
// listing the instance. A missing Consul binary is reported as not run.
func (r *runner) consulFlips(ctx context.Context, n int) error {
	res := &r.table.consul
	res.flips = n
	if r.consulBin == "" {
		res.note = "not run: Consul binary not built (make consul)"
		r.log.Warn("consul flip not measured", "reason", res.note)
		return nil
	}
	var ports [4]int
	for i := range ports {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		_, p, _ := net.SplitHostPort(addr)
		ports[i], _ = strconv.Atoi(p)
	}
	consulAddr := "127.0.0.1:" + strconv.Itoa(ports[0])
	agent, err := r.procs.start("consul", r.consulBin, []string{"agent", "-dev", "-node=meshgate-bench",
		"-data-dir=" + filepath.Join(r.work, "consul"),
		"-bind=127.0.0.1", "-client=127.0.0.1", "-advertise=127.0.0.1",
		"-http-port=" + strconv.Itoa(ports[0]), "-serf-lan-port=" + strconv.Itoa(ports[1]),
		"-serf-wan-port=" + strconv.Itoa(ports[2]), "-server-port=" + strconv.Itoa(ports[3]),
		"-grpc-port=-1", "-grpc-tls-port=-1", "-dns-port=-1", "-log-level=warn"}, nil)
	if err != nil {
		res.note = "not run: " + oneLine(err)
		r.log.Warn("consul flip not measured", "error", err)
		return nil
	}
	defer agent.stop()
	client, err := api.NewClient(&api.Config{Address: consulAddr})
	if err != nil {
		return fmt.Errorf("consul client: %w", err)
	}
	if err := pollUntil(ctx, 30*time.Second, func() error {
		leader, err := client.Status().Leader()
		if err == nil && leader == "" {
			err = errors.New("no leader yet")
		}
		return err
	}, agent); err != nil { // Consul's failure, not meshgate's: reported, not fatal
		res.note = "not run: Consul agent did not start: " + oneLine(err)
		r.log.Warn("consul flip not measured", "error", err, "log", agent.tail())
		return nil
	}

	var addrs [4]string
	for i := range addrs {
		if addrs[i], err = freeAddr(); err != nil {
			return err
		}
	}
	env := &meshgateEnv{flags: meshgateFlags{xds: addrs[0], admin: addrs[1], insecure: !r.cpHasDataDir,
		insecureFlag: r.insecureFlag, cpInsecureFlag: r.cpInsecureFlag}}
	if r.cpHasDataDir {
		env.flags.dataDir = filepath.Join(r.work, "cp-consul-data")
	}
	dir := filepath.Join(r.work, "policy-consul")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("policy dir: %w", err)
	}
	gatewayPort := addrs[2][strings.LastIndexByte(addrs[2], ':')+1:]
	if err := os.WriteFile(filepath.Join(dir, "flip.yaml"), []byte(fmt.Sprintf(consulFlipPolicy, gatewayPort)), 0o644); err != nil {
		return fmt.Errorf("policy file: %w", err)
	}
	cp, err := r.procs.start("controlplane-consul", r.meshgate, append(controlplaneArgs(env.flags, dir), "--consul", consulAddr), nil)
	if err != nil {
		return err
	}
	defer cp.stop()
	if err := waitHTTP(ctx, "http://"+env.flags.admin+"/healthz", "", 15*time.Second, cp); err != nil {
		return err
	}
	gwFlags := env.flags
	gwFlags.admin = addrs[3]
	if gwFlags.token, err = env.joinToken(ctx, "flip"); err != nil {
		return err
	}
	gw, err := r.procs.start("meshgate-gateway-consul", r.meshgate, proxyArgs(gwFlags, "gateway", "flip", sidecarAddrs{}), nil)
	if err != nil {
		return err
	}
	defer gw.stop()

	// The instance: the benchmark's own port, never dialled (only the
	// gateway's configuration is watched).
	instance, err := freeAddr()
	if err != nil {
		return err
	}
	host, portStr, _ := net.SplitHostPort(instance)
	port, _ := strconv.Atoi(portStr)
	const checkID = "flipsvc-1-ttl"
	if err := client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "flipsvc-1", Name: "flipsvc", Address: host, Port: port,
		Check: &api.AgentServiceCheck{CheckID: checkID, TTL: "1h", Status: api.HealthPassing}}); err != nil {
		return fmt.Errorf("register the instance: %w", err)
	}
	// A second instance that stays passing: with the flipped one alone, a
	// flip to critical would take every endpoint from the gateway, which the
	// control plane holds (docs/controlplane.md) instead of pushing.
	steady, err := freeAddr()
	if err != nil {
		return err
	}
	steadyHost, steadyPortStr, _ := net.SplitHostPort(steady)
	steadyPort, _ := strconv.Atoi(steadyPortStr)
	if err := client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "flipsvc-2", Name: "flipsvc", Address: steadyHost, Port: steadyPort,
		Check: &api.AgentServiceCheck{CheckID: "flipsvc-2-ttl", TTL: "1h", Status: api.HealthPassing}}); err != nil {
		return fmt.Errorf("register the steady instance: %w", err)
	}
	admin := "http://" + gwFlags.admin + "/config_dump"
	listed := func() (bool, error) {
		dump, err := fetchText(ctx, admin)
		if err != nil {
			return false, err
		}
		return strings.Contains(dump, `"portValue":`+portStr+`}`) || strings.Contains(dump, `"port_value":`+portStr+`}`), nil
	}
	// waitListed polls the gateway's config dump until the instance is
	// listed (want) or not, and returns the time since start.
	waitListed := func(want bool, start time.Time, timeout time.Duration) (time.Duration, error) {
		for {
			got, err := listed()
			if err == nil && got == want {
				return time.Since(start), nil
			}
			if time.Since(start) > timeout {
				return 0, fmt.Errorf("gateway config: instance listed=%v after %s, want %v (last error %v)\n%s", got, timeout, want, err, gw.tail())
			}
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			time.Sleep(time.Millisecond)
		}
	}
	if _, err := waitListed(true, time.Now(), 30*time.Second); err != nil {
		return fmt.Errorf("initial configuration: %w", err)
	}
	before := sampleGroup(cp.pgid())
	for i := range n {
		for _, to := range []string{api.HealthCritical, api.HealthPassing} {
			if err := client.Agent().UpdateTTL(checkID, "bench flip "+strconv.Itoa(i), to); err != nil {
				return fmt.Errorf("flip %d to %s: %w", i, to, err)
			}
			start := time.Now()
			took, err := waitListed(to == api.HealthPassing, start, consulFlipTimeout)
			if err != nil {
				return fmt.Errorf("flip %d to %s: %w", i, to, err)
			}
			if to == api.HealthCritical {
				res.removed = append(res.removed, took)
			} else {
				res.added = append(res.added, took)
			}
		}
	}
	res.controlPlaneCPU = sampleGroup(cp.pgid()).cpuSeconds - before.cpuSeconds
	r.log.Info("consul health flips", "flips", n, "removed p50", percentile(res.removed, 50), "added p50", percentile(res.added, 50))
	return nil
}

// pollUntil calls check until it succeeds, timeout passes or a process of
// procs exits.
func pollUntil(ctx context.Context, timeout time.Duration, check func() error, procs ...*proc) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		for _, p := range procs {
			if p.exited() {
				return fmt.Errorf("%s exited: %w", p.name, err)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// fetchText is the body of a GET with its whitespace removed (protojson
// spacing varies).
func fetchText(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	return strings.Join(strings.Fields(string(b)), ""), nil
}

// percentile is the nearest-rank p-th percentile of ds in milliseconds, 0
// when ds is empty.
func percentile(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	rank := int(p/100*float64(len(sorted))+0.999999) - 1
	rank = min(max(rank, 0), len(sorted)-1)
	return float64(sorted[rank]) / float64(time.Millisecond)
}

// markdown renders the Consul section ("" when it did not run).
func (c consulResult) markdown() string {
	if c.flips == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n## Consul health flip → gateway proxy\n\n")
	b.WriteString("Time from the TTL check update (answered by the Consul agent) until the gateway's /config_dump no longer (critical) or again (passing) lists the instance; polled every ~1 ms.\n\n")
	b.WriteString("| change | flips | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: |\n")
	if c.note != "" {
		fmt.Fprintf(&b, "| critical → removed | %s |  |  |  |\n", c.note)
		return b.String()
	}
	for _, s := range []struct {
		name string
		ds   []time.Duration
	}{{"critical → removed", c.removed}, {"passing → restored", c.added}} {
		fmt.Fprintf(&b, "| %s | %d | %.1f | %.1f | %.1f |\n", s.name, len(s.ds), percentile(s.ds, 50), percentile(s.ds, 99), percentile(s.ds, 100))
	}
	fmt.Fprintf(&b, "\nControl plane CPU over the flips: %.2f s. Includes the control plane's 10 ms catalog debounce and the Consul agent's blocking-query wake-up.\n", c.controlPlaneCPU)
	return b.String()
}
