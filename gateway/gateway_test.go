package gateway

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/dataplane"
	"github.com/meshgate/meshgate/dataplane/identity"
)

func TestNode(t *testing.T) {
	t.Parallel()
	host, _ := os.Hostname()
	tests := []struct {
		name      string
		opts      Options
		wantID    string
		wantNS    string
		wantError string
	}{
		{name: "defaults", opts: Options{Name: "edge"}, wantID: fmt.Sprintf("gateway~edge~%s-%d", host, os.Getpid()), wantNS: "default"},
		{name: "explicit id and namespace", opts: Options{Name: "edge", Namespace: "prod", RoleOptions: dataplane.RoleOptions{ID: "edge-1"}}, wantID: "edge-1", wantNS: "prod"},
		{name: "missing name", opts: Options{}, wantError: "gateway name is required"},
		{name: "bad name", opts: Options{Name: "Edge~1"}, wantError: `gateway name "Edge~1"`},
		{name: "bad namespace", opts: Options{Name: "edge", Namespace: "a b"}, wantError: `namespace "a b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			node, err := Node(tt.opts)
			if tt.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantError) {
					t.Fatalf("Node() error = %v, want %q", err, tt.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if node.GetId() != tt.wantID || node.GetCluster() != tt.opts.Name {
				t.Errorf("id, cluster = %q, %q; want %q, %q", node.GetId(), node.GetCluster(), tt.wantID, tt.opts.Name)
			}
			want := xdsnode.Metadata{Role: xdsnode.RoleGateway, Namespace: tt.wantNS, Gateway: tt.opts.Name}
			if got := xdsnode.Decode(node.GetMetadata()); got != want {
				t.Errorf("metadata = %+v, want %+v", got, want)
			}
		})
	}
}

func TestRunRejectsBadOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no xds", Options{Name: "edge"}, "--xds"},
		{"xds without port", Options{Name: "edge", RoleOptions: dataplane.RoleOptions{XDSAddresses: []string{"cp"}}}, `control-plane address "cp"`},
		{"bad admin", Options{Name: "edge", RoleOptions: dataplane.RoleOptions{XDSAddresses: []string{"cp:18000"}, AdminAddress: "admin", Identity: identity.ProxyOptions{Insecure: true}}}, "admin address"},
		{"no token", Options{Name: "edge", RoleOptions: dataplane.RoleOptions{XDSAddresses: []string{"cp:18000"}}}, "meshgate token create --service edge --namespace default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := Run(context.Background(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run() = %v, want error containing %q", err, tt.want)
			}
		})
	}
}
