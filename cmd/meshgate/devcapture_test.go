package main

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/policy"
)

func TestNewDevCapture(t *testing.T) {
	t.Parallel()
	svc := func(name string, addrs ...string) *policy.Service {
		s := &policy.Service{}
		s.Name, s.Namespace = name, "default"
		for _, a := range addrs {
			s.Spec.Endpoints = append(s.Spec.Endpoints, policy.Endpoint{Address: a})
		}
		return s
	}
	set := &policy.Set{Services: []*policy.Service{
		svc("frontend", "127.0.0.1:21001"),
		svc("orders", "127.0.0.1:18080", "127.0.0.1:21012"),
		svc("remote", "192.0.2.1:80"),
	}}
	dc, err := newDevCapture(set, "10.99.213.0/24", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range dc.instances {
		got = append(got, in.netns+" "+in.inbound+" "+in.app)
	}
	want := []string{
		"meshgate-dev-frontend 10.99.213.2:21001 127.0.0.1:18080",
		"meshgate-dev-orders 10.99.213.3:18080 127.0.0.1:18081",
		"meshgate-dev-orders-2 10.99.213.4:21012 127.0.0.1:18080",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("instances:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if dc.bridge.String() != "10.99.213.1/24" {
		t.Errorf("bridge %s, want 10.99.213.1/24", dc.bridge)
	}

	// The control plane serves the namespaces' addresses; the policy's set
	// is not modified.
	r := dc.evaluate(func(policy.Input) *policy.Result { return &policy.Result{Set: set} })(policy.Input{})
	if a := r.Set.Services[1].Spec.Endpoints[1].Address; a != "10.99.213.4:21012" {
		t.Errorf("orders' second endpoint served at %s, want 10.99.213.4:21012", a)
	}
	if a := r.Set.Services[2].Spec.Endpoints[0].Address; a != "192.0.2.1:80" {
		t.Errorf("a remote endpoint served at %s, want it unchanged", a)
	}
	if a := set.Services[1].Spec.Endpoints[1].Address; a != "127.0.0.1:21012" {
		t.Errorf("the policy's set was modified: %s", a)
	}

	for _, tc := range []struct{ subnet, want string }{
		{"10.99.213.0", "want an IPv4 CIDR"},
		{"fd00::/64", "want an IPv4 CIDR"},
		{"10.99.213.0/30", "want an IPv4 CIDR"},
		{"10.99.213.0/28", ""},
	} {
		_, err := newDevCapture(set, tc.subnet, slog.New(slog.DiscardHandler))
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("subnet %s: %v, want %q", tc.subnet, err, tc.want)
		}
	}
}
