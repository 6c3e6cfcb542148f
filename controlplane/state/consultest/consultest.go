// Package consultest starts a real Consul agent (`consul agent -dev`, the
// binary built from tools/consul) on free loopback ports for tests, and
// stops it when the test ends. Tests that use it are skipped under -short
// only; without the binary they fail and say how to build it.
package consultest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshgate/meshgate/internal/consulbin"
)

// Agent is a running dev agent.
type Agent struct {
	// Addr is the HTTP API address, host:port.
	Addr   string
	Client *api.Client
}

// Binary finds the consul binary (consulbin.Find): $MESHGATE_CONSUL_BIN,
// else tools/consul/bin/consul in the repository above the working
// directory, else consul on the PATH.
func Binary() (string, error) {
	p, err := consulbin.Find()
	if errors.Is(err, consulbin.ErrNotFound) {
		return "", fmt.Errorf("consultest: no consul binary: build it with `cd tools/consul && go build -o bin/consul github.com/hashicorp/consul` or set MESHGATE_CONSUL_BIN")
	}
	return p, err
}

// Start runs a dev agent for the test (skipped under -short) and returns it
// once it has a leader.
func Start(t testing.TB) *Agent {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a Consul agent; skipped under -short")
	}
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a free port may be taken between probe and bind
		a, err := start(t, bin)
		if err == nil {
			return a
		}
		lastErr = err
	}
	t.Fatalf("consultest: start consul: %v", lastErr)
	return nil
}

// output is the agent's combined output, for failure messages.
type output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

func start(t testing.TB, bin string) (*Agent, error) {
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	httpPort := ports[0]
	args := []string{
		"agent", "-dev",
		"-bind=127.0.0.1", "-client=127.0.0.1", "-advertise=127.0.0.1",
		"-node=meshgate-test",
		"-http-port=" + strconv.Itoa(httpPort),
		"-serf-lan-port=" + strconv.Itoa(ports[1]),
		"-serf-wan-port=" + strconv.Itoa(ports[2]),
		"-server-port=" + strconv.Itoa(ports[3]),
		"-grpc-port=-1", "-grpc-tls-port=-1", "-dns-port=-1",
		"-log-level=warn",
	}
	cmd := exec.Command(bin, args...)
	out := &output{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort))
	client, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		stop()
		return nil, fmt.Errorf("consul client: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		leader, err := client.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(ctx))
		if err == nil && leader != "" {
			// The leader is elected; wait until KV writes go through too.
			if _, err := client.KV().Put(&api.KVPair{Key: "consultest/ready", Value: []byte("1")}, nil); err == nil {
				break
			}
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("consul exited: %s", out.String())
		case <-ctx.Done():
			stop()
			return nil, fmt.Errorf("no leader after 30s: %s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	_, _ = client.KV().Delete("consultest/ready", nil)
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("consul output:\n%s", out.String())
		}
	})
	return &Agent{Addr: addr, Client: client}, nil
}

// freePorts reserves n distinct loopback TCP ports and frees them for the
// agent; the serf ports are UDP too, which is almost always free alongside.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lis []net.Listener
	defer func() {
		for _, l := range lis {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		lis = append(lis, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
