package model

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/policy"
)

// tcpRoute is a TCPRoute attached to Gateway default/edge, created at
// rfc3339 ("": no creation time).
func tcpRoute(t *testing.T, ns, name, rfc3339 string) *policy.TCPRoute {
	t.Helper()
	r := &policy.TCPRoute{}
	r.Name, r.Namespace = name, ns
	if rfc3339 != "" {
		at, err := time.Parse(time.RFC3339, rfc3339)
		if err != nil {
			t.Fatalf("creation time %q: %v", rfc3339, err)
		}
		r.CreationTimestamp = metav1.NewTime(at)
	}
	r.Spec.ParentRefs = []gwapiv1.ParentReference{{Name: "edge", Namespace: ptr(gwapiv1.Namespace("default"))}}
	r.Spec.Rules = []gwapiv1.TCPRouteRule{{BackendRefs: []gwapiv1.BackendRef{{BackendObjectReference: gwapiv1.BackendObjectReference{Name: "db"}}}}}
	return r
}

func TestTCPRouteConflictOldestWins(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		routes func(t *testing.T) []*policy.TCPRoute
		want   string
	}{
		{
			name: "the oldest wins over a name first in order",
			routes: func(t *testing.T) []*policy.TCPRoute {
				return []*policy.TCPRoute{
					tcpRoute(t, "default", "attach-newer", "2026-01-02T10:00:02Z"),
					tcpRoute(t, "default", "attach-older", "2026-01-02T10:00:01Z"),
				}
			},
			want: "default/attach-older",
		},
		{
			name: "same creation time: by namespace, then name",
			routes: func(t *testing.T) []*policy.TCPRoute {
				return []*policy.TCPRoute{
					tcpRoute(t, "default", "b", "2026-01-02T10:00:01Z"),
					tcpRoute(t, "default", "a", "2026-01-02T10:00:01Z"),
				}
			},
			want: "default/a",
		},
		{
			name: "no creation times: by namespace, then name",
			routes: func(t *testing.T) []*policy.TCPRoute {
				return []*policy.TCPRoute{tcpRoute(t, "default", "b", ""), tcpRoute(t, "apps", "c", "")}
			},
			want: "apps/c",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			gw := gateway(gwapiv1.Listener{Name: "tcp", Port: 9000, Protocol: gwapiv1.TCPProtocolType})
			m, err := Compile(&policy.Set{Gateways: []*policy.Gateway{gw}, TCPRoutes: tt.routes(t)})
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			ports := m.Gateway("default", "edge").Ports
			if len(ports) != 1 || ports[0].L4 == nil || len(ports[0].L4.Routes) != 1 {
				t.Fatalf("want one TCP port with one route, got %+v", ports)
			}
			if got := ports[0].L4.Routes[0].Route.String(); got != tt.want {
				t.Errorf("route served = %s, want %s", got, tt.want)
			}
		})
	}
}
