package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// consulAgent is a real `consul agent -dev` (tools/consul) on free loopback
// ports with its own data directory, so that a restart keeps the agent's
// local registrations (the catalog itself is in memory in dev mode and is
// rebuilt from them).
type consulAgent struct {
	t       *testing.T
	bin     string
	dataDir string
	ports   []int // http, serf lan, serf wan, server
	addr    string
	client  *api.Client
	proc    *exec.Cmd
	out     *syncBuffer
	done    chan struct{}
}

// consulBinary is $MESHGATE_CONSUL_BIN, else tools/consul/bin/consul (built
// by `make consul`).
func consulBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("MESHGATE_CONSUL_BIN"); p != "" {
		return p
	}
	p, err := filepath.Abs(filepath.Join("..", "tools", "consul", "bin", "consul"))
	if err == nil {
		if _, err = os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("no consul binary (%v): run `make consul` or set MESHGATE_CONSUL_BIN", err)
	return ""
}

// startConsul starts an agent for the test and waits for its leader; it is
// stopped when the test ends. A port found free can be taken before the
// agent binds it (by another test's outgoing connection: some open
// thousands), and the agent then exits at once: it is started again on
// other ports, twice at most.
func startConsul(t *testing.T) *consulAgent {
	t.Helper()
	e2eOnly(t)
	a := &consulAgent{t: t, bin: consulBinary(t), out: &syncBuffer{}}
	t.Cleanup(func() {
		a.stop()
		if t.Failed() {
			t.Logf("---- output of consul\n%s", a.out.String())
		}
	})
	for attempt := 1; ; attempt++ {
		a.dataDir, a.ports = t.TempDir(), nil
		for range 4 {
			p, _ := strconv.Atoi(strings.TrimPrefix(freeAddr(t), "127.0.0.1:"))
			a.ports = append(a.ports, p)
		}
		a.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(a.ports[0]))
		client, err := api.NewClient(&api.Config{Address: a.addr})
		if err != nil {
			t.Fatal(err)
		}
		a.client = client
		if a.launch() {
			return a
		}
		if attempt == 3 {
			t.Fatalf("consul exited at start %d times (its output is logged below)", attempt)
		}
		t.Logf("consul exited at start on ports %v (a port taken meanwhile?); trying other ports", a.ports)
	}
}

// start runs the agent again, on the same ports and data directory, and
// waits until it has a leader.
func (a *consulAgent) start() {
	a.t.Helper()
	if !a.launch() {
		a.t.Fatalf("consul exited at start on ports %v", a.ports)
	}
}

// launch runs the agent and waits until it has a leader (true) or has
// exited (false).
func (a *consulAgent) launch() bool {
	a.t.Helper()
	args := []string{"agent", "-dev", "-data-dir=" + a.dataDir, "-node=meshgate-e2e",
		"-bind=127.0.0.1", "-client=127.0.0.1", "-advertise=127.0.0.1",
		"-http-port=" + strconv.Itoa(a.ports[0]),
		"-serf-lan-port=" + strconv.Itoa(a.ports[1]),
		"-serf-wan-port=" + strconv.Itoa(a.ports[2]),
		"-server-port=" + strconv.Itoa(a.ports[3]),
		"-grpc-port=-1", "-grpc-tls-port=-1", "-dns-port=-1", "-log-level=info"}
	a.proc = exec.Command(a.bin, args...)
	a.proc.Stdout, a.proc.Stderr = a.out, a.out
	a.done = make(chan struct{})
	if err := a.proc.Start(); err != nil {
		a.t.Fatalf("start consul: %v", err)
	}
	done, cmd := a.done, a.proc
	go func() { _ = cmd.Wait(); close(done) }()
	exited := func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	eventually(a.t, 30*time.Second, "consul leader", func() error {
		if exited() {
			return nil // judged below
		}
		leader, err := a.client.Status().Leader()
		if err != nil {
			return err
		}
		if leader == "" {
			return fmt.Errorf("no leader yet")
		}
		return nil
	})
	return !exited()
}

// stop ends the agent (SIGINT: a clean leave) and waits for it.
func (a *consulAgent) stop() {
	if a.proc == nil {
		return
	}
	select {
	case <-a.done:
		return
	default:
	}
	_ = a.proc.Process.Signal(syscall.SIGINT)
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		_ = a.proc.Process.Kill()
		<-a.done
	}
}

// checks describes the checks of every instance of the services, one line
// each (status and output), for a failed test's log.
func (a *consulAgent) checks(services ...string) string {
	var b strings.Builder
	for _, svc := range services {
		entries, err := a.instances(context.Background(), svc)
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", svc, err)
			continue
		}
		for _, e := range entries {
			for _, hc := range e.Checks {
				fmt.Fprintf(&b, "%s %s: %s %q\n", svc, hc.CheckID, hc.Status, strings.TrimSpace(hc.Output))
			}
		}
	}
	return b.String()
}

// instances lists the catalog instances of a service (every health state).
func (a *consulAgent) instances(ctx context.Context, service string) ([]*api.ServiceEntry, error) {
	entries, _, err := a.client.Health().Service(service, "", false, (&api.QueryOptions{}).WithContext(ctx))
	return entries, err
}

// consulSidecar starts a sidecar for svc that registers itself in Consul,
// and waits until Consul reports it passing.
func (c *cluster) consulSidecar(consul *consulAgent, svc, app, inbound, outbound string, extra ...string) *proc {
	c.t.Helper()
	admin := c.addr("sidecar-admin-" + inbound)
	args := append([]string{"sidecar", "--service", svc, "--app", app,
		"--inbound", inbound, "--outbound", outbound, "--xds", c.xds, "--admin", admin,
		"--id", "sidecar~" + svc + "~" + inbound, "--token", c.token(svc), "--log-level", "debug",
		"--consul", consul.addr, "--consul-check-interval", "200ms"}, extra...)
	p := start(c.t, "sidecar "+svc+" "+inbound, args...)
	c.waitReady(admin)
	c.waitPassing(consul, svc, inbound)
	return p
}

// waitPassing waits until the instance of svc at addr is passing in Consul.
func (c *cluster) waitPassing(consul *consulAgent, svc, addr string) {
	c.t.Helper()
	eventually(c.t, 15*time.Second, svc+" at "+addr+" passing in consul", func() error {
		entries, err := consul.instances(context.Background(), svc)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if net.JoinHostPort(e.Service.Address, strconv.Itoa(e.Service.Port)) == addr {
				if s := e.Checks.AggregatedStatus(); s != api.HealthPassing {
					return fmt.Errorf("status %s", s)
				}
				return nil
			}
		}
		return fmt.Errorf("not registered")
	})
}
