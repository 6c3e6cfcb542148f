// Package e2e runs the real meshgate binary as separate processes (control
// plane, gateway, sidecars, demo services) on free loopback ports and sends
// real requests through them.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshgate/meshgate/internal/testutil"
)

// binary is the meshgate binary under test, built once by TestMain unless
// MESHGATE_BIN names one.
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	code, err := buildAndRun(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

func buildAndRun(m *testing.M) (int, error) {
	binary = os.Getenv("MESHGATE_BIN")
	if binary == "" {
		dir, err := os.MkdirTemp("", "meshgate-e2e-")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
		binary = filepath.Join(dir, "meshgate")
		cmd := exec.Command("go", "build", "-o", binary, "../cmd/meshgate")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return 0, fmt.Errorf("building meshgate: %w", err)
		}
	}
	return m.Run(), nil
}

// e2eOnly skips under -short: these tests start processes.
func e2eOnly(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e test: runs processes (skipped with -short)")
	}
}

// freeAddr returns a loopback address whose port was free a moment ago,
// for a process the test starts to bind. The port is drawn from below the
// kernel's ephemeral range (ip_local_port_range), where the kernel never
// assigns ports to the listeners and outgoing connections bound to port 0
// that the tests' processes open meanwhile, and it is never handed out twice
// in this test process: the time between the check and the bind cannot let
// another part of the run take it.
func freeAddr(t *testing.T) string {
	t.Helper()
	low := ephemeralPortLow()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := minTestPort + rand.IntN(low-minTestPort)
		if portsGiven[port] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		ln.Close()
		portsGiven[port] = true
		return ln.Addr().String()
	}
	t.Fatalf("free port: none found between %d and %d", minTestPort, low)
	return ""
}

// minTestPort is the lowest port freeAddr hands out.
const minTestPort = 20000

// portsGiven are the ports freeAddr handed out in this test process.
var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// ephemeralPortLow reads the lowest port of the kernel's ephemeral range
// (Linux's default when it cannot be read).
func ephemeralPortLow() int {
	const linuxDefault = 32768
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return linuxDefault
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return linuxDefault
	}
	low, err := strconv.Atoi(f[0])
	if err != nil || low <= minTestPort+1000 {
		return linuxDefault
	}
	return low
}

// proc is a running meshgate process.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs the meshgate binary with args; the process is stopped at the
// end of the test and its output logged if the test failed.
func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &syncBuffer{}, done: make(chan struct{})}
	args = withoutDrainDelay(args)
	p.cmd = exec.Command(binary, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("---- output of %s (%s)\n%s", name, strings.Join(args, " "), p.out.String())
		}
	})
	return p
}

// withoutDrainDelay adds --drain-delay=0 to a gateway or sidecar that does
// not set it: stopping every proxy at the end of every test must not wait
// for callers (TestGracefulStop sets its own).
func withoutDrainDelay(args []string) []string {
	if len(args) == 0 || (args[0] != "gateway" && args[0] != "sidecar") {
		return args
	}
	for _, a := range args {
		if a == "--drain-delay" || strings.HasPrefix(a, "--drain-delay=") {
			return args
		}
	}
	return append(slices.Clip(args), "--drain-delay=0")
}

// stop sends SIGTERM and waits, then kills.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill stops the process at once, as a crash would.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// eventually polls cond until it returns nil or the deadline passes: it is
// testutil.Eventually.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	testutil.Eventually(t, timeout, what, cond)
}

// reply is the demo service's JSON answer.
type reply struct {
	Service        string            `json:"service"`
	Version        string            `json:"version"`
	Method         string            `json:"method"`
	Proto          string            `json:"proto"`
	Host           string            `json:"host"`
	Path           string            `json:"path"`
	Query          string            `json:"query"`
	Headers        map[string]string `json:"headers"`
	Upstream       *reply            `json:"upstream"`
	UpstreamStatus int               `json:"upstreamStatus"`
}

// response is what a test needs to know of one HTTP exchange.
type response struct {
	status int
	header http.Header
	body   string
	reply  reply // parsed when the body is a demo reply
}

var client = &http.Client{
	Timeout: 10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
	Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16},
}

// get sends a request; headers are "Name: value" pairs, "Host: x" sets the host.
func do(method, url string, headers ...string) (*response, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return nil, err
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		v = strings.TrimSpace(v)
		if strings.EqualFold(k, "host") {
			req.Host = v
			continue
		}
		req.Header.Add(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	r := &response{status: resp.StatusCode, header: resp.Header, body: string(body)}
	_ = json.Unmarshal(body, &r.reply)
	return r, nil
}

func get(url string, headers ...string) (*response, error) {
	return do(http.MethodGet, url, headers...)
}

// writeFile writes a policy file, atomically (as editors do) when it exists.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// cpStatus is the control plane's GET /status.
type cpStatus struct {
	Version   string `json:"version"`
	LastError string `json:"lastError"`
	Proxies   []struct {
		ID           string    `json:"id"`
		Role         string    `json:"role"`
		Name         string    `json:"name"`
		SPIFFEID     string    `json:"spiffeID"`
		CertNotAfter time.Time `json:"certNotAfter"`
		MTLSMode     string    `json:"mtlsMode"`
	} `json:"proxies"`
}

// adminGet sends an authenticated GET to the control plane's admin API and
// decodes the JSON answer into v.
func adminGet(admin, token, path string, v any) error {
	req, err := http.NewRequest(http.MethodGet, "http://"+admin+path, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// ctxTimeout is a context bounded for the rest of a test.
func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// rawRequest writes raw bytes to addr and returns the first response line.
func rawRequest(addr, raw string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(raw)); err != nil {
		return "", err
	}
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if n == 0 {
		return "", err
	}
	line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
	return line, nil
}

// execCommand is exec.Command, named for the tests that run CLI verbs.
func execCommand(name string, args ...string) *exec.Cmd { return exec.Command(name, args...) }
