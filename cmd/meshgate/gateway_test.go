package main

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/dataplane"
	"github.com/meshgate/meshgate/dataplane/identity"
)

const testToken = "mgt1.0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.0000000000000000000000000000000000000000000000000000000000000000"

func TestProxyIdentityFlags(t *testing.T) {
	// Not parallel: it sets $MESHGATE_TOKEN.
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(dir, "empty")
	if err := os.WriteFile(emptyFile, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		flags     proxyIdentityFlags
		env       string
		wantToken string
		wantErr   string
	}{
		{name: "flag", flags: proxyIdentityFlags{token: "from-flag"}, env: "from-env", wantToken: "from-flag"},
		{name: "file, trimmed", flags: proxyIdentityFlags{tokenFile: tokenFile}, env: "from-env", wantToken: testToken},
		{name: "environment", env: " from-env\n", wantToken: "from-env"},
		{name: "insecure ignores the environment", flags: proxyIdentityFlags{insecure: true}, env: "from-env", wantToken: ""},
		{name: "both flags", flags: proxyIdentityFlags{token: "a", tokenFile: tokenFile}, wantErr: "not both"},
		{name: "missing file", flags: proxyIdentityFlags{tokenFile: filepath.Join(dir, "nope")}, wantErr: "--token-file"},
		{name: "empty file", flags: proxyIdentityFlags{tokenFile: emptyFile}, wantErr: "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(tokenEnv, tt.env)
			got, err := tt.flags.options()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("options() = %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Token != tt.wantToken || got.Insecure != tt.flags.insecure {
				t.Fatalf("token %q insecure %v, want %q %v", got.Token, got.Insecure, tt.wantToken, tt.flags.insecure)
			}
		})
	}
}

func TestProxyCommandsRequireToken(t *testing.T) {
	t.Setenv(tokenEnv, "")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"gateway", []string{"gateway", "--name", "edge", "--xds", "127.0.0.1:15010"}, "meshgate token create --service edge --namespace default"},
		{"sidecar", []string{"sidecar", "--service", "orders", "--app", "127.0.0.1:8080", "--xds", "127.0.0.1:15010"}, "meshgate token create --service orders --namespace default"},
		{"insecure with token", []string{"sidecar", "--service", "orders", "--app", "127.0.0.1:8080", "--xds", "127.0.0.1:15010", "--insecure", "--token", testToken}, "--insecure"},
		{"bad token", []string{"gateway", "--name", "edge", "--xds", "127.0.0.1:15010", "--token", "nope"}, "malformed join token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := newRootCmd()
			cmd.SetArgs(tt.args)
			err := cmd.ExecuteContext(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) || exitCode(err) != 2 {
				t.Fatalf("%v: err = %v (exit %d), want exit 2 with %q", tt.args, err, exitCode(err), tt.want)
			}
		})
	}
}

func TestParseByteSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "0", want: 0},
		{in: "50000000", want: 50_000_000},
		{in: "512B", want: 512},
		{in: "64KiB", want: 64 << 10},
		{in: "48MiB", want: 48 << 20},
		{in: " 2 GiB ", want: 2 << 30},
		{in: "1TiB", want: 1 << 40},
		{in: "48MB", wantErr: true}, // GOMEMLIMIT's syntax: IEC units only
		{in: "-1MiB", wantErr: true},
		{in: "MiB", wantErr: true},
		{in: "1.5GiB", wantErr: true},
		{in: "99999999999TiB", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := parseByteSize(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parseByteSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestProxyRoleFlags: the flags the gateway and sidecar commands share give
// one dataplane.RoleOptions value, and both commands have all of them.
func TestProxyRoleFlags(t *testing.T) {
	t.Setenv(tokenEnv, "")
	t.Setenv(http1ServerEnv, "")
	tests := []struct {
		name    string
		args    []string
		want    dataplane.RoleOptions
		wantErr string
	}{
		{
			name: "defaults",
			args: []string{"--xds", "127.0.0.1:15010", "--insecure"},
			want: dataplane.RoleOptions{
				XDSAddresses: []string{"127.0.0.1:15010"}, AdminAddress: "127.0.0.1:9",
				Identity: identity.ProxyOptions{TrustDomain: spiffeid.DefaultTrustDomain, Insecure: true},
				Serving: dataplane.ServingOptions{FastHTTP1: true, MaxConnections: dataplane.DefaultMaxConnections,
					DrainDelay: dataplane.DefaultDrainDelay, DrainTimeout: dataplane.DefaultDrainTimeout},
			},
		},
		{
			name: "every flag",
			args: []string{"--xds", "a:1,b:2", "--admin", "127.0.0.1:7", "--id", "n-1", "--token", "tok", "--ca-file", "ca.pem",
				"--trust-domain", "corp", "--http1-server", "std", "--max-connections", "0", "--drain-delay", "0s", "--drain-timeout", "3s"},
			want: dataplane.RoleOptions{
				XDSAddresses: []string{"a:1", "b:2"}, AdminAddress: "127.0.0.1:7", ID: "n-1",
				Identity: identity.ProxyOptions{Token: "tok", CAFile: "ca.pem", TrustDomain: "corp"},
				Serving:  dataplane.ServingOptions{MaxConnections: -1, DrainTimeout: 3 * time.Second},
			},
		},
		{name: "bad server", args: []string{"--http1-server", "turbo"}, wantErr: "--http1-server"},
		{name: "bad drain", args: []string{"--drain-timeout", "0s"}, wantErr: "--drain-timeout"},
		{name: "labels without consul", args: []string{"--label", "a=b"}, wantErr: "--label needs --consul"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rf proxyRoleFlags
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			rf.register(fs, proxyRoleUsage{admin: "127.0.0.1:9"})
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			got, err := rf.options(nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("options() = %+v, %v; want an error naming %s", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("options() = %+v, %v\nwant %+v", got, err, tt.want)
			}
		})
	}

	var rf proxyRoleFlags
	shared := pflag.NewFlagSet("shared", pflag.ContinueOnError)
	rf.register(shared, proxyRoleUsage{})
	for _, cmd := range []*cobra.Command{newGatewayCmd(&globalFlags{}), newSidecarCmd(&globalFlags{})} {
		shared.VisitAll(func(f *pflag.Flag) {
			if cmd.Flags().Lookup(f.Name) == nil {
				t.Errorf("meshgate %s has no --%s", cmd.Name(), f.Name)
			}
		})
	}
}
