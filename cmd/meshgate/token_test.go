package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/api/token"
	"github.com/meshgate/meshgate/controlplane"
)

// startControlPlane runs a control plane on free loopback ports with its
// state in a temporary directory.
func startControlPlane(t *testing.T) (admin, dataDir string) {
	t.Helper()
	dataDir = t.TempDir()
	policyDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(policyDir, "empty.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cp, err := controlplane.New(ctx, controlplane.Options{
		ConfigPaths: []string{policyDir}, XDSAddress: "127.0.0.1:0", AdminAddress: "127.0.0.1:0", DataDir: dataDir,
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return cp.AdminAddr().String(), dataDir
}

// run runs the CLI and returns stdout.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

func TestTokenCLIRoundTrip(t *testing.T) {
	t.Setenv("MESHGATE_ADMIN", "")
	t.Setenv("MESHGATE_ADMIN_TOKEN", "")
	admin, dataDir := startControlPlane(t)
	conn := []string{"--admin", admin, "--data-dir", dataDir}

	out, err := run(t, append([]string{"token", "create", "--service", "orders", "--ttl", "2h"}, conn...)...)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := token.Parse(strings.TrimSpace(out))
	if err != nil || strings.Count(out, "\n") != 1 {
		t.Fatalf("token create printed %q: %v", out, err)
	}

	list, err := run(t, append([]string{"token", "list"}, conn...)...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(list, "ID") || !strings.Contains(list, tok.ID) || !strings.Contains(list, "orders") || strings.Contains(list, tok.Secret) {
		t.Fatalf("token list:\n%s", list)
	}
	if _, err := run(t, append([]string{"token", "revoke", tok.ID}, conn...)...); err != nil {
		t.Fatal(err)
	}
	list, _ = run(t, append([]string{"token", "list"}, conn...)...)
	if line := lineWith(list, tok.ID); !strings.HasSuffix(strings.TrimSpace(line), "true") {
		t.Errorf("revoked token listed as %q", line)
	}

	// The token can come from the environment, and a wrong one is a clear 401.
	adminTok, err := os.ReadFile(filepath.Join(dataDir, controlplane.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("MESHGATE_ADMIN_TOKEN", strings.TrimSpace(string(adminTok)))
	if out, err := run(t, "ca", "status", "--admin", admin); err != nil || !strings.Contains(out, "phase: stable") {
		t.Errorf("ca status with the env token: %v\n%s", err, out)
	}
	if out, err := run(t, "proxies", "--admin", admin); err != nil || !strings.Contains(out, "IDENTITY") {
		t.Errorf("proxies: %v\n%s", err, out)
	}
	// Revoking an identity or a proxy, and listing revocations.
	for _, bad := range [][]string{{}, {"--service", "orders", "--enrolment", "0123456789abcdef"}, {"--namespace", "prod"}} {
		if _, err := run(t, append([]string{"proxies", "revoke", "--admin", admin}, bad...)...); err == nil {
			t.Errorf("proxies revoke %v: no error", bad)
		}
	}
	if out, err := run(t, "proxies", "revoke", "--service", "orders", "--admin", admin); err != nil ||
		!strings.Contains(out, "revoked identity spiffe://meshgate.local/ns/default/svc/orders") {
		t.Errorf("proxies revoke --service: %v\n%s", err, out)
	}
	if out, err := run(t, "proxies", "revoke", "--proxy", "sidecar~orders~x", "--admin", admin); err == nil || !strings.Contains(err.Error(), "no proxy with node id") {
		t.Errorf("proxies revoke --proxy of an unknown node: %v\n%s", err, out)
	}
	if out, err := run(t, "proxies", "revocations", "--admin", admin); err != nil || !strings.Contains(lineWith(out, "identity"), "spiffe://meshgate.local/ns/default/svc/orders") {
		t.Errorf("proxies revocations: %v\n%s", err, out)
	}
	_, err = run(t, "token", "list", "--admin", admin, "--admin-token", "wrong")
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong admin token: %v", err)
	}

	// Rotation from the CLI, with a clear refusal out of order.
	if _, err := run(t, "ca", "rotate", "finish", "--admin", admin); err == nil || !strings.Contains(err.Error(), "no rotation in progress") {
		t.Errorf("finish without begin: %v", err)
	}
	out, err = run(t, "ca", "rotate", "begin", "--admin", admin)
	if err != nil || !strings.Contains(out, "phase: prepared") {
		t.Errorf("rotate begin: %v\n%s", err, out)
	}
}

func TestAdminCLIConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = run(t, "token", "list", "--admin", addr, "--admin-token", "x")
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("no control plane: %v", err)
	}
}

func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
