package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// wlCapture is the section of the cost of a captured hop.
const wlCapture = "(t) transparent mesh: a captured call vs the explicit outbound listener, tiny body, max rate (wrk in the client's network namespace as another user; client sidecar → server sidecar → app), same run"

// Names of the capture section's network namespace and veth pair carry
// the bench's pid, so that a run finds (and removes) what an earlier,
// killed run left, and leaves a concurrent run's alone.
const (
	captureNSPrefix   = "mgbench-cap-"
	captureLinkPrefix = "mgbc"
)

// captureUID is the user wrk runs as in the client's namespace (nobody):
// not the sidecar's (root), whose own traffic the capture rules exclude.
const captureUID = 65534

// Addresses in the client's namespace.
const (
	captureClientApp      = "127.0.0.1:8080"  // no app listens: the client sidecar's --app
	captureClientOutbound = "127.0.0.1:15001" // the explicit outbound listener
	captureClientInbound  = "15006"           // port of the inbound listener, on the namespace's address
	captureClientAdmin    = "15000"           // port of the admin, on the namespace's address
)

// captureNet is the client's network namespace and the veth pair that
// links it to the host.
type captureNet struct {
	ns               string // ip netns name
	hostLink, nsLink string // the veth's ends
	hostIP, nsIP     string // their addresses, in one /24
}

// captureNetFor is the namespace of the bench process pid.
func captureNetFor(pid int) captureNet {
	subnet := fmt.Sprintf("10.254.%d", pid%250)
	return captureNet{
		ns:       captureNSPrefix + strconv.Itoa(pid),
		hostLink: captureLinkPrefix + strconv.Itoa(pid) + "h",
		nsLink:   captureLinkPrefix + strconv.Itoa(pid) + "n",
		hostIP:   subnet + ".1", nsIP: subnet + ".2",
	}
}

// leftoverNamespaces returns the namespaces of `ip netns list` output that
// a bench process no longer running (alive false) created.
func leftoverNamespaces(out string, alive func(pid int) bool) []string {
	var names []string
	for _, line := range strings.Split(out, "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if pid, ok := benchPID(name, captureNSPrefix, ""); ok && !alive(pid) {
			names = append(names, name)
		}
	}
	return names
}

// leftoverLinks returns the host's veth ends of `ip -o link show` output
// that a bench process no longer running created.
func leftoverLinks(out string, alive func(pid int) bool) []string {
	var names []string
	for _, line := range strings.Split(out, "\n") {
		// "12: mgbc4242h@if11: <BROADCAST,...> ..."
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(fields[1], ":"), "@")
		if pid, ok := benchPID(name, captureLinkPrefix, "h"); ok && !alive(pid) {
			names = append(names, name)
		}
	}
	return names
}

// benchPID is the pid in a name prefix+pid+suffix.
func benchPID(name, prefix, suffix string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	if rest, ok = strings.CutSuffix(rest, suffix); !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(rest)
	return pid, err == nil && pid > 0
}

// processAlive reports whether a process pid exists.
func processAlive(pid int) bool {
	_, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid)))
	return err == nil
}

// ipCmd runs ip with args.
func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// removeCaptureLeftovers deletes the namespaces and veth ends of bench runs
// that ended without cleaning up (killed). Deleting a namespace deletes
// its nftables rules and its veth end with it.
func (r *runner) removeCaptureLeftovers(ctx context.Context) {
	if out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output(); err == nil {
		for _, ns := range leftoverNamespaces(string(out), processAlive) {
			r.log.Info("capture: removing a leftover network namespace", "netns", ns)
			if err := ipCmd(ctx, "netns", "del", ns); err != nil {
				r.log.Warn("capture: leftover namespace not removed", "error", err)
			}
		}
	}
	if out, err := exec.CommandContext(ctx, "ip", "-o", "link", "show").Output(); err == nil {
		for _, link := range leftoverLinks(string(out), processAlive) {
			r.log.Info("capture: removing a leftover veth", "link", link)
			if err := ipCmd(ctx, "link", "del", link); err != nil {
				r.log.Warn("capture: leftover veth not removed", "error", err)
			}
		}
	}
}

// setUp creates the namespace, its loopback and the veth pair. On error,
// what was created is removed by tearDown, which the caller defers.
func (n captureNet) setUp(ctx context.Context) error {
	steps := [][]string{
		{"netns", "add", n.ns},
		{"-n", n.ns, "link", "set", "lo", "up"},
		{"link", "add", n.hostLink, "type", "veth", "peer", "name", n.nsLink, "netns", n.ns},
		{"addr", "add", n.hostIP + "/24", "dev", n.hostLink},
		{"link", "set", n.hostLink, "up"},
		{"-n", n.ns, "addr", "add", n.nsIP + "/24", "dev", n.nsLink},
		{"-n", n.ns, "link", "set", n.nsLink, "up"},
		{"-n", n.ns, "route", "add", "default", "via", n.hostIP},
	}
	for _, args := range steps {
		if err := ipCmd(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

// tearDown removes the namespace (its nftables rules and veth end go with
// it) and the host's veth end, if still there. It runs on a fresh context:
// also after Ctrl-C.
func (n captureNet) tearDown() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = ipCmd(ctx, "netns", "del", n.ns)
	_ = exec.CommandContext(ctx, "ip", "link", "del", n.hostLink).Run()
}

// asApp is the command prefix that runs a command in the namespace as
// captureUID.
func (n captureNet) asApp() []string {
	uid := strconv.Itoa(captureUID)
	return []string{"ip", "netns", "exec", n.ns, "setpriv", "--reuid=" + uid, "--regid=" + uid, "--clear-groups"}
}

// freeAddrOn returns a free TCP address on ip (of the host's namespace).
func freeAddrOn(ip string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return "", fmt.Errorf("free port on %s: %w", ip, err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// capturePolicy is the capture section's policy: the server "app" (behind
// a sidecar on the host) and the caller "client" (behind the capturing
// sidecar in its namespace).
func capturePolicy(appInbound, clientInbound string, mtls bool) string {
	sidecarFlag := ""
	if mtls {
		sidecarFlag = ", sidecar: true"
	}
	return fmt.Sprintf(`apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: app}
spec:
  ports: [{name: http, port: 80}]
  endpoints: [{address: "%s"%s}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: client}
spec:
  ports: [{name: http, port: 80}]
  endpoints: [{address: "%s"%s}]
`, appInbound, sidecarFlag, clientInbound, sidecarFlag)
}

// captureRatios are the captured rows' req/s, p50 and p99 as multiples of
// the explicit rows' (each the mean of its runs); 0 where the explicit
// value is 0.
func captureRatios(explicit, captured []loadResult) (rps, p50, p99 float64) {
	mean := func(rs []loadResult, f func(loadResult) float64) float64 {
		if len(rs) == 0 {
			return 0
		}
		sum := 0.0
		for _, r := range rs {
			sum += f(r)
		}
		return sum / float64(len(rs))
	}
	ratio := func(f func(loadResult) float64) float64 {
		e := mean(explicit, f)
		if e == 0 {
			return 0
		}
		return mean(captured, f) / e
	}
	return ratio(func(r loadResult) float64 { return r.rps }),
		ratio(func(r loadResult) float64 { return r.p50 }),
		ratio(func(r loadResult) float64 { return r.p99 })
}

// captureSection runs workload (t) and records a row that says why when
// it cannot run here (not root, a tool missing).
func (r *runner) captureSection(ctx context.Context, env *meshgateEnv, backend string) error {
	s := r.table.section(wlCapture, "explicit")
	notRun := func(why string) {
		r.log.Info("capture section skipped", "reason", why)
		s.rows = append(s.rows, row{contender: "captured", note: "not run: " + why})
	}
	if os.Geteuid() != 0 {
		notRun("needs root (a network namespace and nftables rules)")
		return nil
	}
	for _, tool := range []string{"ip", "setpriv", "wrk"} {
		if _, err := exec.LookPath(tool); err != nil {
			notRun(tool + " not installed")
			return nil
		}
	}
	r.removeCaptureLeftovers(ctx)
	n := captureNetFor(os.Getpid())
	defer n.tearDown()
	if err := n.setUp(ctx); err != nil {
		notRun("network namespace: " + oneLine(err))
		return nil
	}
	err := r.measureCapture(ctx, env, backend, n, s)
	if err != nil {
		s.rows = append(s.rows, row{contender: "captured", note: "failed: " + oneLine(err)})
	}
	return err
}

// measureCapture runs the control plane, the two sidecars and the rows of
// workload (t) on the namespace n.
func (r *runner) measureCapture(ctx context.Context, env *meshgateEnv, backend string, n captureNet, s *section) error {
	xds, err := freeAddrOn(n.hostIP)
	if err != nil {
		return err
	}
	appInbound, err := freeAddrOn(n.hostIP)
	if err != nil {
		return err
	}
	cpAdmin, appOutbound, err := twoAddrs()
	if err != nil {
		return err
	}
	appAdmin, err := freeAddr()
	if err != nil {
		return err
	}
	clientInbound := net.JoinHostPort(n.nsIP, captureClientInbound)
	clientAdmin := net.JoinHostPort(n.nsIP, captureClientAdmin)

	// A control plane of the section's own, its xDS on the veth: the
	// client's namespace reaches the host on the veth's address only.
	cenv := &meshgateEnv{flags: env.flags}
	cenv.flags.xds, cenv.flags.admin = xds, cpAdmin
	if cenv.flags.dataDir != "" {
		cenv.flags.dataDir = filepath.Join(r.work, "cp-data-capture")
	}
	dir := filepath.Join(r.work, "policy-capture")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("policy dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "capture.yaml"), []byte(capturePolicy(appInbound, clientInbound, r.cpHasDataDir)), 0o644); err != nil {
		return fmt.Errorf("policy file: %w", err)
	}
	if cenv.cp, err = r.procs.start("controlplane-capture", r.meshgate, controlplaneArgs(cenv.flags, dir), nil); err != nil {
		return err
	}
	defer cenv.cp.stop()
	if err := waitHTTP(ctx, "http://"+cpAdmin+"/healthz", "", 15*time.Second, cenv.cp); err != nil {
		return err
	}

	// The server's sidecar, on the host.
	f := cenv.flags
	f.admin = appAdmin
	if f.token, err = cenv.joinToken(ctx, "app"); err != nil {
		return err
	}
	app, err := r.procs.start("meshgate-sidecar-capture-app", r.meshgate,
		proxyArgs(f, "sidecar", "app", sidecarAddrs{app: backend, inbound: appInbound, outbound: appOutbound}), nil)
	if err != nil {
		return err
	}
	defer app.stop()

	// The client's sidecar, in the namespace, as root, capturing: its
	// SIGTERM removes the rules; deleting the namespace removes them anyway.
	f.admin = clientAdmin
	if f.token, err = cenv.joinToken(ctx, "client"); err != nil {
		return err
	}
	args := append([]string{"netns", "exec", n.ns, r.meshgate},
		proxyArgs(f, "sidecar", "client", sidecarAddrs{app: captureClientApp, inbound: clientInbound, outbound: captureClientOutbound})...)
	args = append(args, "--capture")
	client, err := r.procs.start("meshgate-sidecar-capture-client", "ip", args, nil)
	if err != nil {
		return err
	}
	defer client.stop()
	if err := waitHTTP(ctx, "http://"+clientAdmin+"/ready", "", 20*time.Second, client, app, cenv.cp); err != nil {
		return fmt.Errorf("client sidecar not ready: %w", err)
	}

	explicitURL := "http://" + captureClientOutbound + pathTiny
	explicitHeaders := []string{"Host: app"}
	// The server's endpoint address at the service's port: the
	// application's call as it would make it without a mesh.
	capturedURL := "http://" + n.hostIP + pathTiny
	for _, c := range []struct {
		what, url string
		headers   []string
	}{{"explicit", explicitURL, explicitHeaders}, {"captured", capturedURL, nil}} {
		if err := r.waitWrkIn(ctx, n, c.url, c.headers, 20*time.Second); err != nil {
			return fmt.Errorf("%s call: %w", c.what, err)
		}
	}

	rows := []struct {
		name, url string
		headers   []string
	}{
		{"explicit", explicitURL, explicitHeaders},
		{"captured", capturedURL, nil},
		{"explicit (again)", explicitURL, explicitHeaders},
		{"captured (again)", capturedURL, nil},
	}
	var explicit, captured []loadResult
	var errs []error
	for i, v := range rows {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if i < 2 && r.mode.warmup > 0 {
			if _, out, err := runWrkAs(ctx, n.asApp(), v.url, v.headers, r.conns, r.cores, r.mode.warmup); err != nil {
				return fmt.Errorf("warm-up: %w\n%s", err, out)
			}
		}
		resetPeakRSS(client.pgid())
		resetPeakRSS(app.pgid())
		b1, b2 := sampleGroup(client.pgid()), sampleGroup(app.pgid())
		start := time.Now()
		res, out, err := runWrkAs(ctx, n.asApp(), v.url, v.headers, r.conns, r.cores, r.mode.duration)
		elapsed := time.Since(start)
		if err != nil {
			s.rows = append(s.rows, row{contender: v.name, note: "failed: " + oneLine(err)})
			errs = append(errs, fmt.Errorf("%s: %w\n%s", v.name, err, out))
			continue
		}
		a1, a2 := sampleGroup(client.pgid()), sampleGroup(app.pgid())
		rw := row{contender: v.name, res: res, rssMiB: float64(a1.peakRSS+a2.peakRSS) / (1 << 20)}
		if n := requestsOf(res, elapsed); n > 0 {
			rw.cpuMsPer1k = (a1.cpuSeconds - b1.cpuSeconds + a2.cpuSeconds - b2.cpuSeconds) * 1000 / (n / 1000)
		}
		r.log.Info("measured", "workload", wlCapture, "variant", v.name, "rps", int(res.rps), "p99ms", res.p99)
		s.rows = append(s.rows, rw)
		if strings.HasPrefix(v.name, "captured") {
			captured = append(captured, res)
		} else {
			explicit = append(explicit, res)
		}
	}
	if err := r.captureFixedRate(ctx, n, explicitURL, capturedURL, client, app); err != nil {
		errs = append(errs, err)
	}
	hop := "plain HTTP"
	if r.cpHasDataDir {
		hop = "mTLS"
	}
	s.notes = append(s.notes, fmt.Sprintf("wrk runs in the client's network namespace as uid %d (the sidecar runs as root, whose traffic the rules exclude), "+
		"%d connections; explicit: http://%s%s with Host: app (the outbound listener); captured: http://%s%s (the server's endpoint address at the service's port, "+
		"redirected by the sidecar's nftables rules to its capture listener, routed by the original destination). %s between the sidecars (the server's on the host, "+
		"reached over a veth pair). Each row runs twice, alternating: the spread between a row's two runs is the noise. CPU and RSS are the two sidecars together.",
		captureUID, r.conns, captureClientOutbound, pathTiny, n.hostIP, pathTiny, hop))
	if len(explicit) > 0 && len(captured) > 0 {
		rps, p50, p99 := captureRatios(explicit, captured)
		s.notes = append(s.notes, fmt.Sprintf("Captured vs explicit (means of the runs): req/s ×%.2f, p50 ×%.2f, p99 ×%.2f.", rps, p50, p99))
	}
	return errors.Join(errs...)
}

// waitWrkIn polls a short wrk run in the namespace until every request of
// it succeeds, or timeout.
func (r *runner) waitWrkIn(ctx context.Context, n captureNet, url string, headers []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		res, out, err := runWrkAs(ctx, n.asApp(), url, headers, 1, 1, time.Second)
		switch {
		case err != nil:
			last = fmt.Errorf("%w: %s", err, oneLine(errors.New(out)))
		case res.requests == 0 || res.errors > 0:
			last = fmt.Errorf("%s: %.0f requests, %.0f errors", url, res.requests, res.errors)
		default:
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return last
}

// wlCaptureFixed is the fixed-rate companion of wlCapture: the latency a
// captured call adds where throughput does not set it.
const wlCaptureFixed = "(t2) transparent mesh: a captured call vs the explicit outbound listener, fixed 1000 req/s (fortio in the client's network namespace as another user), same run"

// captureFixedRate runs the rows of wlCaptureFixed: explicit and captured
// at fixedQPS, 16 connections, each twice, alternating. Without the fortio
// engine a row says so.
func (r *runner) captureFixedRate(ctx context.Context, n captureNet, explicitURL, capturedURL string, client, app *proc) error {
	s := r.table.section(wlCaptureFixed, "explicit")
	if _, err := os.Stat(r.fortio); err != nil {
		s.rows = append(s.rows, row{contender: "captured", note: "not run: no fortio engine at " + r.fortio})
		return nil
	}
	rows := []struct{ name, url, host string }{
		{"explicit", explicitURL, "app"},
		{"captured", capturedURL, ""},
		{"explicit (again)", explicitURL, "app"},
		{"captured (again)", capturedURL, ""},
	}
	var explicit, captured []loadResult
	var errs []error
	for _, v := range rows {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b1, b2 := sampleGroup(client.pgid()), sampleGroup(app.pgid())
		start := time.Now()
		res, out, err := runFortioAs(ctx, n.asApp(), r.fortio, v.url, v.host, fixedQPS, 16, r.mode.duration)
		elapsed := time.Since(start)
		if err != nil {
			s.rows = append(s.rows, row{contender: v.name, note: "failed: " + oneLine(err)})
			errs = append(errs, fmt.Errorf("%s at a fixed rate: %w\n%s", v.name, err, out))
			continue
		}
		r.log.Info("measured", "workload", wlCaptureFixed, "variant", v.name, "rps", int(res.rps), "p99ms", res.p99)
		a1, a2 := sampleGroup(client.pgid()), sampleGroup(app.pgid())
		rw := row{contender: v.name, res: res}
		if n := requestsOf(res, elapsed); n > 0 {
			rw.cpuMsPer1k = (a1.cpuSeconds - b1.cpuSeconds + a2.cpuSeconds - b2.cpuSeconds) * 1000 / (n / 1000)
		}
		s.rows = append(s.rows, rw)
		if strings.HasPrefix(v.name, "captured") {
			captured = append(captured, res)
		} else {
			explicit = append(explicit, res)
		}
	}
	if len(explicit) > 0 && len(captured) > 0 {
		e, c := meanResult(explicit), meanResult(captured)
		s.notes = append(s.notes, fmt.Sprintf("Target rate %d req/s, 16 connections, the same URLs as (t); CPU is the two sidecars together. "+
			"Added by capture (means of the runs): p50 %+.3f ms, p90 %+.3f ms, p99 %+.3f ms, p99.9 %+.3f ms.",
			fixedQPS, c.p50-e.p50, c.p90-e.p90, c.p99-e.p99, c.p999-e.p999))
	}
	return errors.Join(errs...)
}

// meanResult is the mean of each latency percentile of rs.
func meanResult(rs []loadResult) loadResult {
	var m loadResult
	for _, r := range rs {
		m.p50 += r.p50 / float64(len(rs))
		m.p90 += r.p90 / float64(len(rs))
		m.p99 += r.p99 / float64(len(rs))
		m.p999 += r.p999 / float64(len(rs))
	}
	return m
}
