package main

import (
	"context"
	"strings"
	"testing"
)

func TestSidecarAppHealthFlags(t *testing.T) {
	t.Parallel()
	base := []string{"sidecar", "--service", "orders", "--app", "127.0.0.1:8080", "--xds", "127.0.0.1:15010", "--insecure"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"path without consul", []string{"--app-health-path", "/healthz"}, "--app-health-path needs --consul"},
		{"interval without consul", []string{"--app-health-interval", "2s"}, "--app-health-interval needs --consul"},
		{"zero interval", []string{"--consul", "127.0.0.1:1", "--app-health-interval", "0s"}, "must be positive"},
		{"relative path", []string{"--consul", "127.0.0.1:1", "--app-health-path", "healthz"}, "want an absolute path"},
	}
	for _, tt := range tests {
		cmd := newRootCmd()
		cmd.SetArgs(append(append([]string{}, base...), tt.args...))
		err := cmd.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), tt.want) || exitCode(err) != 2 {
			t.Errorf("%s: err = %v (exit %d), want exit 2 with %q", tt.name, err, exitCode(err), tt.want)
		}
	}
}
