package main

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		wantCode   int // 0: success
		wantErr    string
		wantStdout string
		wantStderr []string
	}{
		{
			name:       "valid directory",
			args:       []string{"-f", "../../policy/testdata/good"},
			wantStdout: "ok: 3 files, 1 Gateway, 2 HTTPRoutes, 2 Services\n",
		},
		{
			name:     "invalid files",
			args:     []string{"-f", "../../policy/testdata/multi/a.yaml", "--filename", "../../policy/testdata/multi/b.yaml"},
			wantCode: 1,
			wantErr:  "5 errors in policy",
			wantStderr: []string{
				`../../policy/testdata/multi/a.yaml:11: spec.rules[0].backendRefs[1].name: service "ordrs" not found`,
				`../../policy/testdata/multi/a.yaml:13: spec.rules[0].backendRefs[1].wieght: unknown field "wieght"`,
				`../../policy/testdata/multi/a.yaml:24: spec.listeners[0].protocol: protocol UDP is not supported yet (only HTTP, HTTPS, TCP and TLS)`,
				`../../policy/testdata/multi/b.yaml:6: spec.ports[0].protocol: unknown protocol "UDP" (want HTTP, HTTP2 or TCP)`,
				`../../policy/testdata/multi/b.yaml:12: YAML syntax error: did not find expected ',' or '}'`,
			},
		},
		{
			name:     "no files",
			args:     nil,
			wantCode: 2,
			wantErr:  "validate: give at least one policy file or directory with -f",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := newValidateCmd()
			var stdout, stderr bytes.Buffer
			cmd.SetOut(&stdout)
			cmd.SetErr(&stderr)
			cmd.SetArgs(tc.args)
			cmd.SilenceUsage, cmd.SilenceErrors = true, true
			err := cmd.Execute()
			switch {
			case tc.wantCode == 0 && err != nil:
				t.Fatalf("Execute: %v", err)
			case tc.wantCode != 0 && err == nil:
				t.Fatalf("Execute succeeded, want exit code %d", tc.wantCode)
			case tc.wantCode != 0:
				if got := exitCode(err); got != tc.wantCode {
					t.Errorf("exit code = %d, want %d", got, tc.wantCode)
				}
				if err.Error() != tc.wantErr {
					t.Errorf("error = %q, want %q", err, tc.wantErr)
				}
			}
			if stdout.String() != tc.wantStdout {
				t.Errorf("stdout = %q, want %q", stdout.String(), tc.wantStdout)
			}
			var want string
			if len(tc.wantStderr) > 0 {
				want = strings.Join(tc.wantStderr, "\n") + "\n"
			}
			if stderr.String() != want {
				t.Errorf("stderr:\n%s\nwant:\n%s", stderr.String(), want)
			}
		})
	}
}

// TestValidateWarnings: warnings are printed, the exit code stays 0.
func TestValidateWarnings(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	doc := `apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: orders}
spec:
  ports: [{port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mesh}
spec:
  parentRefs: [{group: core, kind: Service, name: orders}]
`
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := runValidate(&stdout, &stderr, []string{path}); err != nil {
		t.Fatalf("validate: %v", err)
	}
	want := "warning: " + path + `:11: spec.parentRefs[0].group: group "core" is not the name of the core API group (it is ""): read as "" for this Service` + "\n"
	if stderr.String() != want || !strings.HasPrefix(stdout.String(), "ok: ") {
		t.Errorf("stdout %q, stderr %q; want ok and %q", stdout.String(), stderr.String(), want)
	}
}

// TestValidateJSON: -o json says what the control plane does with each
// resource: a route whose only problem is a backend of an unknown kind is
// accepted (that backend answers 500), a Service with a bad port is
// rejected; the exit code is 1 either way.
func TestValidateJSON(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	doc := `apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: orders}
spec:
  ports: [{port: 80}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: broken}
spec:
  ports: [{port: 0}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mesh}
spec:
  parentRefs: [{kind: Service, name: orders}]
  rules:
  - backendRefs: [{group: acme.io, kind: CustomBackend, name: thing}]
`
	if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	err := runValidateJSON(&stdout, []string{dir})
	if exitCode(err) != 1 {
		t.Fatalf("exit code %d (%v), want 1", exitCode(err), err)
	}
	var report validateReport
	if err := json.Unmarshal(stdout.Bytes(), &report); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	if report.Valid || len(report.Errors) != 2 {
		t.Errorf("valid %v, errors %q: want 2 errors", report.Valid, report.Errors)
	}
	got := map[string]string{}
	for _, r := range report.Resources {
		got[r.Kind+"/"+r.Name] = r.State
	}
	want := map[string]string{"Service/orders": "Accepted", "Service/broken": "Rejected", "HTTPRoute/mesh": "Accepted"}
	if !maps.Equal(got, want) {
		t.Errorf("states %v, want %v", got, want)
	}
}

// TestValidateCountsGRPCRoutes: the summary counts GRPCRoutes apart from
// HTTPRoutes.
func TestValidateCountsGRPCRoutes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	policyText := `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners: [{name: http, protocol: HTTP, port: 8080}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: greeter}
spec:
  ports: [{port: 50051, appProtocol: grpc}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: greeter}
spec:
  parentRefs: [{name: edge}]
  rules: [{matches: [{method: {service: helloworld.Greeter}}], backendRefs: [{name: greeter, port: 50051}]}]
`
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(policyText), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := newValidateCmd()
	var stdout, stderr bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs([]string{"-f", dir})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	if err := cmd.Execute(); err != nil {
		t.Fatalf("Execute: %v (%s)", err, stderr.String())
	}
	if got, want := stdout.String(), "ok: 1 file, 1 Gateway, 0 HTTPRoutes, 1 GRPCRoute, 1 Service\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
}
