package translate

import (
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshgate/meshgate/controlplane/model"
)

func TestRedirect(t *testing.T) {
	t.Parallel()
	prefix := model.PathMatch{Kind: model.PathPrefix, Value: "/old"}
	tests := []struct {
		name     string
		in       model.Redirect
		listener int32
		want     string
	}{
		{"keep non-default listener port", model.Redirect{StatusCode: 302}, 8080, "port_redirect:8080 response_code:FOUND"},
		{"listener port 80, set: the Host may carry another port", model.Redirect{StatusCode: 302}, 80, "port_redirect:80 response_code:FOUND"},
		{"https implies 443", model.Redirect{Scheme: "https", StatusCode: 301}, 8080, `scheme_redirect:"https" port_redirect:443`},
		{"explicit port", model.Redirect{Scheme: "https", Port: 8443, StatusCode: 302}, 8080, `scheme_redirect:"https" port_redirect:8443 response_code:FOUND`},
		{"explicit well-known port", model.Redirect{Scheme: "http", Port: 80, StatusCode: 302}, 8080, `scheme_redirect:"http" port_redirect:80 response_code:FOUND`},
		{"hostname and full path", model.Redirect{Hostname: "b.example", Path: &model.PathModifier{Kind: model.ReplaceFullPath, Value: "/x"}, StatusCode: 302}, 80, `host_redirect:"b.example" port_redirect:80 path_redirect:"/x" response_code:FOUND`},
		{"prefix", model.Redirect{Path: &model.PathModifier{Kind: model.ReplacePrefixMatch, Value: "/new/"}, StatusCode: 302}, 80, `port_redirect:80 prefix_rewrite:"/new" response_code:FOUND`},
		{"prefix to root", model.Redirect{Path: &model.PathModifier{Kind: model.ReplacePrefixMatch, Value: "/"}, StatusCode: 302}, 80, `port_redirect:80 prefix_rewrite:"/" response_code:FOUND`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := strings.Join(strings.Fields(redirect(&tt.in, prefix, tt.listener).String()), " ")
			if got != tt.want {
				t.Errorf("redirect = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestPrefixRewrite(t *testing.T) {
	t.Parallel()
	tests := []struct {
		prefix, replacement string
		want                string
	}{
		{"/foo", "/bar", `prefix_rewrite:"/bar"`},
		{"/foo/", "/bar/", `prefix_rewrite:"/bar"`},
		{"/foo", "/", `regex_rewrite:{pattern:{regex:"^/foo/*"} substitution:"/"}`},
		{"/a.b", "/", `regex_rewrite:{pattern:{regex:"^/a\\.b/*"} substitution:"/"}`},
		{"/", "/bar", `regex_rewrite:{pattern:{regex:"^/"} substitution:"/bar/"}`},
		{"/", "/", `prefix_rewrite:"/"`},
	}
	for _, tt := range tests {
		t.Run(tt.prefix+"->"+tt.replacement, func(t *testing.T) {
			t.Parallel()
			ra := &routev3.RouteAction{}
			setPrefixRewrite(ra, model.PathMatch{Kind: model.PathPrefix, Value: tt.prefix}, tt.replacement)
			got := strings.Join(strings.Fields(ra.String()), " ")
			if got != tt.want {
				t.Errorf("rewrite = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestForward(t *testing.T) {
	t.Parallel()
	m, err := model.Compile(builtSet())
	if err != nil {
		t.Fatal(err)
	}
	backend := func(cluster string, weight int32) *model.Backend {
		return &model.Backend{Service: model.NamespacedName{Namespace: "default", Name: "orders"}, Port: 80, Weight: weight, Cluster: cluster}
	}
	timeout := time.Duration(0)
	tests := []struct {
		name string
		in   model.Action
		want string // "500" or the RouteAction text
	}{
		{"no backends", model.Action{}, "500"},
		{"all weights zero", model.Action{Backends: []*model.Backend{backend("default/orders:80", 0)}}, "500"},
		{"unresolved share", model.Action{Backends: []*model.Backend{backend("default/orders:80", 1), backend("", 1)}},
			`weighted_clusters:{clusters:{name:"invalid-backend-cluster" weight:{value:1}} clusters:{name:"default/orders:80" weight:{value:1}}} cluster_not_found_response_code:INTERNAL_SERVER_ERROR`},
		{"unresolved shares summed", model.Action{Backends: []*model.Backend{backend("", 2), backend("default/orders:80", 1), backend("", 3)}},
			`weighted_clusters:{clusters:{name:"invalid-backend-cluster" weight:{value:5}} clusters:{name:"default/orders:80" weight:{value:1}}} cluster_not_found_response_code:INTERNAL_SERVER_ERROR`},
		{"unresolved of weight zero", model.Action{Backends: []*model.Backend{backend("default/orders:80", 1), backend("", 0)}}, `cluster:"default/orders:80"`},
		{"all unresolved", model.Action{Backends: []*model.Backend{backend("", 1), backend("", 1)}}, "500"},
		{"resolved of weight zero only", model.Action{Backends: []*model.Backend{backend("default/orders:80", 0), backend("", 1)}}, "500"},
		{"zero weight skipped", model.Action{Backends: []*model.Backend{backend("default/orders:80", 0), backend("default/orders-v2:80", 2)}}, `cluster:"default/orders-v2:80"`},
		{"zero timeout", model.Action{Backends: []*model.Backend{backend("default/orders:80", 1)}, Timeout: &timeout}, `cluster:"default/orders:80" timeout:{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ra := forward(m, newClusterCollector(direct{model: m}), &tt.in, model.PathMatch{Kind: model.PathPrefix, Value: "/"})
			got := "500"
			if ra != nil {
				got = strings.Join(strings.Fields(ra.String()), " ")
			}
			if got != tt.want {
				t.Errorf("forward = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestGRPCRouteMatch: the rules of a GRPCRoute carry Envoy's grpc match
// option (gRPC requests only), with their /service/method path; those of
// an HTTPRoute do not.
func TestGRPCRouteMatch(t *testing.T) {
	t.Parallel()
	rm := routeMatch(model.Match{Path: model.PathMatch{Kind: model.PathExact, Value: "/pkg.Echo/Echo"}, GRPC: true})
	if rm.GetGrpc() == nil || rm.GetPath() != "/pkg.Echo/Echo" {
		t.Errorf("GRPCRoute match %v: want path /pkg.Echo/Echo with grpc: {}", rm)
	}
	if rm := routeMatch(model.Match{Path: model.PathMatch{Kind: model.PathPrefix, Value: "/"}}); rm.GetGrpc() != nil {
		t.Errorf("HTTPRoute match %v has grpc", rm)
	}
}

// TestGRPCTimeouts: a GRPCRoute rule honours grpc-timeout without bound and
// has no route timeout unless one is configured.
func TestGRPCTimeouts(t *testing.T) {
	t.Parallel()
	ra := &routev3.RouteAction{}
	setGRPCTimeouts(ra)
	if ra.GetMaxStreamDuration().GetGrpcTimeoutHeaderMax() == nil || ra.GetMaxStreamDuration().GetGrpcTimeoutHeaderMax().AsDuration() != 0 || ra.GetTimeout() == nil || ra.GetTimeout().AsDuration() != 0 {
		t.Errorf("route action %v: want grpc_timeout_header_max 0 and timeout 0", ra)
	}
	ra = &routev3.RouteAction{Timeout: durationpb.New(5 * time.Second)}
	setGRPCTimeouts(ra)
	if ra.GetTimeout().AsDuration() != 5*time.Second {
		t.Errorf("configured timeout replaced: %v", ra.GetTimeout())
	}
}
