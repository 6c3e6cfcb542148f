package main

import (
	"math"
	"slices"
	"testing"

	"github.com/meshgate/meshgate/policy"
)

// TestCaptureLeftovers: the namespaces and veth ends a bench run that no
// longer runs left behind are found by name; a running bench's, and
// names of others (another tool's namespace, a device whose name only
// starts the same), are left alone.
func TestCaptureLeftovers(t *testing.T) {
	t.Parallel()
	alive := func(pid int) bool { return pid == 100 }
	tests := []struct {
		name      string
		netns     string
		links     string
		wantNS    []string
		wantLinks []string
	}{
		{
			name:   "ip netns list, with and without ids",
			netns:  "mgbench-cap-4242 (id: 3)\nmgbench-cap-100 (id: 2)\nmeshgate-dev-orders (id: 1)\nmgbench-cap-77\n",
			wantNS: []string{"mgbench-cap-4242", "mgbench-cap-77"},
		},
		{
			name:   "not ours",
			netns:  "mgbench-cap-\nmgbench-cap-x1\nmgbench-cap--3\nxmgbench-cap-5\n\n",
			wantNS: nil,
		},
		{
			name: "ip -o link show",
			links: "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue\\    link/loopback 00:00:00:00:00:00\n" +
				"12: mgbc4242h@if11: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500\\    link/ether 5a:72:8f:93:7e:39\n" +
				"13: mgbc100h@if2: <BROADCAST> mtu 1500\n" +
				"14: mgbc77h: <BROADCAST> mtu 1500\n" +
				"15: mgbc55n@if9: <BROADCAST> mtu 1500\n" +
				"16: mgbcxh@if9: <BROADCAST> mtu 1500\n" +
				"79: mgdev0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500\n",
			wantLinks: []string{"mgbc4242h", "mgbc77h"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := leftoverNamespaces(tt.netns, alive); !slices.Equal(got, tt.wantNS) {
				t.Errorf("leftoverNamespaces = %q, want %q", got, tt.wantNS)
			}
			if got := leftoverLinks(tt.links, alive); !slices.Equal(got, tt.wantLinks) {
				t.Errorf("leftoverLinks = %q, want %q", got, tt.wantLinks)
			}
		})
	}
}

// TestCaptureNetNames: a run's own names are the ones the leftover
// search finds, interface names fit the kernel's 15 bytes, and the two
// addresses share a /24.
func TestCaptureNetNames(t *testing.T) {
	t.Parallel()
	for _, pid := range []int{1, 4242, 4194304} {
		n := captureNetFor(pid)
		dead := func(int) bool { return false }
		if got := leftoverNamespaces(n.ns+" (id: 0)\n", dead); !slices.Equal(got, []string{n.ns}) {
			t.Errorf("pid %d: namespace %q not found as a leftover: %q", pid, n.ns, got)
		}
		if got := leftoverLinks("5: "+n.hostLink+"@if4: <BROADCAST>\n", dead); !slices.Equal(got, []string{n.hostLink}) {
			t.Errorf("pid %d: link %q not found as a leftover: %q", pid, n.hostLink, got)
		}
		if len(n.hostLink) > 15 || len(n.nsLink) > 15 {
			t.Errorf("pid %d: interface names %q, %q longer than 15 bytes", pid, n.hostLink, n.nsLink)
		}
		if n.hostIP[:len(n.hostIP)-2] != n.nsIP[:len(n.nsIP)-2] {
			t.Errorf("pid %d: %s and %s not in one /24", pid, n.hostIP, n.nsIP)
		}
	}
}

// TestCaptureRatios: the captured rows' means over the explicit rows'.
func TestCaptureRatios(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name               string
		explicit, captured []loadResult
		rps, p50, p99      float64
	}{
		{
			name:     "means of two runs each",
			explicit: []loadResult{{rps: 1000, p50: 1, p99: 4}, {rps: 3000, p50: 3, p99: 8}},
			captured: []loadResult{{rps: 1800, p50: 2, p99: 6}, {rps: 1800, p50: 4, p99: 12}},
			rps:      0.9, p50: 1.5, p99: 1.5,
		},
		{
			name:     "no explicit latency: no ratio",
			explicit: []loadResult{{rps: 1000}},
			captured: []loadResult{{rps: 500, p50: 2, p99: 3}},
			rps:      0.5,
		},
		{name: "no runs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rps, p50, p99 := captureRatios(tt.explicit, tt.captured)
			for _, c := range []struct {
				what      string
				got, want float64
			}{{"req/s", rps, tt.rps}, {"p50", p50, tt.p50}, {"p99", p99, tt.p99}} {
				if math.Abs(c.got-c.want) > 1e-9 {
					t.Errorf("%s ratio = %v, want %v", c.what, c.got, c.want)
				}
			}
		})
	}
}

// TestCapturePolicy: the section's policy loads, with and without mTLS.
func TestCapturePolicy(t *testing.T) {
	t.Parallel()
	for _, mtls := range []bool{false, true} {
		doc := capturePolicy("10.254.1.1:40000", "10.254.1.2:15006", mtls)
		set, err := policy.LoadFiles(policy.File{Name: "/bench/capture.yaml", Data: []byte(doc)})
		if err != nil {
			t.Fatalf("mtls %v: the capture policy does not load: %v\n%s", mtls, err, doc)
		}
		if len(set.Services) != 2 {
			t.Errorf("mtls %v: %d services, want 2", mtls, len(set.Services))
		}
	}
}

// TestMeanResult: each percentile's mean.
func TestMeanResult(t *testing.T) {
	t.Parallel()
	got := meanResult([]loadResult{{p50: 1, p90: 2, p99: 3, p999: 4}, {p50: 3, p90: 4, p99: 7, p999: 10}})
	if want := (loadResult{p50: 2, p90: 3, p99: 5, p999: 7}); got != want {
		t.Errorf("meanResult = %+v, want %+v", got, want)
	}
}
