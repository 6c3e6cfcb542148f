package mesh

import (
	"context"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/dataplane"
	"github.com/meshgate/meshgate/dataplane/identity"
)

func TestNode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		opts      Options
		wantMeta  xdsnode.Metadata
		wantError string
	}{
		{
			name: "defaults",
			opts: Options{Service: "orders", AppAddress: "127.0.0.1:8080", RoleOptions: dataplane.RoleOptions{ID: "orders-1"}},
			wantMeta: xdsnode.Metadata{
				Role: xdsnode.RoleSidecar, Namespace: "default", Service: "orders", AppAddress: "127.0.0.1:8080",
				InboundAddress: "127.0.0.1:15006", OutboundAddress: "127.0.0.1:15001",
			},
		},
		{
			name: "explicit addresses",
			opts: Options{Service: "orders", Namespace: "shop", AppAddress: "10.0.0.2:80", InboundAddress: "10.0.0.2:16006", OutboundAddress: "127.0.0.1:16001", RoleOptions: dataplane.RoleOptions{ID: "x"}},
			wantMeta: xdsnode.Metadata{
				Role: xdsnode.RoleSidecar, Namespace: "shop", Service: "orders", AppAddress: "10.0.0.2:80",
				InboundAddress: "10.0.0.2:16006", OutboundAddress: "127.0.0.1:16001",
			},
		},
		{
			name: "outbound TCP listeners",
			opts: Options{Service: "web", AppAddress: "127.0.0.1:8080", OutboundTCP: []string{"db:5432=127.0.0.1:15432", "cache.data:6379=127.0.0.1:16379"}, RoleOptions: dataplane.RoleOptions{ID: "w"}},
			wantMeta: xdsnode.Metadata{
				Role: xdsnode.RoleSidecar, Namespace: "default", Service: "web", AppAddress: "127.0.0.1:8080",
				InboundAddress: "127.0.0.1:15006", OutboundAddress: "127.0.0.1:15001",
				OutboundTCP: "db:5432=127.0.0.1:15432,cache.data:6379=127.0.0.1:16379",
			},
		},
		{
			name: "capture listener",
			opts: Options{Service: "web", AppAddress: "127.0.0.1:8080", CaptureAddress: "127.0.0.1:15002", CaptureUnknown: xdsnode.CaptureDeny, RoleOptions: dataplane.RoleOptions{ID: "w"}},
			wantMeta: xdsnode.Metadata{
				Role: xdsnode.RoleSidecar, Namespace: "default", Service: "web", AppAddress: "127.0.0.1:8080",
				InboundAddress: "127.0.0.1:15006", OutboundAddress: "127.0.0.1:15001",
				CaptureAddress: "127.0.0.1:15002", CaptureUnknown: "deny",
			},
		},
		{name: "capture unknown without capture listener", opts: Options{Service: "web", AppAddress: "127.0.0.1:8080", CaptureUnknown: xdsnode.CaptureDeny, RoleOptions: dataplane.RoleOptions{ID: "w"}},
			wantMeta: xdsnode.Metadata{Role: xdsnode.RoleSidecar, Namespace: "default", Service: "web", AppAddress: "127.0.0.1:8080",
				InboundAddress: "127.0.0.1:15006", OutboundAddress: "127.0.0.1:15001"}},
		{name: "capture listener on a listener's address", opts: Options{Service: "web", AppAddress: "127.0.0.1:8080", CaptureAddress: "127.0.0.1:15001"}, wantError: "capture address 127.0.0.1:15001 is also"},
		{name: "outbound TCP listener on the capture address", opts: Options{Service: "web", AppAddress: "127.0.0.1:8080", CaptureAddress: "127.0.0.1:15002", OutboundTCP: []string{"db:5432=127.0.0.1:15002"}}, wantError: "is used twice"},
		{name: "capture unknown mode", opts: Options{Service: "web", AppAddress: "127.0.0.1:8080", CaptureAddress: "127.0.0.1:15002", CaptureUnknown: "allow"}, wantError: `capture unknown destinations "allow"`},
		{name: "outbound TCP listener on a listener's address", opts: Options{Service: "web", AppAddress: "127.0.0.1:8080", OutboundTCP: []string{"db:5432=127.0.0.1:15001"}}, wantError: "is used twice"},
		{name: "bad outbound TCP listener", opts: Options{Service: "web", AppAddress: "127.0.0.1:8080", OutboundTCP: []string{"db=127.0.0.1:1"}}, wantError: "want service[.namespace]:port=ip:port"},
		{name: "missing service", opts: Options{AppAddress: "127.0.0.1:8080"}, wantError: "service is required"},
		{name: "missing app", opts: Options{Service: "orders"}, wantError: "--app"},
		{name: "app hostname", opts: Options{Service: "orders", AppAddress: "localhost:8080"}, wantError: `app address "localhost:8080": "localhost" is not an IP address`},
		{name: "app without port", opts: Options{Service: "orders", AppAddress: "127.0.0.1"}, wantError: "want ip:port"},
		{name: "bad inbound port", opts: Options{Service: "orders", AppAddress: "127.0.0.1:8080", InboundAddress: "127.0.0.1:70000"}, wantError: `inbound address "127.0.0.1:70000": port`},
		{name: "same listeners", opts: Options{Service: "orders", AppAddress: "127.0.0.1:8080", InboundAddress: "127.0.0.1:15001"}, wantError: "must differ"},
		{name: "app on a listener", opts: Options{Service: "orders", AppAddress: "127.0.0.1:15006"}, wantError: "also a listener address"},
		{name: "DNS listen address not ip:port", opts: Options{Service: "orders", AppAddress: "127.0.0.1:8080", DNSListen: "localhost:53"}, wantError: `DNS listen address "localhost:53"`},
		{name: "DNS on a listener", opts: Options{Service: "orders", AppAddress: "127.0.0.1:8080", DNSListen: "127.0.0.1:15001"}, wantError: "also another address of the sidecar"},
		{name: "DNS upstream without DNS", opts: Options{Service: "orders", AppAddress: "127.0.0.1:8080", DNSUpstreams: []string{"1.1.1.1"}}, wantError: "--dns-listen"},
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
			if node.GetId() != tt.opts.ID || node.GetCluster() != tt.opts.Service {
				t.Errorf("id, cluster = %q, %q", node.GetId(), node.GetCluster())
			}
			if got := xdsnode.Decode(node.GetMetadata()); got != tt.wantMeta {
				t.Errorf("metadata = %+v, want %+v", got, tt.wantMeta)
			}
		})
	}
}

func TestNodeDefaultID(t *testing.T) {
	t.Parallel()
	node, err := Node(Options{Service: "orders", AppAddress: "127.0.0.1:8080"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(node.GetId(), "sidecar~orders~") {
		t.Fatalf("id = %q, want sidecar~orders~<hostname>-<pid>", node.GetId())
	}
}

func TestRunRejectsBadOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no xds", Options{Service: "orders", AppAddress: "127.0.0.1:8080"}, "--xds"},
		{"no token", Options{Service: "orders", AppAddress: "127.0.0.1:8080", RoleOptions: dataplane.RoleOptions{XDSAddresses: []string{"cp:15010"}}}, "meshgate token create --service orders --namespace default"},
		{"DNS upstream loops", Options{Service: "orders", AppAddress: "127.0.0.1:8080", DNSListen: "127.0.0.1:15053", DNSUpstreams: []string{"127.0.0.1:15053"}, RoleOptions: dataplane.RoleOptions{XDSAddresses: []string{"cp:15010"}, Identity: identity.ProxyOptions{Insecure: true}}}, "queries would loop"},
		{"bad admin", Options{Service: "orders", AppAddress: "127.0.0.1:8080", RoleOptions: dataplane.RoleOptions{XDSAddresses: []string{"cp:15010"}, AdminAddress: "admin", Identity: identity.ProxyOptions{Insecure: true}}}, "admin address"},
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
