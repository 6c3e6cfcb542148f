package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/controlplane/state/consultest"
)

// runCmd runs one command with args and returns its output and exit code.
func runCmd(t *testing.T, cmd *cobra.Command, stdin string, args ...string) (stdout string, code int, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err = cmd.Execute()
	if err != nil {
		code = exitCode(err)
	}
	return out.String(), code, err
}

const cliServices = `apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: orders}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "127.0.0.1:21011"}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: users}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "127.0.0.1:21012"}]
`

const cliRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-users}
spec:
  parentRefs: [{group: "", kind: Service, name: orders, port: 80}]
  rules:
    - backendRefs: [{name: users, port: 80}]
`

func TestApplyGetDeleteCommands(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	dir := t.TempDir()
	services := filepath.Join(dir, "services.yaml")
	if err := os.WriteFile(services, []byte(cliServices), 0o600); err != nil {
		t.Fatal(err)
	}
	consul := []string{"--store", "consul", "--consul", agent.Addr}

	steps := []struct {
		name     string
		cmd      func() *cobra.Command
		stdin    string
		args     []string
		wantCode int
		want     []string // substrings of stdout, or of the error
	}{
		{name: "route first is invalid", cmd: newApplyCmd, stdin: cliRoute, args: []string{"-f", "-"}, wantCode: 1,
			want: []string{"nothing written", `<stdin>:`, `service "users" not found`}},
		{name: "services", cmd: newApplyCmd, args: []string{"-f", dir},
			want: []string{"service default/orders created\nservice default/users created\n"}},
		{name: "route", cmd: newApplyCmd, stdin: cliRoute, args: []string{"-f", "-"},
			want: []string{"httproute default/to-users created\n"}},
		{name: "again", cmd: newApplyCmd, args: []string{"-f", services},
			want: []string{"service default/orders unchanged\nservice default/users unchanged\n"}},
		{name: "get table", cmd: newGetCmd, args: []string{"svc"},
			want: []string{"KIND", "Service   default     orders", "Service   default     users"}},
		{name: "get yaml", cmd: newGetCmd, args: []string{"httproute", "to-users", "-o", "yaml"},
			want: []string{"# meshgate/policy/HTTPRoute/default/to-users\n", "kind: HTTPRoute"}},
		{name: "get json", cmd: newGetCmd, args: []string{"Service", "orders", "-o", "json"},
			want: []string{`"kind": "Service"`, `"name": "orders"`}},
		{name: "get all json", cmd: newGetCmd, args: []string{"all", "-o", "json"}, want: []string{`"items": [`}},
		{name: "get missing", cmd: newGetCmd, args: []string{"svc", "nope"}, wantCode: 1, want: []string{"no such policy resource"}},
		{name: "get unknown kind", cmd: newGetCmd, args: []string{"widgets"}, wantCode: 2, want: []string{`unknown kind "widgets"`}},
		{name: "delete needed service", cmd: newDeleteCmd, args: []string{"svc", "users"}, wantCode: 1, want: []string{"would be invalid"}},
		{name: "delete route", cmd: newDeleteCmd, args: []string{"httproute", "to-users"}, want: []string{"httproute default/to-users deleted"}},
		{name: "delete service", cmd: newDeleteCmd, args: []string{"svc", "users"}, want: []string{"service default/users deleted"}},
		{name: "get after delete", cmd: newGetCmd, args: []string{"svc"}, want: []string{"orders"}},
	}
	for _, st := range steps {
		out, code, err := runCmd(t, st.cmd(), st.stdin, append(st.args, consul...)...)
		text := out
		if err != nil {
			text += err.Error()
		}
		if code != st.wantCode {
			t.Errorf("%s: exit code %d (%v), want %d", st.name, code, err, st.wantCode)
		}
		for _, w := range st.want {
			if !strings.Contains(text, w) {
				t.Errorf("%s: output %q lacks %q", st.name, text, w)
			}
		}
	}
	if out, _, _ := runCmd(t, newGetCmd(), "", append([]string{"svc"}, consul...)...); strings.Contains(out, "users") {
		t.Errorf("deleted service still listed: %s", out)
	}
}

func TestPolicyStoreErrors(t *testing.T) {
	t.Parallel()
	// A port nothing listens on: Consul unreachable.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	good := filepath.Join(t.TempDir(), "s.yaml")
	if err := os.WriteFile(good, []byte(cliServices), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		cmd      func() *cobra.Command
		args     []string
		wantCode int
		want     string
	}{
		{"file store apply validates", newApplyCmd, []string{"-f", good}, 0, "with --store file the policy files are the store"},
		{"file store get asks the control plane", newGetCmd, []string{"svc", "--admin", dead, "--admin-token", "x"}, 1, "no control plane admin API at " + dead},
		{"unknown store", newDeleteCmd, []string{"svc", "x", "--store", "etcd"}, 2, `unknown --store "etcd"`},
		{"consul unreachable", newApplyCmd, []string{"-f", good, "--store", "consul", "--consul", dead}, 1, "Consul at " + dead},
		{"no files", newApplyCmd, nil, 2, "give at least one policy file"},
	}
	for _, tt := range tests {
		out, code, err := runCmd(t, tt.cmd(), "", tt.args...)
		text := out
		if err != nil {
			text += err.Error()
		}
		if code != tt.wantCode || !strings.Contains(text, tt.want) {
			t.Errorf("%s: exit %d, %q; want %d and %q", tt.name, code, text, tt.wantCode, tt.want)
		}
	}
}

// catalogGateway is a Gateway whose route sends traffic to "orders", a
// service that only the Consul catalog knows.
const catalogGateway = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners: [{name: http, protocol: HTTP, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-orders}
spec:
  parentRefs: [{name: edge}]
  rules:
    - backendRefs: [{name: orders, port: 80}]
`

// TestApplyValidatesWithConsulCatalog: apply and delete with --store consul
// validate against the services of the Consul catalog, as the control plane
// does: a route to a service only Consul knows is accepted, later applies and
// deletes of unrelated resources too, and a route to a service that exists
// nowhere is refused with its file, line and field.
func TestApplyValidatesWithConsulCatalog(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	if err := agent.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "orders-1", Name: "orders", Address: "127.0.0.1", Port: 21011,
	}); err != nil {
		t.Fatal(err)
	}
	// A route to orders already in KV (written by an earlier apply, or by
	// hand): it must not make every later apply fail.
	if _, err := agent.Client.KV().Put(&api.KVPair{Key: "meshgate/policy/HTTPRoute/default/mesh-orders", Value: []byte(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mesh-orders}
spec:
  parentRefs: [{group: "", kind: Service, name: orders, port: 80}]
  rules:
    - backendRefs: [{name: orders, port: 80}]
`)}, nil); err != nil {
		t.Fatal(err)
	}
	consul := []string{"--store", "consul", "--consul", agent.Addr}
	const ghostRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-ghost}
spec:
  parentRefs: [{name: edge}]
  rules:
    - backendRefs: [{name: ghost, port: 80}]
`
	const staticOrders = `apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: orders}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "127.0.0.1:21011"}]
`
	users := strings.SplitN(cliServices, "---\n", 2)[1]
	steps := []struct {
		name     string
		cmd      func() *cobra.Command
		stdin    string
		args     []string
		wantCode int
		want     []string
	}{
		{name: "unrelated resource", cmd: newApplyCmd, stdin: users, args: []string{"-f", "-"},
			want: []string{"service default/users created\n"}},
		{name: "route to a catalog service", cmd: newApplyCmd, stdin: catalogGateway, args: []string{"-f", "-"},
			want: []string{"gateway default/edge created\n", "httproute default/to-orders created\n"}},
		{name: "route to nowhere", cmd: newApplyCmd, stdin: ghostRoute, args: []string{"-f", "-"}, wantCode: 1,
			want: []string{"nothing written", `<stdin>:7: spec.rules[0].backendRefs[0].name: service "ghost" not found`}},
		{name: "static Service named like a catalog one", cmd: newApplyCmd, stdin: staticOrders, args: []string{"-f", "-"}, wantCode: 1,
			want: []string{`<stdin>:3: metadata.name: duplicate Service "default/orders"`, "consul:catalog/orders"}},
		{name: "delete unrelated", cmd: newDeleteCmd, args: []string{"svc", "users"},
			want: []string{"service default/users deleted"}},
		{name: "delete the route's gateway", cmd: newDeleteCmd, args: []string{"gateway", "edge"}, wantCode: 1,
			want: []string{"would be invalid", `gateway "edge" not found`}},
	}
	for _, st := range steps {
		out, code, err := runCmd(t, st.cmd(), st.stdin, append(st.args, consul...)...)
		text := out
		if err != nil {
			text += err.Error()
		}
		if code != st.wantCode {
			t.Errorf("%s: exit code %d (%v), want %d", st.name, code, err, st.wantCode)
		}
		for _, w := range st.want {
			if !strings.Contains(text, w) {
				t.Errorf("%s: output %q lacks %q", st.name, text, w)
			}
		}
	}
}
