package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/policy"
)

// TestDevProxylessClients: a Service annotated with a proxyless target
// becomes a client of that service, its files under the state directory;
// a target that is not name[.namespace][:port] is an error naming the
// service and the annotation.
func TestDevProxylessClients(t *testing.T) {
	state := t.TempDir()
	svc := func(name, namespace, target string) *policy.Service {
		s := &policy.Service{Name: name, Namespace: namespace}
		if target != "" {
			s.Annotations = map[string]string{AnnotationDevProxylessTarget: target}
		}
		return s
	}
	for _, tc := range []struct {
		name     string
		services []*policy.Service
		want     []string // service, target, dir relative to state
		wantErr  string
	}{
		{name: "none", services: []*policy.Service{svc("orders", "default", "")}},
		{
			name:     "default namespace",
			services: []*policy.Service{svc("orders", "default", ""), svc("grpc-client", "default", "greeter:9090")},
			want:     []string{"grpc-client", "xds:///greeter:9090", "proxyless/grpc-client"},
		},
		{
			name:     "other namespace, no port",
			services: []*policy.Service{svc("cli", "shop", "greeter.shop")},
			want:     []string{"cli", "xds:///greeter.shop", "proxyless/cli.shop"},
		},
		{name: "scheme", services: []*policy.Service{svc("c", "default", "xds:///greeter:9090")}, wantErr: `service c: annotation meshgate.dev/dev-proxyless-target: "xds:///greeter:9090" is not a target`},
		{name: "bad port", services: []*policy.Service{svc("c", "default", "greeter:0")}, wantErr: `port "0" is not 1-65535`},
		{name: "empty", services: []*policy.Service{svc("c", "default", " ")}, wantErr: "is not a target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := devProxylessClients(&policy.Set{Services: tc.services}, state)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(tc.want) == 0 {
				if len(got) != 0 {
					t.Fatalf("clients %+v, want none", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("%d clients, want 1", len(got))
			}
			c := got[0]
			if c.service != tc.want[0] || c.target != tc.want[1] || c.dir != filepath.Join(state, tc.want[2]) ||
				c.bootstrapFile() != filepath.Join(state, tc.want[2], "bootstrap.json") {
				t.Errorf("client %s %s %s, want %v", c.service, c.target, c.dir, tc.want)
			}
		})
	}
}
