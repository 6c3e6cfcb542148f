// Command xdsload measures the control plane at scale: it runs `meshgate
// controlplane` on a generated policy of M services, enrols every identity
// as a real proxy does (a join token from the admin API, a key and a CSR
// signed by the CA, see dataplane/identity), opens N ADS streams over TLS
// with those client certificates that behave as proxies of both roles
// (subscribe to listeners, clusters, their routes, endpoints and secrets,
// and ACK every response), then rewrites the
// policy (a new service) and an endpoint, and reports how long it took until
// every stream ACKed each change, with the control plane's CPU and peak RSS.
// -scope authorized makes the mesh zero trust with outbound scoping (see
// generatePolicy). -endpoints consul registers the services in a Consul dev
// agent that the control plane discovers (--consul), so that the endpoint
// change is a catalog write, as in production (see consul.go). It prints
// one JSON object (see result).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is xdsload's command line.
type config struct {
	meshgate       string
	streams        int
	gateways       int
	services       int
	scope          string // scopeAll or scopeAuthorized
	endpoints      string // endpointsFile or endpointsConsul
	consulBin      string // with endpointsConsul; found by consulBinary when empty
	streamsPerConn int
	timeout        time.Duration
	out            string
	work           string
	cpFlags        []string
	profileDir     string
	maxRSS         uint64 // bytes; the run stops when the control plane exceeds it
}

// result is xdsload's output.
type result struct {
	Streams  int `json:"streams"`
	Gateways int `json:"gateways"`
	Services int `json:"services"`
	// Scope is the generated mesh's outbound scope: "all" or "authorized".
	Scope string `json:"scope"`
	// EndpointSource is where the services' endpoints come from, and so
	// what the endpoint change is: "file" (a policy file edit) or "consul"
	// (a catalog write; timed from its answer).
	EndpointSource string `json:"endpointSource"`
	// ConsulRegisterSeconds is how long registering the services in Consul
	// took (endpointSource "consul").
	ConsulRegisterSeconds float64 `json:"consulRegisterSeconds,omitempty"`
	// ConsulChangeCallMS is how long the endpoint change's catalog write
	// took to answer (not part of endpointChange, which starts then).
	ConsulChangeCallMS     float64 `json:"consulChangeCallMs,omitempty"`
	Identities             int     `json:"identities"`
	EnrollSeconds          float64 `json:"enrollSeconds"`
	ConnectSeconds         float64 `json:"connectSeconds"`
	Policy                 change  `json:"policyChange"`
	Endpoint               change  `json:"endpointChange"`
	ControlPlaneCPUSeconds float64 `json:"controlPlaneCPUSeconds"`
	ControlPlanePeakRSSMiB float64 `json:"controlPlanePeakRSSMiB"`
	// CPU seconds of the control plane and of xdsload itself during the two
	// changes alone: on one machine both share the cores, so a change's
	// latency includes the load generator's decoding.
	ChangesControlPlaneCPUSeconds  float64 `json:"changesControlPlaneCPUSeconds"`
	ChangesLoadGeneratorCPUSeconds float64 `json:"changesLoadGeneratorCPUSeconds"`
}

// change is how long one change took to reach every stream.
type change struct {
	P50MS float64 `json:"p50Ms"`
	P99MS float64 `json:"p99Ms"`
	MaxMS float64 `json:"maxMs"`
	Acked int     `json:"acked"`
	// The fewest and most clusters a sidecar's stream held when it reached
	// the change: every service with scope all, a few with authorized.
	SidecarClustersMin int `json:"sidecarClustersMin"`
	SidecarClustersMax int `json:"sidecarClustersMax"`
}

// exitUnsupported is the exit code when the control plane needs something
// xdsload cannot do yet (bench reports it instead of failing).
const exitUnsupported = 3

// errUnsupported is a limitation of xdsload, not a failure of the control plane.
type errUnsupported string

func (e errUnsupported) Error() string { return string(e) }

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, logger, os.Args[1:], os.Stdout); err != nil {
		logger.Error("xdsload failed", "error", err)
		cancel()
		var unsupported errUnsupported
		if errors.As(err, &unsupported) {
			os.Exit(exitUnsupported)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, logger *slog.Logger, args []string, stdout io.Writer) error {
	var cfg config
	var cpFlags stringList
	fs := flag.NewFlagSet("xdsload", flag.ContinueOnError)
	fs.StringVar(&cfg.meshgate, "meshgate", "bin/meshgate", "meshgate binary")
	fs.IntVar(&cfg.streams, "streams", 2000, "ADS streams (proxies)")
	fs.IntVar(&cfg.gateways, "gateways", 0, "how many of the streams are gateway nodes (default streams/50, at least 1)")
	fs.IntVar(&cfg.services, "services", 1000, "services in the generated policy")
	fs.StringVar(&cfg.scope, "scope", scopeAll, "what a sidecar receives: all (every service) or authorized (zero trust: a MeshConfig with outboundScope Authorized and a SecurityPolicy per service, ~4 services per sidecar)")
	fs.StringVar(&cfg.endpoints, "endpoints", endpointsFile, "where the services' endpoints come from: file (Service documents; the endpoint change is a file edit) or consul (a Consul dev agent's catalog, the control plane runs with --consul; the endpoint change is a catalog write)")
	fs.StringVar(&cfg.consulBin, "consul-bin", "", "consul binary for -endpoints consul (default $MESHGATE_CONSUL_BIN, else tools/consul/bin/consul in this directory or a parent, else consul on the PATH)")
	fs.IntVar(&cfg.streamsPerConn, "streams-per-conn", 100, "ADS streams per gRPC connection")
	fs.DurationVar(&cfg.timeout, "timeout", 3*time.Minute, "limit for each phase (connect, each change)")
	fs.StringVar(&cfg.out, "out", "", "also write the JSON result to this file")
	fs.StringVar(&cfg.work, "work", "", "directory for the policy and logs (default: a temporary one)")
	fs.Var(&cpFlags, "controlplane-flag", "extra flag for `meshgate controlplane` (repeatable, e.g. --insecure)")
	maxRSSMiB := fs.Uint64("max-rss-mib", 8192, "stop when the control plane's RSS exceeds this (protects a shared machine)")
	fs.StringVar(&cfg.profileDir, "profile-dir", "", "save the control plane's CPU and heap profiles here (needs its admin /debug/pprof)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.cpFlags = cpFlags
	cfg.maxRSS = *maxRSSMiB << 20
	if cfg.streams < 2 || cfg.services < 2 {
		return errors.New("need at least 2 streams and 2 services")
	}
	if cfg.scope != scopeAll && cfg.scope != scopeAuthorized {
		return fmt.Errorf("-scope %q: want %s or %s", cfg.scope, scopeAll, scopeAuthorized)
	}
	switch cfg.endpoints {
	case endpointsFile:
	case endpointsConsul:
		if cfg.consulBin == "" {
			bin, err := consulBinary()
			if err != nil {
				return errUnsupported("-endpoints consul: " + err.Error())
			}
			cfg.consulBin = bin
		}
	default:
		return fmt.Errorf("-endpoints %q: want %s or %s", cfg.endpoints, endpointsFile, endpointsConsul)
	}
	if cfg.gateways <= 0 {
		cfg.gateways = max(1, cfg.streams/50)
	}
	if cfg.gateways >= cfg.streams {
		return fmt.Errorf("-gateways %d must be below -streams %d", cfg.gateways, cfg.streams)
	}
	if cfg.work == "" {
		dir, err := os.MkdirTemp("", "xdsload-")
		if err != nil {
			return fmt.Errorf("work dir: %w", err)
		}
		defer os.RemoveAll(dir)
		cfg.work = dir
	}
	res, err := measure(ctx, logger, cfg)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, b, 0o644); err != nil {
			return fmt.Errorf("write result: %w", err)
		}
	}
	_, err = fmt.Fprintf(stdout, "%s\n", b)
	return err
}

// controlplaneArgs is the ONE place that decides how xdsload runs the
// control plane (see proxyArgs in bench/cmd/bench for the proxies);
// consulAddr is the Consul agent to discover services from, "" for none.
func controlplaneArgs(cfg config, policyDir, dataDir, xdsAddr, adminAddr, consulAddr string) []string {
	args := []string{"controlplane", "--log-level", "warn", "--config", policyDir,
		"--data-dir", dataDir, "--xds-address", xdsAddr, "--admin-address", adminAddr}
	if consulAddr != "" {
		args = append(args, "--consul", consulAddr)
	}
	return append(args, cfg.cpFlags...)
}

func measure(ctx context.Context, logger *slog.Logger, cfg config) (*result, error) {
	policyDir := filepath.Join(cfg.work, "policy")
	if err := os.MkdirAll(policyDir, 0o755); err != nil {
		return nil, fmt.Errorf("policy dir: %w", err)
	}
	if err := writePolicy(policyDir, generatePolicy(cfg.services, cfg.scope, cfg.endpoints, false, 0)); err != nil {
		return nil, err
	}
	res := &result{Streams: cfg.streams, Gateways: cfg.gateways, Services: cfg.services, Scope: cfg.scope, EndpointSource: cfg.endpoints}
	var consul *consulAgent
	if cfg.endpoints == endpointsConsul {
		var err error
		consul, err = startConsul(ctx, cfg.consulBin, filepath.Join(cfg.work, "consul"), filepath.Join(cfg.work, "consul.log"))
		if err != nil {
			return nil, fmt.Errorf("consul agent: %w", err)
		}
		defer consul.stop()
		took, err := registerServices(ctx, logger, consul.client, cfg.services)
		if err != nil {
			return nil, fmt.Errorf("register services in consul: %w (consul log: %s)", err, tail(consul.log))
		}
		res.ConsulRegisterSeconds = took.Seconds()
	}
	xdsAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	adminAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(cfg.work, "controlplane.log"))
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	defer logFile.Close()
	dataDir := filepath.Join(cfg.work, "data")
	consulAddr := ""
	if consul != nil {
		consulAddr = consul.addr
	}
	cp := exec.Command(cfg.meshgate, controlplaneArgs(cfg, policyDir, dataDir, xdsAddr, adminAddr, consulAddr)...)
	cp.Stdout, cp.Stderr = logFile, logFile
	cp.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cp.Start(); err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	cpDone := make(chan struct{})
	go func() { _ = cp.Wait(); close(cpDone) }()
	defer func() {
		_ = cp.Process.Signal(syscall.SIGTERM)
		select {
		case <-cpDone:
		case <-time.After(5 * time.Second):
			_ = cp.Process.Kill()
			<-cpDone
		}
	}()
	if err := waitHealthy(ctx, "http://"+adminAddr+"/healthz", cpDone, 30*time.Second); err != nil {
		return nil, fmt.Errorf("control plane: %w (log: %s)", err, tail(logFile.Name()))
	}
	cpuStart := cpuSeconds(cp.Process.Pid)
	ctx, stopGuard := guardRSS(ctx, cp.Process.Pid, cfg.maxRSS)
	defer stopGuard()
	logger.Info("control plane up", "services", cfg.services, "scope", cfg.scope, "endpoints", cfg.endpoints, "xds", xdsAddr)

	adminAPI, err := newAdmin(adminAddr, dataDir)
	if err != nil {
		return nil, err
	}
	enrollStart := time.Now()
	creds, err := enroll(ctx, logger, adminAPI, xdsAddr, identities(cfg))
	if err != nil {
		return nil, fmt.Errorf("%w (control plane log: %s)", err, tail(logFile.Name()))
	}
	res.Identities, res.EnrollSeconds = len(creds), time.Since(enrollStart).Seconds()
	fleet, err := newFleet(ctx, logger, xdsAddr, cfg, creds)
	if err != nil {
		return nil, err
	}
	defer fleet.close()

	// Phase 1: every stream connects and receives its configuration.
	// The watches hold for every stream in both scopes: a gateway routes to
	// every service; with scopeAuthorized a sidecar still receives svc-0000
	// and svc-added (callable by "*", see callers) and the outbound route
	// to svc-added, the rest of its outbound configuration being scoped.
	start := time.Now()
	initial := &watch{id: 1, cluster: clusterName(serviceName(0)), cla: clusterName(serviceName(0)), claAddr: endpointAddr(0, 0, 0)}
	fleet.setWatch(initial)
	fleet.open()
	got, _, err := fleet.await(ctx, initial, start, cfg.timeout)
	if err != nil {
		return nil, fmt.Errorf("initial configuration: %w (control plane log: %s)", err, tail(logFile.Name()))
	}
	res.ConnectSeconds = maxOf(got) / 1000
	logger.Info("all streams configured", "seconds", res.ConnectSeconds)

	stopProfile := startProfile(ctx, logger, cfg.profileDir, adminAPI)
	stopSelfProfile := startSelfProfile(logger, cfg.profileDir)
	cpChangesStart, selfChangesStart := cpuSeconds(cp.Process.Pid), cpuSeconds(os.Getpid())
	// Phase 2: a policy change (a new service, routed from the gateway).
	policyChange := &watch{id: 2, cluster: clusterName(addedService), routeRef: clusterName(addedService),
		cla: clusterName(addedService), claAddr: endpointAddr(cfg.services, 0, 0)}
	if res.Policy, err = fleet.apply(ctx, policyChange, cfg.timeout, func() (time.Time, error) {
		start := time.Now()
		return start, writePolicy(policyDir, generatePolicy(cfg.services, cfg.scope, cfg.endpoints, true, 0))
	}); err != nil {
		return nil, fmt.Errorf("policy change: %w", err)
	}
	// Phase 3: an endpoint change (svc-0000's first endpoint moves): a file
	// edit, timed from its start, or a catalog write, timed from its answer.
	endpointChange := &watch{id: 3, cla: clusterName(serviceName(0)), claAddr: endpointAddr(0, 0, 1)}
	moveEndpoint := func() (time.Time, error) {
		start := time.Now()
		return start, writePolicy(policyDir, generatePolicy(cfg.services, cfg.scope, cfg.endpoints, true, 1))
	}
	if consul != nil {
		moveEndpoint = func() (time.Time, error) {
			call := time.Now()
			err := consulTxn(ctx, consul.client, consulEndpointChange())
			answered := time.Now()
			res.ConsulChangeCallMS = float64(answered.Sub(call).Microseconds()) / 1000
			return answered, err
		}
	}
	if res.Endpoint, err = fleet.apply(ctx, endpointChange, cfg.timeout, moveEndpoint); err != nil {
		return nil, fmt.Errorf("endpoint change: %w", err)
	}
	res.ChangesControlPlaneCPUSeconds = cpuSeconds(cp.Process.Pid) - cpChangesStart
	res.ChangesLoadGeneratorCPUSeconds = cpuSeconds(os.Getpid()) - selfChangesStart
	stopSelfProfile()
	stopProfile()
	res.ControlPlaneCPUSeconds = cpuSeconds(cp.Process.Pid) - cpuStart
	res.ControlPlanePeakRSSMiB = float64(peakRSS(cp.Process.Pid)) / (1 << 20)
	return res, nil
}

// guardRSS returns a context cancelled, with the reason as its cause, when
// pid's resident memory passes limit.
func guardRSS(ctx context.Context, pid int, limit uint64) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
				if rss := peakRSS(pid); limit > 0 && rss > limit {
					cancel(fmt.Errorf("control plane RSS %d MiB passed the limit of %d MiB (-max-rss-mib)", rss>>20, limit>>20))
					return
				}
			}
		}
	}()
	return ctx, func() { close(done); cancel(nil) }
}

// writePolicy replaces the policy files atomically (write, then rename).
// The files are renamed one after the other; the control plane's file
// debounce (200 ms) reads them together.
func writePolicy(dir string, files policyFiles) error {
	for _, f := range files.files() {
		name, body := f[0], f[1]
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("rename %s: %w", name, err)
		}
	}
	return nil
}

// summarize turns per-stream latencies (ms) into percentiles.
func summarize(ms []float64) change {
	if len(ms) == 0 {
		return change{}
	}
	s := append([]float64(nil), ms...)
	sort.Float64s(s)
	at := func(p float64) float64 {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return change{P50MS: at(0.50), P99MS: at(0.99), MaxMS: s[len(s)-1], Acked: len(s)}
}

func maxOf(ms []float64) float64 {
	m := 0.0
	for _, v := range ms {
		m = max(m, v)
	}
	return m
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitHealthy(ctx context.Context, url string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("exited")
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not healthy after %s", url, timeout)
}

// cpuSeconds is utime+stime of pid (USER_HZ is 100 on Linux).
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100
}

// peakRSS is VmHWM of pid in bytes.
func peakRSS(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}

// startSelfProfile saves xdsload's own CPU profile (xdsload-cpu.pprof)
// while the changes are applied; the returned func stops it.
func startSelfProfile(logger *slog.Logger, dir string) func() {
	if dir == "" {
		return func() {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		logger.Warn("own profile not saved", "error", err)
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, "xdsload-cpu.pprof"))
	if err != nil {
		logger.Warn("own profile not saved", "error", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		logger.Warn("own profile not saved", "error", err)
		_ = f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}

// startProfile saves a CPU profile of the control plane while the changes
// are applied, and a heap profile after; the returned func waits for it.
func startProfile(ctx context.Context, logger *slog.Logger, dir string, a *admin) func() {
	if dir == "" {
		return func() {}
	}
	done := make(chan struct{})
	save := func(path, name string) {
		if err := fetchTo(ctx, a, path, filepath.Join(dir, name)); err != nil {
			logger.Warn("profile not saved", "profile", name, "error", err)
		}
	}
	go func() {
		defer close(done)
		save("/debug/pprof/profile?seconds=10", "controlplane-cpu.pprof")
	}()
	return func() {
		<-done
		save("/debug/pprof/heap", "controlplane-heap.pprof")
	}
}

// fetchTo saves an authenticated GET of the admin API to path.
func fetchTo(ctx context.Context, a *admin, urlPath, path string) error {
	url := a.base + urlPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d (no /debug/pprof on the admin address?)", url, resp.StatusCode)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read %s: %w", url, err)
	}
	return os.WriteFile(path, b, 0o644)
}
