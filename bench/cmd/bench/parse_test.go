package main

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	t.Parallel()
	out := `Running 1s test @ http://127.0.0.1:1/tiny
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms    1.01ms  20.00ms   90.00%
  Latency Distribution
     50%    1.10ms
     75%    1.50ms
     90%    2.28ms
     99%  850.00us
  50274 requests in 1.00s, 7.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  50274.12
Transfer/sec:      7.00MB
`
	tests := []struct {
		name    string
		out     string
		want    loadResult
		wantErr bool
	}{
		{"full", out, loadResult{rps: 50274.12, requests: 50274, errors: 7, p50: 1.1, p90: 2.28, p99: 0.85}, false},
		{"no rate", "connection refused", loadResult{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseWrk(tt.out)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !closeTo(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseH2load(t *testing.T) {
	t.Parallel()
	out := `finished in 1.00s, 19645.00 req/s, 1.2MB/s
requests: 19645 total, 19709 started, 19645 done, 19640 succeeded, 5 failed, 0 errored, 0 timeout
status codes: 19640 2xx, 0 3xx, 0 4xx, 2 5xx
traffic: 1.2MB (1258291) total
                     min         max         mean         sd        +/- sd
time for request:   200us     80.00ms     31.88ms      5.00ms    70.00%
`
	tests := []struct {
		name    string
		out     string
		want    loadResult
		wantErr bool
	}{
		{"full", out, loadResult{rps: 19645, requests: 19640, errors: 7, p50: 31.88}, false},
		{"nothing", "connect failed", loadResult{}, true},
		{"no success", "finished in 1.00s, 0.00 req/s, 0B/s\nrequests: 10 total, 10 started, 10 done, 0 succeeded, 10 failed, 10 errored, 0 timeout\n", loadResult{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseH2load(tt.out)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !closeTo(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseStat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    stat
		wantErr bool
	}{
		{"plain", "42 (nginx) S 1 42 42 0 -1 4194560 100 0 0 0 150 25 0 0 20 0 1 0", stat{pgrp: 42, utime: 150, stime: 25}, false},
		{"spaces and parens in name", "7 (a (b) c) R 1 9 9 0 -1 0 0 0 0 0 3 4 0 0", stat{pgrp: 9, utime: 3, stime: 4}, false},
		{"truncated", "7 (x) R 1 9", stat{}, true},
		{"garbage", "no name here", stat{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseStat(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parseStat = %+v, %v; want %+v, err %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseVmHWM(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want uint64
	}{
		{"Name:\tnginx\nVmPeak:\t  1000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1024 kB\n", 2048 * 1024},
		{"Name:\tkthread\n", 0},
		{"VmHWM:\tlots kB\n", 0},
	}
	for _, tt := range tests {
		if got := parseVmHWM(tt.in); got != tt.want {
			t.Errorf("parseVmHWM(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

// TestSampleOwnGroup proves the /proc sampling sees a live process: this
// test binary's own group has used CPU and memory.
func TestSampleOwnGroup(t *testing.T) {
	t.Parallel()
	st, err := readStat(selfPID())
	if err != nil {
		t.Fatal(err)
	}
	u := sampleGroup(st.pgrp)
	if u.peakRSS == 0 {
		t.Fatalf("peak RSS of own group is 0: %+v", u)
	}
}

func TestProxyArgs(t *testing.T) {
	t.Parallel()
	sc := sidecarAddrs{app: "127.0.0.1:1", inbound: "127.0.0.1:2", outbound: "127.0.0.1:3"}
	tests := []struct {
		name     string
		flags    meshgateFlags
		role     string
		want     []string
		wantNone []string
	}{
		{"gateway plaintext", meshgateFlags{xds: "x:1", admin: "a:1", insecure: true, insecureFlag: "--insecure"}, "gateway",
			[]string{"gateway", "--xds", "x:1", "--name", "bench", "--insecure"}, []string{"--token"}},
		{"binary without --insecure", meshgateFlags{xds: "x:1", admin: "a:1", insecure: true}, "gateway",
			[]string{"gateway"}, []string{"--insecure"}},
		{"sidecar with token", meshgateFlags{xds: "x:1", admin: "a:1", token: "mgt1.t", insecureFlag: "--insecure"}, "sidecar",
			[]string{"sidecar", "--service", "bench", "--app", "127.0.0.1:1", "--inbound", "127.0.0.1:2", "--outbound", "127.0.0.1:3", "--token", "mgt1.t"}, []string{"--insecure", "--http1-server"}},
		{"gateway on the fast path", meshgateFlags{xds: "x:1", admin: "a:1", token: "mgt1.t", http1Server: "fast"}, "gateway",
			[]string{"gateway", "--http1-server", "fast"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := proxyArgs(tt.flags, tt.role, "bench", sc)
			joined := " " + strings.Join(got, " ") + " "
			for _, w := range tt.want {
				if !slices.Contains(got, w) {
					t.Errorf("%v lacks %q", got, w)
				}
			}
			for _, n := range tt.wantNone {
				if strings.Contains(joined, " "+n+" ") {
					t.Errorf("%v has %q", got, n)
				}
			}
		})
	}
}

func TestTableRatios(t *testing.T) {
	t.Parallel()
	tb := &table{}
	s := tb.section(wlTiny, "nginx")
	s.rows = append(s.rows,
		row{contender: "nginx", res: loadResult{rps: 1000, p99: 2}, cpuMsPer1k: 10, rssMiB: 20},
		row{contender: "meshgate", res: loadResult{rps: 500, p99: 4}, cpuMsPer1k: 30, rssMiB: 40},
		row{contender: "caddy", note: "not run: no binary"})
	md := tb.markdown([]string{"date: now"})
	for _, want := range []string{"| meshgate | 500 | ×0.50 |", "| ×2.00 |", "| 30.0 | ×3.00 | 40.0 | ×2.00 |", "| caddy | not run: no binary |", "- date: now"} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
}

func closeTo(a, b loadResult) bool {
	eq := func(x, y float64) bool { return math.Abs(x-y) < 1e-6 }
	return eq(a.rps, b.rps) && eq(a.requests, b.requests) && eq(a.errors, b.errors) &&
		eq(a.p50, b.p50) && eq(a.p90, b.p90) && eq(a.p99, b.p99) && eq(a.p999, b.p999)
}

func TestToolMissing(t *testing.T) {
	t.Parallel()
	_, errPath := exec.Command(filepath.Join(t.TempDir(), "no-such-tool")).Output()
	_, errLook := exec.Command("meshgate-bench-no-such-tool").Output()
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{name: "absolute path missing", err: fmt.Errorf("fortio: %w", errPath), want: true},
		{name: "not in PATH", err: fmt.Errorf("start nginx: %w", errLook), want: true},
		{name: "a missing file of meshgate's is a failure", err: fmt.Errorf("admin token: %w", &fs.PathError{Op: "open", Path: "x", Err: fs.ErrNotExist}), want: false},
		{name: "other error", err: errors.New("boom"), want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := toolMissing(tt.err); got != tt.want {
				t.Fatalf("toolMissing(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	tests := []struct {
		name string
		ds   []time.Duration
		p    float64
		want float64
	}{
		{name: "empty", p: 50, want: 0},
		{name: "one", ds: ms(7), p: 99, want: 7},
		{name: "median of unsorted", ds: ms(30, 10, 20), p: 50, want: 20},
		{name: "p99 of ten is the max", ds: ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), p: 99, want: 10},
		{name: "max", ds: ms(5, 1, 9), p: 100, want: 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := percentile(tt.ds, tt.p); got != tt.want {
				t.Fatalf("percentile(%v, %v) = %v, want %v", tt.ds, tt.p, got, tt.want)
			}
		})
	}
}

func TestXDSRunsScope(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"full", "quick", "smoke"} {
		m, err := modeFor(name, 2000, 1000)
		if err != nil {
			t.Fatal(err)
		}
		runs := m.xdsRuns
		last, scoped := runs[len(runs)-2], runs[len(runs)-1]
		if last.scope != scopeAll || scoped.scope != scopeAuthorized ||
			scoped.streams != last.streams || scoped.services != last.services {
			t.Errorf("%s: runs %+v: want the largest scale again with scope authorized last", name, runs)
		}
		if scoped.endpoints != endpointsConsul {
			t.Errorf("%s: the authorized run's endpoints come from %q, want %q", name, scoped.endpoints, endpointsConsul)
		}
		for _, r := range runs[:len(runs)-1] {
			if r.scope != scopeAll || r.streams > last.streams || r.endpoints != endpointsFile {
				t.Errorf("%s: runs %+v: want every scale with scope all and endpoints from files, the largest last", name, runs)
			}
		}
	}
}

func TestTableXDSScopes(t *testing.T) {
	t.Parallel()
	res := func(scope, endpoints string, policyMax, endpointMax, rss float64, clusters [2]int) xdsResult {
		return xdsResult{Streams: 2000, Gateways: 40, Services: 1000, Scope: scope, EndpointSource: endpoints, ConnectSeconds: 2,
			Policy: xdsChange{MaxMS: policyMax, SidecarClustersMin: clusters[0], SidecarClustersMax: clusters[1]}, Endpoint: xdsChange{MaxMS: endpointMax}, ControlPlaneCPUSeconds: 10, ControlPlanePeakRSSMiB: rss}
	}
	tb := &table{xds: []xdsRow{
		{streams: 2000, services: 1000, scope: scopeAll, endpoints: endpointsFile, res: res(scopeAll, endpointsFile, 4000, 100, 1000, [2]int{1002, 1002})},
		{streams: 2000, services: 1000, scope: scopeAuthorized, endpoints: endpointsConsul, res: res(scopeAuthorized, endpointsConsul, 400, 50, 250, [2]int{5, 7})},
		// An older xdsload's result has no endpointSource: files.
		{streams: 200, services: 100, scope: scopeAll, res: res(scopeAll, "", 400, 100, 100, [2]int{102, 102})},
		{streams: 20, services: 10, scope: scopeAuthorized, endpoints: endpointsConsul, note: "failed, see below"},
	}}
	md := tb.markdown(nil)
	for _, want := range []string{
		"| sidecars receive | endpoints from |",
		"| 2000 (40) | 1000 | all services: 1002 clusters | policy files | 2.00 |",
		"| 2000 (40) | 1000 | authorized (zero trust, ~4 services per sidecar): 5–7 clusters | Consul catalog | 2.00 | 0 / 0 / 400 | ×0.10 | 0 / 0 / 50 | ×0.50 |",
		"| 2000 (40) | 1000 | all services: 102 clusters | policy files | 2.00 |",
		"| 20 | 10 | authorized (zero trust, ~4 services per sidecar) | Consul catalog | failed, see below |",
		"Authorized scope vs all services at 2000 streams / 1000 services: policy change max ×0.10, endpoint change max ×0.50 (Consul catalog vs policy files), all connected ×1.00, CP CPU ×1.00, CP peak RSS ×0.25.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
}

func TestXDSEndpointsFallBack(t *testing.T) {
	t.Parallel()
	consul := xdsRun{scope: scopeAuthorized, endpoints: endpointsConsul}
	if got, why := xdsEndpoints(consul, "/bin/consul"); got != endpointsConsul || why != "" {
		t.Errorf("with the binary: %q (%q), want consul", got, why)
	}
	if got, why := xdsEndpoints(consul, ""); got != endpointsFile || !strings.Contains(why, "make consul") {
		t.Errorf("without the binary: %q (%q), want file and a reason", got, why)
	}
	if got, why := xdsEndpoints(xdsRun{scope: scopeAll}, ""); got != endpointsFile || why != "" {
		t.Errorf("default: %q (%q), want file", got, why)
	}
}
