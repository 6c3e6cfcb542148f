package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/policy"
)

// Names of what meshgate dev --capture makes on the host: a network
// namespace per demo service instance, a bridge joining them to the host
// (no IP forwarding needed), one veth pair per namespace.
const (
	devNetNSPrefix = "meshgate-dev-"
	devBridge      = "mgdev0"
	devVethPrefix  = "mgdev"
	// devSidecarGID is the group the sidecars of dev --capture run as
	// (root otherwise): their traffic is excluded from capture by it, so
	// that an app run as root in the namespace is captured.
	devSidecarGID = 1337
	// devAppPort is the demo app's port on the namespace's loopback.
	devAppPort = 18080
)

// devCaptureInstance is one demo service instance of dev --capture, in
// its own network namespace.
type devCaptureInstance struct {
	netns              string
	service, namespace string
	version            string
	endpoint           string // as the policy has it (loopback)
	addr               netip.Addr
	inbound            string // the sidecar's inbound listener, addr:endpoint port
	app                string // the demo app, on the namespace's loopback
}

// devCapture is the network of dev --capture.
type devCapture struct {
	bridge    netip.Prefix // the host's address on the bridge, with its length
	instances []*devCaptureInstance
	logger    *slog.Logger
}

// devCaptureCheck reports why dev --capture cannot run here.
func devCaptureCheck() error {
	if os.Geteuid() != 0 {
		return errors.New("meshgate dev --capture needs root: it creates network namespaces, a bridge and nftables rules")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("meshgate dev --capture needs the ip command (iproute2): %w", err)
	}
	return nil
}

// newDevCapture plans the namespaces of the loopback endpoints of set's
// services in subnet (the host gets its first address, the namespaces the
// next ones).
func newDevCapture(set *policy.Set, subnet string, logger *slog.Logger) (*devCapture, error) {
	p, err := netip.ParsePrefix(subnet)
	if err != nil || !p.Addr().Is4() || p.Bits() > 28 {
		return nil, fmt.Errorf("--capture-subnet %q: want an IPv4 CIDR of at least 16 addresses", subnet)
	}
	p = p.Masked()
	host := p.Addr().Next()
	dc := &devCapture{bridge: netip.PrefixFrom(host, p.Bits()), logger: logger}
	next := host
	names := map[string]int{}
	for _, svc := range set.Services {
		for _, ep := range svc.Spec.Endpoints {
			h, port, err := net.SplitHostPort(ep.Address)
			if err != nil || !isLoopback(h) {
				continue
			}
			next = next.Next()
			if !p.Contains(next) || next == lastAddr(p) {
				return nil, fmt.Errorf("--capture-subnet %s: too small for %d service instances", subnet, len(dc.instances)+1)
			}
			name := devNetNSPrefix + svc.Name
			if n := names[svc.Name]; n > 0 {
				name += "-" + strconv.Itoa(n+1)
			}
			names[svc.Name]++
			app := devAppPort
			if port == strconv.Itoa(app) {
				app++
			}
			dc.instances = append(dc.instances, &devCaptureInstance{
				netns: name, service: svc.Name, namespace: svc.Namespace, version: ep.Labels["version"],
				endpoint: ep.Address, addr: next, inbound: net.JoinHostPort(next.String(), port),
				app: net.JoinHostPort("127.0.0.1", strconv.Itoa(app)),
			})
		}
	}
	return dc, nil
}

// lastAddr is p's broadcast address.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// ip runs the ip command.
func ip(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// cleanLeftovers removes what an earlier dev --capture left (it crashed, or
// was killed): the processes in its namespaces, the namespaces, the
// bridge and the veths.
func (dc *devCapture) cleanLeftovers(ctx context.Context) error {
	out, err := ip(ctx, "-o", "netns", "list")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(out, "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if !strings.HasPrefix(name, devNetNSPrefix) {
			continue
		}
		dc.logger.Warn("removing a network namespace an earlier meshgate dev --capture left", "netns", name)
		if pids, err := ip(ctx, "netns", "pids", name); err == nil {
			for _, f := range strings.Fields(pids) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if _, err := ip(ctx, "netns", "del", name); err != nil {
			return err
		}
	}
	links, err := ip(ctx, "-o", "link", "show")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(links, "\n") {
		// "12: mgdev3@if2: <...": the name after the index.
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(fields[1], ":"), "@")
		if strings.HasPrefix(name, devVethPrefix) {
			if _, err := ip(ctx, "link", "del", name); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
				return err
			}
		}
	}
	return nil
}

// setUp creates the bridge, and for every instance its namespace and veth
// pair (eth0 inside, with the instance's address and a default route to
// the host).
func (dc *devCapture) setUp(ctx context.Context) error {
	if err := dc.cleanLeftovers(ctx); err != nil {
		return err
	}
	steps := [][]string{
		{"link", "add", devBridge, "type", "bridge"},
		{"addr", "add", dc.bridge.String(), "dev", devBridge},
		{"link", "set", devBridge, "up"},
	}
	for i, in := range dc.instances {
		veth := devVethPrefix + "v" + strconv.Itoa(i)
		steps = append(steps,
			[]string{"netns", "add", in.netns},
			[]string{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", in.netns},
			[]string{"link", "set", veth, "master", devBridge, "up"},
			[]string{"-n", in.netns, "link", "set", "lo", "up"},
			[]string{"-n", in.netns, "addr", "add", netip.PrefixFrom(in.addr, dc.bridge.Bits()).String(), "dev", "eth0"},
			[]string{"-n", in.netns, "link", "set", "eth0", "up"},
			[]string{"-n", in.netns, "route", "add", "default", "via", dc.bridge.Addr().String()},
		)
	}
	for _, s := range steps {
		if _, err := ip(ctx, s...); err != nil {
			return fmt.Errorf("setting up the network of dev --capture: %w", err)
		}
	}
	return nil
}

// tearDown removes the namespaces (their nftables rules and veths with
// them) and the bridge.
func (dc *devCapture) tearDown() {
	ctx := context.Background()
	for _, in := range dc.instances {
		if _, err := ip(ctx, "netns", "del", in.netns); err != nil {
			dc.logger.Warn("network namespace not removed", "netns", in.netns, "error", err)
		}
	}
	if err := dc.cleanLeftovers(ctx); err != nil {
		dc.logger.Warn("network of dev --capture not removed", "error", err)
	}
}

// evaluate wraps evaluate: the loopback endpoints dev runs become the
// sidecars' inbound addresses in their namespaces.
func (dc *devCapture) evaluate(evaluate func(policy.Input) *policy.Result) func(policy.Input) *policy.Result {
	moved := map[string]string{}
	for _, in := range dc.instances {
		moved[in.namespace+"/"+in.service+"@"+in.endpoint] = in.inbound
	}
	return func(in policy.Input) *policy.Result {
		r := evaluate(in)
		if r == nil || r.Set == nil {
			return r
		}
		out := *r
		set := *r.Set
		set.Services = make([]*policy.Service, len(r.Set.Services))
		for i, svc := range r.Set.Services {
			set.Services[i] = svc
			for j, ep := range svc.Spec.Endpoints {
				to, ok := moved[svc.Namespace+"/"+svc.Name+"@"+ep.Address]
				if !ok {
					continue
				}
				if set.Services[i] == svc {
					c := *svc
					c.Spec.Endpoints = append([]policy.Endpoint(nil), svc.Spec.Endpoints...)
					set.Services[i] = &c
				}
				set.Services[i].Spec.Endpoints[j].Address = to
			}
		}
		out.Set = &set
		return &out
	}
}

// xdsRelay listens on the host's bridge address, at the control plane's
// xDS port, and relays to the control plane (on loopback, which the
// namespaces do not reach). It returns its address and the task serving
// it.
func (dc *devCapture) xdsRelay(target string) (string, devTask, error) {
	_, port, err := net.SplitHostPort(target)
	if err != nil {
		return "", devTask{}, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(dc.bridge.Addr().String(), port))
	if err != nil {
		return "", devTask{}, fmt.Errorf("xDS relay for the namespaces: %w", err)
	}
	return ln.Addr().String(), devTask{name: "xds-relay", run: func(ctx context.Context) error {
		go func() { <-ctx.Done(); ln.Close() }()
		var d net.Dialer
		for {
			conn, err := ln.Accept()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			go func() {
				defer conn.Close()
				up, err := d.DialContext(ctx, "tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, conn); _ = up.(*net.TCPConn).CloseWrite() }()
				_, _ = io.Copy(conn, up)
			}()
		}
	}}, nil
}

// tasks are the demo app and the sidecar of in, each a child process in
// its namespace (meshgate demo-app, meshgate sidecar --capture
// --dns-listen), stopped with SIGTERM when ctx ends and killed if dev
// dies.
func (in *devCaptureInstance) tasks(self, xds, trustDomain, token, logLevel string) []devTask {
	sidecar := []string{"sidecar", "--service", in.service, "--namespace", in.namespace,
		"--app", in.app, "--inbound", in.inbound, "--outbound", "127.0.0.1:15001",
		"--xds", xds, "--id", xdsnode.IDPrefix(xdsnode.RoleSidecar, in.service, in.namespace) + in.inbound,
		"--drain-delay", "0s", "--log-level", logLevel,
		"--capture", "--capture-exclude-gid", strconv.Itoa(devSidecarGID), "--dns-listen", "127.0.0.1:15053"}
	if trustDomain != "" {
		sidecar = append(sidecar, "--trust-domain", trustDomain)
	}
	app := []string{"demo-app", "--name", in.service, "--version", in.version, "--listen", in.app,
		"--outbound", "127.0.0.1:15001", "--log-level", logLevel}
	run := func(args []string, gid uint32, env ...string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", in.netns, self}, args...)...)
			cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
			cmd.WaitDelay = 15 * time.Second
			cmd.Env = append(os.Environ(), env...)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			// Its own process group: a Ctrl-C reaches dev alone, which
			// stops the children with one SIGTERM each.
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
			if gid != 0 {
				cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(os.Geteuid()), Gid: gid}
			}
			err := cmd.Run()
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				err = errors.New("exited")
			}
			return err
		}
	}
	return []devTask{
		{name: "app/" + in.service + "@" + in.netns, run: run(app, 0)},
		{name: "sidecar/" + in.service + "@" + in.netns, run: run(sidecar, devSidecarGID, tokenEnv+"="+token)},
	}
}

// banner is the instance's line of the sidecars list.
func (in *devCaptureInstance) banner() string {
	return fmt.Sprintf("  %-10s netns %s: inbound %s -> app %s (capture on, DNS on 127.0.0.1:15053)", in.service, in.netns, in.inbound, in.app)
}

// printDevCapture prints the calls by plain service name from inside the
// first namespace of a service that calls others (the quickstart's
// frontend).
func printDevCapture(out io.Writer, dc *devCapture) {
	if dc == nil || len(dc.instances) == 0 {
		return
	}
	from := dc.instances[0]
	target := ""
	for _, in := range dc.instances {
		if in.service == "frontend" {
			from = in
		}
		if in.service == "orders" {
			target = "orders"
		}
	}
	if target == "" {
		for _, in := range dc.instances {
			if in.service != from.service {
				target = in.service
				break
			}
		}
	}
	if target == "" {
		return
	}
	x := "ip netns exec " + from.netns
	fmt.Fprintf(out, `Transparent mode (--capture): every service in its own network namespace, its
sidecar capturing its traffic and answering DNS; the app calls by plain name:
  %s curl http://%s/items               # %s calls %s through its sidecar (mTLS)
  %s curl -H 'x-version: v2' http://%s/items   # a mesh route sends it to orders-v2
  %s curl http://%s/internal/x          # 403: security.yaml denies /internal/* to every caller
  %s nft list ruleset                     # the capture rules

`, x, target, from.service, target, x, target, x, target, x)
}
