package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestCaptureFlagsConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // fmt of the config's lists, or the error
	}{
		{"defaults", nil, "table=meshgate uids=[] cidrs=[] [] ports=[] []"},
		{"lists", []string{"--exclude-uid=1337,0", "--exclude-cidr=10.0.0.0/8,192.168.1.1", "--include-cidr=fd00::/8", "--exclude-port=22", "--include-port=80,443"},
			"table=meshgate uids=[1337 0] cidrs=[fd00::/8] [10.0.0.0/8 192.168.1.1/32] ports=[80 443] [22]"},
		{"bad cidr", []string{"--exclude-cidr=10.0.0/8"}, `--exclude-cidr "10.0.0/8"`},
		{"bad port", []string{"--exclude-port=70000"}, "--exclude-port 70000: not a port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f captureFlags
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			f.register(fs, "")
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			c, err := f.config(15002, 0, nil)
			got := fmt.Sprintf("table=%s uids=%v cidrs=%v %v ports=%v %v", c.Table, c.ExcludeUIDs, c.IncludeCIDRs, c.ExcludeCIDRs, c.IncludePorts, c.ExcludePorts)
			if err != nil {
				got = err.Error()
			}
			if !strings.Contains(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSidecarCaptureFlags(t *testing.T) {
	t.Parallel()
	base := []string{"sidecar", "--service", "orders", "--app", "127.0.0.1:8080", "--xds", "127.0.0.1:15010", "--insecure"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown mode", []string{"--capture", "--capture-unknown", "allow"}, `capture unknown destinations "allow"`},
		{"unknown mode without --capture", []string{"--capture-outbound", "127.0.0.1:15002", "--capture-unknown", "allow"}, `capture unknown destinations "allow"`},
		{"capture on the inbound address", []string{"--capture-outbound", "127.0.0.1:15006"}, "capture address 127.0.0.1:15006 is also"},
		{"capture not on loopback", []string{"--capture", "--capture-outbound", "192.0.2.1:15002"}, "the redirect reaches a loopback or wildcard address only"},
		{"bad excluded CIDR", []string{"--capture", "--capture-exclude-cidr", "10.0.0/8"}, `--capture-exclude-cidr "10.0.0/8"`},
	} {
		cmd := newRootCmd()
		cmd.SetArgs(append(append([]string{}, base...), tc.args...))
		err := cmd.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), tc.want) || exitCode(err) != 2 {
			t.Errorf("%s: err = %v (exit %d), want exit 2 with %q", tc.name, err, exitCode(err), tc.want)
		}
	}
}
