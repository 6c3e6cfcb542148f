package main

import (
	"strings"
	"testing"
)

// TestControlplaneServiceAddressingFlags: a bad --service-vip-cidr or
// --dns-domain is a usage error (exit 2) naming the flag, before anything
// starts.
func TestControlplaneServiceAddressingFlags(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--service-vip-cidr", "240.240.0.0/28"}, "--service-vip-cidr: service VIP range 240.240.0.0/28: too small"},
		{[]string{"--service-vip-cidr", "fd00::/48"}, "must be IPv4"},
		{[]string{"--service-vip-cidr", "orders"}, "not a CIDR"},
		{[]string{"--dns-domain", "Mesh_Local"}, "--dns-domain: DNS domain \"Mesh_Local\""},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			args := append([]string{"controlplane", "--config", t.TempDir(), "--data-dir", t.TempDir()}, tc.args...)
			_, code, err := runCmd(t, newRootCmd(), "", args...)
			if code != 2 || err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("exit %d, error %v; want exit 2 and an error containing %q", code, err, tc.wantErr)
			}
		})
	}
}
