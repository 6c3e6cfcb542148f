package mesh

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshgate/meshgate/dataplane"
	"github.com/meshgate/meshgate/dataplane/identity"
)

// refused is the error a dial to a closed port returns.
var refused = &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}

// scriptedProbe is a probe whose check returns what the test sets.
func scriptedProbe(interval, timeout time.Duration) (*appProbe, func(error)) {
	p := newAppProbe(appProbeOptions{Address: "127.0.0.1:9001", Interval: interval, Timeout: timeout})
	var mu sync.Mutex
	var result error
	p.check = func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		return result
	}
	return p, func(err error) {
		mu.Lock()
		result = err
		mu.Unlock()
	}
}

// TestAppProbeFollowsTheApp: the probe runs at once, then every interval;
// its result follows the app (down at the first probe after it died, back
// at the first probe after it returned), and Run ends with its context.
func TestAppProbeFollowsTheApp(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Second
		p, set := scriptedProbe(interval, 500*time.Millisecond)
		if h := p.Health(); h.Healthy || h.Detail != "app 127.0.0.1:9001 not probed yet" {
			t.Fatalf("before the first probe: %+v", h)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { p.Run(ctx); close(done) }()

		expect := func(step string, probes int64, healthy bool, detail string) {
			t.Helper()
			synctest.Wait()
			h := p.Health()
			if got := p.probes.Load(); got != probes || h.Healthy != healthy || h.Detail != detail {
				t.Fatalf("%s: %d probes, %+v; want %d probes, healthy %v, %q", step, got, h, probes, healthy, detail)
			}
		}
		expect("started", 1, true, "app 127.0.0.1:9001 healthy (TCP connect)")

		set(refused) // the app dies
		time.Sleep(interval - time.Nanosecond)
		expect("just before the next probe", 1, true, "app 127.0.0.1:9001 healthy (TCP connect)")
		time.Sleep(time.Nanosecond)
		expect("next probe", 2, false, "app 127.0.0.1:9001 unreachable: connection refused")
		time.Sleep(interval)
		expect("still dead", 3, false, "app 127.0.0.1:9001 unreachable: connection refused")

		set(nil) // the app is back
		time.Sleep(interval)
		expect("back", 4, true, "app 127.0.0.1:9001 healthy (TCP connect)")

		cancel()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("Run did not end with its context")
		}
		if n := p.probes.Load(); n != 4 {
			t.Errorf("%d probes after cancel, want 4", n)
		}
	})
}

// TestAppProbeTimeout: a probe that gets no connection is unhealthy after
// exactly the timeout, and the next one starts an interval after it ended:
// probes never overlap, however slow the app.
func TestAppProbeTimeout(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const interval, timeout = time.Second, 300 * time.Millisecond
		p := newAppProbe(appProbeOptions{Address: "127.0.0.1:9001", Interval: interval, Timeout: timeout,
			Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
				<-ctx.Done() // a black-holed SYN
				return nil, ctx.Err()
			}})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go p.Run(ctx)
		time.Sleep(timeout - time.Nanosecond)
		synctest.Wait()
		if h := p.Health(); h.Detail != "app 127.0.0.1:9001 not probed yet" || p.probes.Load() != 1 {
			t.Fatalf("before the timeout: %d probes, %+v", p.probes.Load(), h)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if h := p.Health(); h.Healthy || h.Detail != "app 127.0.0.1:9001 unreachable: no connection within 300ms" {
			t.Fatalf("at the timeout: %+v", h)
		}
		time.Sleep(interval - time.Nanosecond)
		synctest.Wait()
		if n := p.probes.Load(); n != 1 {
			t.Fatalf("%d probes before an interval passed since the first ended, want 1", n)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if n := p.probes.Load(); n != 2 {
			t.Fatalf("%d probes an interval after the first ended, want 2", n)
		}
	})
}

// TestAppProbeHTTPTimeout: an app that accepts the health request but never
// answers is unhealthy after exactly the timeout, and the connection is
// closed.
func TestAppProbeHTTPTimeout(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var requests sync.WaitGroup
		p := newAppProbe(appProbeOptions{Address: "127.0.0.1:9001", Path: "/healthz", Interval: time.Hour, Timeout: time.Second,
			Dial: func(context.Context, string, string) (net.Conn, error) {
				client, server := net.Pipe()
				requests.Go(func() { // reads the request, never answers
					_, _ = http.ReadRequest(bufio.NewReader(server))
					_, _ = server.Read(make([]byte, 1)) // until the probe closes
					server.Close()
				})
				return client, nil
			}})
		start := time.Now()
		p.probe(t.Context())
		if h := p.Health(); h.Healthy || h.Detail != "app http://127.0.0.1:9001/healthz unreachable: no answer within 1s" {
			t.Fatalf("hung app: %+v", h)
		}
		if took := time.Since(start); took != time.Second { // virtual time: exact
			t.Errorf("the probe took %s, want its 1s timeout", took)
		}
		requests.Wait() // the connection was closed
	})
}

// TestAppProbeChecks runs one probe of each kind against real sockets.
func TestAppProbeChecks(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	closed := closedAddr(t)
	var hits sync.Map
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := hits.LoadOrStore(r.URL.Path, new(int))
		*n.(*int)++
		switch r.URL.Path {
		case "/healthz":
			_, _ = w.Write([]byte(strings.Repeat("ok", 10<<10))) // more than is read
		case "/moved":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		default:
			http.Error(w, "sick", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	app := strings.TrimPrefix(srv.URL, "http://")

	tests := []struct {
		name, addr, path string
		healthy          bool
		detail           string
	}{
		{"tcp up", ln.Addr().String(), "", true, "app " + ln.Addr().String() + " healthy (TCP connect)"},
		{"tcp refused", closed, "", false, "app " + closed + " unreachable: connection refused"},
		{"http 200", app, "/healthz", true, "app http://" + app + "/healthz healthy (HTTP GET)"},
		{"http redirect not followed", app, "/moved", true, "app http://" + app + "/moved healthy (HTTP GET)"},
		{"http 503", app, "/sick", false, "app http://" + app + "/sick unhealthy: 503 Service Unavailable"},
		{"http refused", closed, "/healthz", false, "app http://" + closed + "/healthz unreachable: connection refused"},
	}
	for _, tt := range tests {
		p := newAppProbe(appProbeOptions{Address: tt.addr, Path: tt.path, Timeout: 10 * time.Second})
		p.probe(t.Context())
		if h := p.Health(); h.Healthy != tt.healthy || h.Detail != tt.detail {
			t.Errorf("%s: %+v, want healthy %v, %q", tt.name, h, tt.healthy, tt.detail)
		}
	}
	if _, followed := hits.Load("/elsewhere"); followed {
		t.Error("the probe followed a redirect")
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestCheckAppHealthPath(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		path string
		ok   bool
	}{
		{"", true}, {"/healthz", true}, {"/health?full=1", true}, {"/a/b", true},
		{"healthz", false}, {"http://evil/healthz", false}, {"/a b", false}, {"/x#frag", false}, {"/\n", false},
	} {
		if err := checkAppHealthPath(tt.path); (err == nil) != tt.ok {
			t.Errorf("checkAppHealthPath(%q) = %v, want ok %v", tt.path, err, tt.ok)
		}
	}
}

// TestSidecarProbesOnlyWithConsul: the probe exists (and feeds the admin
// /app_health) only when the sidecar registers in Consul.
func TestSidecarProbesOnlyWithConsul(t *testing.T) {
	t.Parallel()
	client, err := api.NewClient(&api.Config{Address: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	base := Options{Service: "orders", AppAddress: "127.0.0.1:8080", RoleOptions: dataplane.RoleOptions{XDSAddresses: []string{"127.0.0.1:15010"}, Identity: identity.ProxyOptions{Insecure: true}}}
	without, err := New(base)
	if err != nil {
		t.Fatal(err)
	}
	if without.probe != nil {
		t.Error("a sidecar without Consul has an app probe")
	}
	withConsul := base
	withConsul.Consul.Client, withConsul.AppHealthPath = client, "/healthz"
	with, err := New(withConsul)
	if err != nil {
		t.Fatal(err)
	}
	if with.probe == nil || with.probe.target != "http://127.0.0.1:8080/healthz" {
		t.Fatalf("probe %+v, want one of http://127.0.0.1:8080/healthz", with.probe)
	}
	bad := withConsul
	bad.AppHealthPath = "healthz"
	if _, err := New(bad); err == nil || !strings.Contains(err.Error(), "absolute path") {
		t.Errorf("New with a relative health path: %v", err)
	}
}
