package conformance

// The mesh translation. In the suite's mesh namespaces every pod of a
// Service runs behind a meshgate sidecar (one per Service selecting the pod:
// a sidecar has the identity of one service), whose inbound address is the
// Service's endpoint. The suite's mesh tests "exec" the echo client in a
// client pod (echo.MeshPod: `client URL --method=M -H k:v [--count=N]`
// through the Kubernetes exec API); the runner serves that API on loopback
// (execServer) and makes the request itself, through the outbound listener
// of that pod's sidecar, printing the answer as the echo client does.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
)

// meshSidecar is a sidecar in front of one pod for one Service.
type meshSidecar struct {
	service string // the Service's name; its namespace is the pod's
	// workload: the pod has no Service (a client only, like the suite's
	// consumer namespace); the sidecar's service is the Deployment's name
	// and the runner adds a meshgate Service of that name for it.
	workload bool
	addrs    sidecarAddrs
	proc     *proc
}

// syncSidecars runs a sidecar per (Service, pod) in the mesh namespaces and
// stops those whose Service or pod is gone. Called with w.mu held.
func (w *world) syncSidecars(ctx context.Context, objs *objects) {
	want := map[string]bool{}
	for _, s := range objs.services {
		if !isMeshNamespace(s.Namespace) || len(s.Spec.Selector) == 0 {
			continue
		}
		sel := labels.SelectorFromSet(s.Spec.Selector)
		for k, b := range w.backends {
			if b.namespace != s.Namespace || !sel.Matches(labels.Set(b.labels)) {
				continue
			}
			id := s.Name + "@" + k.String()
			want[id] = true
			if b.sidecars == nil {
				b.sidecars = map[string]*meshSidecar{}
			}
			if b.sidecars[s.Name] != nil {
				continue
			}
			tok, err := w.token(s.Name, s.Namespace)
			if err != nil {
				w.t.Logf("sidecar %s: %v", id, err)
				continue
			}
			sc := &meshSidecar{service: s.Name, addrs: sidecarAddrs{
				inbound: "127.0.0.1:" + freePort(w.t), outbound: "127.0.0.1:" + freePort(w.t), admin: "127.0.0.1:" + freePort(w.t)}}
			sc.proc = w.start(ctx, "sidecar "+id, bins.meshgate, "sidecar", "--service", s.Name, "--namespace", s.Namespace,
				"--app", b.appAddr, "--inbound", sc.addrs.inbound, "--outbound", sc.addrs.outbound,
				"--admin", sc.addrs.admin, "--xds", xdsAddress, "--token", tok, "--drain-delay=0", "--log-level", "warn")
			b.sidecars[s.Name] = sc
		}
	}
	for k, b := range w.backends {
		if !isMeshNamespace(b.namespace) || len(b.sidecars) > 0 && !onlyWorkload(b) {
			continue
		}
		hasService := false
		for id := range want {
			if strings.HasSuffix(id, "@"+k.String()) {
				hasService = true
			}
		}
		if hasService || b.sidecars[k.name] != nil {
			want[k.name+"@"+k.String()] = !hasService
			continue
		}
		tok, err := w.token(k.name, k.namespace)
		if err != nil {
			w.t.Logf("sidecar of %s: %v", k, err)
			continue
		}
		sc := &meshSidecar{service: k.name, workload: true, addrs: sidecarAddrs{
			inbound: "127.0.0.1:" + freePort(w.t), outbound: "127.0.0.1:" + freePort(w.t), admin: "127.0.0.1:" + freePort(w.t)}}
		sc.proc = w.start(ctx, "sidecar "+k.String(), bins.meshgate, "sidecar", "--service", k.name, "--namespace", k.namespace,
			"--app", b.appAddr, "--inbound", sc.addrs.inbound, "--outbound", sc.addrs.outbound,
			"--admin", sc.addrs.admin, "--xds", xdsAddress, "--token", tok, "--drain-delay=0", "--log-level", "warn")
		if b.sidecars == nil {
			b.sidecars = map[string]*meshSidecar{}
		}
		b.sidecars[k.name] = sc
		want[k.name+"@"+k.String()] = true
	}
	for k, b := range w.backends {
		for name, sc := range b.sidecars {
			if !want[name+"@"+k.String()] {
				sc.proc.stop()
				delete(b.sidecars, name)
			}
		}
	}
}

// onlyWorkload reports whether every sidecar of b is a workload sidecar.
func onlyWorkload(b *backend) bool {
	for _, sc := range b.sidecars {
		if !sc.workload {
			return false
		}
	}
	return true
}

// outbound is the outbound listener a pod's calls leave through: that of
// its first sidecar by service name.
func (b *backend) outbound() string {
	var names []string
	for n := range b.sidecars {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return ""
	}
	return b.sidecars[names[0]].addrs.outbound
}

// execServer serves the Kubernetes exec API (SPDY, protocol
// v4.channel.k8s.io) for the echo client of the mesh tests.
func (w *world) execServer(ctx context.Context) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		w.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(w.serveExec), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	return "http://" + ln.Addr().String()
}

// serveExec handles POST /api/v1/namespaces/NS/pods/POD/exec?command=...
// (and GET .../pods/POD/log: servePodLog).
func (w *world) serveExec(rw http.ResponseWriter, req *http.Request) {
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	if len(parts) == 7 && parts[2] == "namespaces" && parts[4] == "pods" && parts[6] == "log" {
		w.servePodLog(rw, req, parts[3], parts[5])
		return
	}
	if len(parts) != 7 || parts[2] != "namespaces" || parts[4] != "pods" || parts[6] != "exec" {
		http.Error(rw, "the runner serves pods/exec only", http.StatusNotFound)
		return
	}
	ns, pod, args := parts[3], parts[5], req.URL.Query()["command"]
	if _, err := httpstream.Handshake(req, rw, []string{"v4.channel.k8s.io"}); err != nil {
		return
	}
	streams := make(chan httpstream.Stream, 4)
	conn := spdy.NewResponseUpgrader().UpgradeResponse(rw, req, func(s httpstream.Stream, replySent <-chan struct{}) error {
		streams <- s
		return nil
	})
	if conn == nil {
		return
	}
	defer conn.Close()
	var stdout, errStream httpstream.Stream
	timeout := time.After(10 * time.Second)
	for stdout == nil || errStream == nil {
		select {
		case s := <-streams:
			switch s.Headers().Get(corev1.StreamType) {
			case corev1.StreamTypeStdout:
				stdout = s
			case corev1.StreamTypeError:
				errStream = s
			}
		case <-timeout:
			return
		}
	}
	out, err := w.echoClient(ns, pod, args)
	_, _ = io.WriteString(stdout, out)
	_ = stdout.Close()
	status := metav1.Status{Status: metav1.StatusSuccess}
	if err != nil {
		status = metav1.Status{Status: metav1.StatusFailure, Message: err.Error(), Reason: "NonZeroExitCode",
			Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: "ExitCode", Message: "1"}}}}
	}
	b, _ := json.Marshal(status)
	_, _ = errStream.Write(b)
	_ = errStream.Close()
	time.Sleep(50 * time.Millisecond) // let the client read both streams before the connection closes
}

// echoClient runs `client URL [--method=M] [-H k:v]... [--count=N]` from
// the pod: the requests go through the pod's sidecar outbound listener (a
// grpc:// URL: gRPC calls, meshGRPCClient).
// Output as the Istio echo client prints it.
func (w *world) echoClient(ns, pod string, args []string) (string, error) {
	if len(args) < 2 || args[0] != "client" {
		return "", fmt.Errorf("unsupported command %q", args)
	}
	u, err := url.Parse(args[1])
	if err != nil {
		return "", err
	}
	method, count := http.MethodGet, 1
	headers := http.Header{}
	for i := 2; i < len(args); i++ {
		switch a := args[i]; {
		case strings.HasPrefix(a, "--method="):
			method = strings.TrimPrefix(a, "--method=")
		case strings.HasPrefix(a, "--count="):
			count, _ = strconv.Atoi(strings.TrimPrefix(a, "--count="))
		case a == "-H" && i+1 < len(args):
			k, v, _ := strings.Cut(args[i+1], ":")
			headers.Add(k, v)
			i++
		}
	}
	w.mu.Lock()
	outbound := ""
	for _, b := range w.backends {
		if b.namespace == ns && b.pod == pod {
			outbound = b.outbound()
		}
	}
	w.mu.Unlock()
	if outbound == "" {
		return "", fmt.Errorf("pod %s/%s has no sidecar", ns, pod)
	}
	if u.Scheme == "grpc" {
		return meshGRPCClient(u, outbound, count)
	}
	client := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var out strings.Builder
	for i := 0; i < max(count, 1); i++ {
		target := *u
		target.Scheme, target.Host = "http", outbound
		req, err := http.NewRequest(method, target.String(), nil)
		if err != nil {
			return "", err
		}
		req.Host = u.Host
		for k, vs := range headers {
			for _, v := range vs {
				if strings.EqualFold(k, "host") {
					req.Host = v
					continue
				}
				req.Header.Add(k, v)
			}
		}
		resp, err := client.Do(req)
		if err != nil {
			return out.String(), err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		var seen struct {
			Path      string              `json:"path"`
			Host      string              `json:"host"`
			Method    string              `json:"method"`
			Headers   map[string][]string `json:"headers"`
			Namespace string              `json:"namespace"`
			Pod       string              `json:"pod"`
		}
		_ = json.Unmarshal(body, &seen)
		n := fmt.Sprintf("[%d]", i)
		fmt.Fprintf(&out, "%s Url=%s\n%s StatusCode=%d\n", n, args[1], n, resp.StatusCode)
		if seen.Pod != "" {
			fmt.Fprintf(&out, "%s Host=%s\n%s Hostname=%s\n%s Method=%s\n%s URL=%s\n", n, seen.Host, n, seen.Pod, n, seen.Method, n, seen.Path)
			for k, vs := range seen.Headers {
				for _, v := range vs {
					fmt.Fprintf(&out, "%s RequestHeader=%s:%s\n", n, k, v)
				}
			}
		}
		for k, vs := range resp.Header {
			for _, v := range vs {
				fmt.Fprintf(&out, "%s ResponseHeader=%s:%s\n", n, k, v)
			}
		}
		out.WriteString("\n")
	}
	return out.String(), nil
}
