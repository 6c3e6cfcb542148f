package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"golang.org/x/sync/errgroup"

	"github.com/meshgate/meshgate/api/consulreg"
	"github.com/meshgate/meshgate/internal/consulbin"
)

// Endpoint sources (-endpoints): where the generated services' endpoints
// come from.
const (
	// endpointsFile: every service is a Service document of the policy
	// files; the endpoint change is a file edit (200 ms file debounce).
	endpointsFile = "file"
	// endpointsConsul: svc-0000..svc-(n-1) are registered in a Consul dev
	// agent and discovered by the control plane (--consul); the endpoint
	// change is a catalog write (10 ms discovery debounce), as in
	// production. svc-added stays a static Service: the policy change is
	// still a file edit.
	endpointsConsul = "consul"
)

// consulNode is the catalog node every generated instance is registered on
// (an external node: the dev agent's anti-entropy leaves it alone).
const consulNode = "xdsload"

// consulTxnMaxOps is the most operations Consul accepts in one /v1/txn.
const consulTxnMaxOps = 64

// consulBinary finds the consul binary when -consul-bin is not given
// (consulbin.Find).
func consulBinary() (string, error) {
	p, err := consulbin.Find()
	if errors.Is(err, consulbin.ErrNotFound) {
		return "", errors.New("no consul binary: build it with `make consul` (tools/consul/bin/consul), or give -consul-bin or $MESHGATE_CONSUL_BIN")
	}
	return p, err
}

// consulAgent is a running `consul agent -dev`.
type consulAgent struct {
	addr   string // HTTP API, host:port
	client *api.Client
	cmd    *exec.Cmd
	done   chan struct{}
	log    string
}

// startConsul runs a dev agent on free loopback ports with its data in dir
// and its output in logPath, and returns once it has a leader and accepts
// writes. The agent dies with xdsload (Pdeathsig); call stop to end it.
func startConsul(ctx context.Context, bin, dir, logPath string) (*consulAgent, error) {
	var lastErr error
	for range 3 { // a free port may be taken between probe and bind
		a, err := startConsulOnce(ctx, bin, dir, logPath)
		if err == nil {
			return a, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		lastErr = err
	}
	return nil, lastErr
}

func startConsulOnce(ctx context.Context, bin, dir, logPath string) (*consulAgent, error) {
	var ports [4]int
	var lis []net.Listener
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			for _, l := range lis {
				l.Close()
			}
			return nil, fmt.Errorf("free port: %w", err)
		}
		lis = append(lis, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	for _, l := range lis {
		l.Close()
	}
	_ = os.RemoveAll(dir) // a previous attempt's state
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("consul log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "agent", "-dev", "-node=xdsload-agent", "-data-dir="+dir,
		"-bind=127.0.0.1", "-client=127.0.0.1", "-advertise=127.0.0.1",
		"-http-port="+strconv.Itoa(ports[0]), "-serf-lan-port="+strconv.Itoa(ports[1]),
		"-serf-wan-port="+strconv.Itoa(ports[2]), "-server-port="+strconv.Itoa(ports[3]),
		"-grpc-port=-1", "-grpc-tls-port=-1", "-dns-port=-1", "-log-level=warn")
	// Consul's default limits (http_max_conns_per_client 200): the control
	// plane holds a few connections whatever the number of services.
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start consul (%s): %w", bin, err)
	}
	a := &consulAgent{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])), cmd: cmd,
		done: make(chan struct{}), log: logPath}
	go func() { _ = cmd.Wait(); close(a.done) }()
	a.client, err = api.NewClient(&api.Config{Address: a.addr})
	if err != nil {
		a.stop()
		return nil, fmt.Errorf("consul client: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		q := (&api.QueryOptions{}).WithContext(wctx)
		leader, err := a.client.Status().LeaderWithQueryOptions(q)
		if err == nil && leader != "" {
			// Elected; wait until writes go through too.
			if _, err = a.client.Catalog().Register(&api.CatalogRegistration{Node: consulNode, Address: "127.0.0.1"},
				(&api.WriteOptions{}).WithContext(wctx)); err == nil {
				return a, nil
			}
		}
		select {
		case <-a.done:
			return nil, fmt.Errorf("consul exited: %s", tail(logPath))
		case <-wctx.Done():
			a.stop()
			return nil, fmt.Errorf("consul not ready after 30s (last error %v): %s", err, tail(logPath))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop ends the agent (SIGTERM, SIGKILL after 5 s) and waits for it.
func (a *consulAgent) stop() {
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(5 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}

// consulInstance is endpoint e of service i (generation g, see
// endpointAddr) as a catalog service instance: its address and port are
// endpointAddr's, and meta meshgate-port 80 makes the discovered Service's
// port 80 (discovery.ServicePort), so its cluster is default/svc-XXXX:80
// as with the static Services.
func consulInstance(i, e, g int) *api.AgentService {
	host, portStr, _ := net.SplitHostPort(endpointAddr(i, e, g))
	port, _ := strconv.Atoi(portStr)
	return &api.AgentService{
		ID:      fmt.Sprintf("%s-%d", serviceName(i), e),
		Service: serviceName(i),
		Address: host,
		Port:    port,
		Meta:    map[string]string{consulreg.MetaPort: strconv.Itoa(servicePort)},
	}
}

// serviceSet is the transaction operation registering (or replacing) inst
// on consulNode.
func serviceSet(inst *api.AgentService) *api.TxnOp {
	return &api.TxnOp{Service: &api.ServiceTxnOp{Verb: api.ServiceSet, Node: consulNode, Service: *inst}}
}

// consulRegistrations are the transactions registering the n generated
// services with their two endpoints each: consulNode first, then every
// instance, at most consulTxnMaxOps operations a transaction. Instances
// without checks are passing in /v1/health/service.
func consulRegistrations(n int) []api.TxnOps {
	ops := api.TxnOps{{Node: &api.NodeTxnOp{Verb: api.NodeSet, Node: api.Node{Node: consulNode, Address: "127.0.0.1"}}}}
	for i := range n {
		for e := range 2 {
			ops = append(ops, serviceSet(consulInstance(i, e, 0)))
		}
	}
	var batches []api.TxnOps
	for len(ops) > 0 {
		k := min(len(ops), consulTxnMaxOps)
		batches = append(batches, ops[:k:k])
		ops = ops[k:]
	}
	return batches
}

// consulEndpointChange is the endpoint change: endpoint 0 of svc-0000
// re-registered (same instance ID) at endpointAddr(0, 0, 1).
func consulEndpointChange() api.TxnOps {
	return api.TxnOps{serviceSet(consulInstance(0, 0, 1))}
}

// consulTxn applies one transaction and fails on any operation's error.
func consulTxn(ctx context.Context, c *api.Client, ops api.TxnOps) error {
	ok, resp, _, err := c.Txn().Txn(ops, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("consul txn: %w", err)
	}
	if !ok {
		var b bytes.Buffer
		for _, e := range resp.Errors {
			fmt.Fprintf(&b, "; op %d: %s", e.OpIndex, e.What)
		}
		return fmt.Errorf("consul txn rolled back%s", b.String())
	}
	return nil
}

// registerServices registers every generated service in Consul, a few
// transactions at a time, and returns how long it took.
func registerServices(ctx context.Context, logger *slog.Logger, c *api.Client, n int) (time.Duration, error) {
	start := time.Now()
	batches := consulRegistrations(n)
	if err := consulTxn(ctx, c, batches[0]); err != nil { // the node first
		return 0, err
	}
	var g errgroup.Group
	g.SetLimit(4)
	for _, b := range batches[1:] {
		g.Go(func() error { return consulTxn(ctx, c, b) })
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	took := time.Since(start)
	logger.Info("services registered in consul", "services", n, "instances", 2*n, "transactions", len(batches), "took", took)
	return took, nil
}
