// Command bench measures meshgate against a direct connection, nginx, HAProxy
// and Caddy on loopback, and the control plane at scale (bench/xdsload). It
// starts every process it needs on free ports in its own process group and
// stops them all when it ends, also on Ctrl-C. See docs/performance.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// mode sets how long each measurement runs.
type mode struct {
	name       string
	duration   time.Duration // one load-generator run
	warmup     time.Duration // before each contender's first run
	xdsRuns    []xdsRun      // runs of xdsload, in order
	xdsTimeout time.Duration
	flips      int // Consul health flips (each: critical, then passing)
}

// xdsRun is one xdsload run: its size, the generated mesh's outbound
// scope (xdsload -scope) and where the services' endpoints come from
// (xdsload -endpoints).
type xdsRun struct {
	streams, services int
	scope             string
	endpoints         string // endpointsConsul falls back to endpointsFile without the Consul binary
}

// xdsload's -scope values.
const (
	scopeAll        = "all"
	scopeAuthorized = "authorized"
)

// xdsload's -endpoints values.
const (
	endpointsFile   = "file"
	endpointsConsul = "consul"
)

// xdsRunsAt runs xdsload at each (streams, services) scale with every
// service on every sidecar, then at the last (largest) scale again in a
// zero-trust mesh whose sidecars only receive the services they may call,
// with its services in Consul: its endpoint change is a catalog write, as
// in production, not a policy file edit.
func xdsRunsAt(scales ...[2]int) []xdsRun {
	var runs []xdsRun
	for _, sc := range scales {
		runs = append(runs, xdsRun{streams: sc[0], services: sc[1], scope: scopeAll, endpoints: endpointsFile})
	}
	last := scales[len(scales)-1]
	return append(runs, xdsRun{streams: last[0], services: last[1], scope: scopeAuthorized, endpoints: endpointsConsul})
}

func modeFor(name string, streams, services int) (mode, error) {
	switch name {
	case "full":
		return mode{name: name, duration: 12 * time.Second, warmup: 2 * time.Second,
			xdsRuns: xdsRunsAt([2]int{streams / 10, services / 10}, [2]int{streams, services}), xdsTimeout: 4 * time.Minute, flips: 30}, nil
	case "quick":
		return mode{name: name, duration: 3 * time.Second, warmup: time.Second,
			xdsRuns: xdsRunsAt([2]int{streams / 4, services / 4}), xdsTimeout: 90 * time.Second, flips: 10}, nil
	case "smoke":
		return mode{name: name, duration: time.Second, xdsRuns: xdsRunsAt([2]int{20, 10}), xdsTimeout: 30 * time.Second, flips: 3}, nil
	}
	return mode{}, fmt.Errorf("unknown mode %q (full, quick, smoke)", name)
}

// runner holds one benchmark run's settings and state.
type runner struct {
	log            *slog.Logger
	mode           mode
	work           string // temporary directory: configs, logs
	results        string // bench/results
	meshgate       string
	fortio         string
	caddyBin       string
	consulBin      string // "" when not built: the Consul flip is reported as not run, xdsload's endpoints come from files
	xdsload        string
	insecureFlag   string
	cpInsecureFlag string
	cpHasDataDir   bool
	// baseline is another meshgate binary run as the gateway contender
	// meshgate-baseline; empty: none.
	baseline string
	// hasHTTP1ServerFlag: the proxy has --http1-server (std/fast), so the
	// meshgate-std contender can run.
	hasHTTP1ServerFlag bool
	profile            bool
	contenders         map[string]bool // nil: every contender
	cores              int
	conns              int
	procs              *procGroup
	table              *table
}

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, logger, os.Args[1:])
	cancel()
	if err != nil {
		logger.Error("bench failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, logger *slog.Logger, args []string) error {
	if len(args) > 0 && args[0] == "backend" {
		fs := flag.NewFlagSet("backend", flag.ContinueOnError)
		addr := fs.String("addr", "127.0.0.1:0", "listen address")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return runBackend(ctx, *addr)
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	modeName := fs.String("mode", envOr("BENCH_MODE", "full"), "full (~10 min), quick (~2 min) or smoke (seconds, no numbers to trust)")
	meshgate := fs.String("meshgate", "bin/meshgate", "meshgate binary")
	baseline := fs.String("baseline", os.Getenv("BENCH_BASELINE"), "another meshgate binary (an earlier build) run as the gateway contender meshgate-baseline beside meshgate, with a control plane of its own build on the same policy: a regression check within one run")
	fortio := fs.String("fortio", "tools/fortio/bin/fortioload", "fortio load engine (tools/fortio)")
	caddy := fs.String("caddy", "tools/caddy/bin/caddy", "caddy binary (tools/caddy); skipped when missing")
	consul := fs.String("consul", envOr("MESHGATE_CONSUL_BIN", "tools/consul/bin/consul"), "Consul agent binary (make consul) for the health-flip measurement (skipped when missing) and the authorized xdsload run's endpoints (from files when missing)")
	xdsload := fs.String("xdsload", "bin/xdsload", "xdsload binary (bench/xdsload)")
	results := fs.String("results", "bench/results", "directory of latest.md (and profiles/)")
	streams := fs.Int("xds-streams", 2000, "ADS streams of the largest xdsload run")
	services := fs.Int("xds-services", 1000, "services of the largest xdsload run")
	profile := fs.Bool("profile", os.Getenv("PROFILE") == "1", "save CPU and heap profiles of meshgate processes (needs their admin /debug/pprof)")
	conns := fs.Int("conns", 64, "connections of the max-rate workloads")
	skip := fs.String("skip", "", "comma-separated parts to skip: dataplane, https, grpc, observability, resilience, ratelimit, jwt, cache, mesh, capture, consul, xds, scale")
	only := fs.String("contenders", "", "comma-separated contenders of workloads (a)-(d) to run (nginx, direct, meshgate, meshgate-std, meshgate-baseline, haproxy, caddy); all when empty. (c2) needs nginx")
	duration := fs.Duration("duration", 0, "length of each load-generator run; the mode's when zero (profiling: longer runs give fuller profiles)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	m, err := modeFor(*modeName, *streams, *services)
	if err != nil {
		return err
	}
	if *duration > 0 {
		m.duration = *duration
	}
	work, err := os.MkdirTemp("", "meshgate-bench-")
	if err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	defer os.RemoveAll(work)
	r := &runner{
		log: logger, mode: m, work: work, results: *results,
		meshgate: abs(*meshgate), fortio: abs(*fortio), xdsload: abs(*xdsload),
		baseline: absOrEmpty(*baseline),
		profile:  *profile, cores: runtime.NumCPU(), conns: *conns,
		procs: &procGroup{dir: work}, table: &table{},
	}
	if *only != "" {
		r.contenders = map[string]bool{}
		for _, name := range strings.Split(*only, ",") {
			r.contenders[strings.TrimSpace(name)] = true
		}
	}
	if _, err := os.Stat(*caddy); err == nil {
		r.caddyBin = abs(*caddy)
	}
	if _, err := os.Stat(*consul); err == nil {
		r.consulBin = abs(*consul)
	}
	defer r.procs.stopAll()
	// A second signal while stopping still stops everything: stopAll is
	// idempotent and the deferred call runs on return.
	r.insecureFlag = detectInsecureFlag(ctx, r.meshgate, "gateway")
	r.hasHTTP1ServerFlag = hasFlag(ctx, r.meshgate, "gateway", "--http1-server")
	r.cpInsecureFlag = detectInsecureFlag(ctx, r.meshgate, "controlplane")
	r.cpHasDataDir = hasFlag(ctx, r.meshgate, "controlplane", "--data-dir")
	start := time.Now()
	skipSet := map[string]bool{}
	for _, s := range strings.Split(*skip, ",") {
		skipSet[strings.TrimSpace(s)] = true
	}
	var errs []error
	if !skipSet["dataplane"] || !skipSet["https"] || !skipSet["observability"] || !skipSet["resilience"] || !skipSet["ratelimit"] || !skipSet["jwt"] || !skipSet["cache"] || !skipSet["mesh"] || !skipSet["grpc"] || !skipSet["capture"] {
		errs = append(errs, r.dataPlane(ctx, skipSet))
	}
	if !skipSet["consul"] && ctx.Err() == nil {
		if err := r.consulFlips(ctx, m.flips); err != nil {
			r.table.consul.note = "failed: " + oneLine(err)
			errs = append(errs, fmt.Errorf("consul health flip: %w", err))
		}
	}
	if !skipSet["xds"] && ctx.Err() == nil {
		errs = append(errs, r.controlPlane(ctx))
	}
	if !skipSet["scale"] && ctx.Err() == nil {
		r.configAtScale(ctx)
	}
	r.procs.stopAll()
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", ctx.Err())
	}
	report := r.table.markdown(machineFacts(ctx, m, time.Since(start)))
	fmt.Println(report)
	if err := os.MkdirAll(r.results, 0o755); err != nil {
		return fmt.Errorf("results dir: %w", err)
	}
	name := "latest.md"
	if m.name == "smoke" {
		name = "smoke.tmp" // gitignored: smoke numbers mean nothing
	}
	if err := os.WriteFile(filepath.Join(r.results, name), []byte(report), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return errors.Join(errs...)
}

// detectInsecureFlag returns "--insecure" when `meshgate <command> --help`
// lists it (the mTLS work adds it), or "" when plaintext is the only mode.
func detectInsecureFlag(ctx context.Context, bin, command string) string {
	if hasFlag(ctx, bin, command, "--insecure") {
		return "--insecure"
	}
	return ""
}

// hasFlag reports whether `meshgate <command> --help` lists flag.
func hasFlag(ctx context.Context, bin, command, flag string) bool {
	out, _ := exec.CommandContext(ctx, bin, command, "--help").CombinedOutput()
	return strings.Contains(string(out), flag+" ")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// absOrEmpty is abs(p), empty for an empty p.
func absOrEmpty(p string) string {
	if p == "" {
		return ""
	}
	return abs(p)
}

func abs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

// machineFacts describes where and how the numbers were taken.
func machineFacts(ctx context.Context, m mode, took time.Duration) []string {
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	version := func(name string, args ...string) string {
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil && len(out) == 0 { // wrk -v exits 1 after printing its version
			return "not found"
		}
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	return []string{
		"date: " + time.Now().UTC().Format(time.RFC3339),
		fmt.Sprintf("machine: %s, %d cores, %s", cpu, runtime.NumCPU(), runtime.GOOS+"/"+runtime.GOARCH),
		"go: " + runtime.Version(),
		"mode: " + m.name + fmt.Sprintf(" (%s per run), total %s", m.duration, took.Round(time.Second)),
		"nginx: " + version("nginx", "-v"),
		"haproxy: " + version("haproxy", "-v"),
		"wrk: " + version("wrk", "-v"),
		"h2load: " + version("h2load", "--version"),
	}
}
