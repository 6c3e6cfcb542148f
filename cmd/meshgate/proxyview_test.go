package main

import (
	"strings"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshgate/meshgate/controlplane"
	"github.com/meshgate/meshgate/controlplane/xds"
)

func TestPrintProxies(t *testing.T) {
	t.Parallel()
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		p    xds.ProxyStatus
		want []string
	}{
		{
			name: "in sync",
			p: xds.ProxyStatus{ID: "sidecar~orders~1", Role: "sidecar", Namespace: "default", Name: "orders", Address: "127.0.0.1:21011",
				SPIFFEID: "spiffe://meshgate.local/ns/default/svc/orders", CertNotAfter: at, InSync: true,
				Acked:  map[string]string{resourcev3.ListenerType: "0123456789abcdef", resourcev3.ClusterType: "fedcba9876543210"},
				Served: map[string]string{resourcev3.ListenerType: "0123456789abcdef", resourcev3.ClusterType: "fedcba9876543210"}},
			want: []string{"sidecar~orders~1 sidecar default/orders 127.0.0.1:21011 spiffe://meshgate.local/ns/default/svc/orders 2030-01-02T03:04:05Z - 01234567 - fedcba98 - - yes -"},
		},
		{
			name: "rejecting",
			p: xds.ProxyStatus{ID: "gateway~edge~1", Role: "gateway", Namespace: "default", Name: "edge", Peer: "127.0.0.1:5555", Address: "127.0.0.1:5555",
				Acked:    map[string]string{resourcev3.ListenerType: "0123456789abcdef"},
				Served:   map[string]string{resourcev3.ListenerType: "aaaaaaaabbbbbbbb"},
				Nacked:   map[string]string{resourcev3.ListenerType: "bind: address\nalready in use"},
				LastNack: &xds.Nack{TypeURL: resourcev3.ListenerType, Version: "aaaaaaaabbbbbbbb", Error: "bind: address\nalready in use", At: at}},
			want: []string{"gateway~edge~1 gateway default/edge 127.0.0.1:5555 - - - 01234567!", " no LDS aaaaaaaa at 2030-01-02T03:04:05Z: bind: address already in use"},
		},
		{
			name: "held",
			p:    xds.ProxyStatus{ID: "gateway~edge~2", Held: "the new configuration would remove every endpoint (3) without a policy change"},
			want: []string{"held - the new configuration would remove every endpoint (3)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b strings.Builder
			if err := printProxies(&b, []proxyView{newProxyView(tt.p)}); err != nil {
				t.Fatal(err)
			}
			got := strings.Join(strings.Fields(b.String()), " ")
			for _, w := range tt.want {
				if w = strings.Join(strings.Fields(w), " "); !strings.Contains(got, w) {
					t.Errorf("output lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		st   controlplane.Status
		want string
	}{
		{"ok", controlplane.Status{Serving: true, ProxyCounts: controlplane.ProxyCounts{Connected: 2, OnLatest: 2}}, "ok"},
		{"waiting", controlplane.Status{}, "degraded: not serving"},
		{"proxies", controlplane.Status{Serving: true, ProxyCounts: controlplane.ProxyCounts{Connected: 4, OnLatest: 1, Held: 1, Nacking: 1}},
			"degraded: 1 proxy(ies) rejecting a configuration, 1 proxy(ies) held, 2 proxy(ies) not on the latest config"},
	}
	for _, tt := range tests {
		if got := health(tt.st); got != tt.want {
			t.Errorf("%s: health = %q, want %q", tt.name, got, tt.want)
		}
	}
}
