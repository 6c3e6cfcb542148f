package translate

import (
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// zeroTrust translates testdata/rbac/zerotrust.in.yaml for one node, with
// or without a trust bundle.
func zeroTrust(t *testing.T, node NodeInfo, bundle bool) *Resources {
	t.Helper()
	m, in, _ := goldenCase{in: "testdata/rbac/zerotrust.in.yaml"}.load(t)
	if !bundle {
		in = Inputs{}
	}
	res, err := Translate(m, in, node)
	if err != nil {
		t.Fatal(err)
	}
	validateAll(t, res)
	return res
}

func sidecarNode(service string) NodeInfo {
	return NodeInfo{ID: "s", Role: RoleSidecar, Namespace: "default", Service: service,
		InboundAddress: "127.0.0.1:21011", AppAddress: "127.0.0.1:9000", OutboundAddress: "127.0.0.1:15001"}
}

func hcmOf(t *testing.T, fc *listenerv3.FilterChain) *hcmv3.HttpConnectionManager {
	t.Helper()
	hcm := &hcmv3.HttpConnectionManager{}
	if err := fc.Filters[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	return hcm
}

func filterNames(hcm *hcmv3.HttpConnectionManager) []string {
	var out []string
	for _, f := range hcm.HttpFilters {
		out = append(out, f.Name)
	}
	return out
}

func TestInboundMTLSModes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		service    string
		bundle     bool
		wantChains []string // transport protocol per chain; "" for no match; "+tls" when it has a TLS socket
		wantRBAC   bool
	}{
		{"strict", "orders", true, []string{"+tls"}, true},
		{"permissive", "legacy", true, []string{"tls+tls", "raw_buffer"}, false},
		{"no CA: plaintext", "orders", false, []string{""}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := zeroTrust(t, sidecarNode(tt.service), tt.bundle)
			in := res.Listeners[slices.IndexFunc(res.Listeners, func(l *listenerv3.Listener) bool { return l.Name == InboundName })]
			var chains []string
			for _, fc := range in.FilterChains {
				c := fc.GetFilterChainMatch().GetTransportProtocol()
				if fc.TransportSocket != nil {
					c += "+tls"
					ctx := &tlsv3.DownstreamTlsContext{}
					if err := fc.TransportSocket.GetTypedConfig().UnmarshalTo(ctx); err != nil {
						t.Fatal(err)
					}
					if !ctx.GetRequireClientCertificate().GetValue() ||
						ctx.CommonTlsContext.GetValidationContextSdsSecretConfig().GetName() != RootCASecretName ||
						ctx.CommonTlsContext.TlsCertificateSdsSecretConfigs[0].GetName() != IdentitySecretName ||
						ctx.CommonTlsContext.TlsCertificateSdsSecretConfigs[0].SdsConfig != nil {
						t.Errorf("downstream TLS context = %v", ctx)
					}
				}
				chains = append(chains, c)
			}
			if !slices.Equal(chains, tt.wantChains) {
				t.Errorf("chains = %v, want %v", chains, tt.wantChains)
			}
			if tt.service == "legacy" && (len(in.ListenerFilters) != 1 || in.ListenerFilters[0].Name != tlsInspectorName) {
				t.Errorf("listener filters = %v, want the TLS inspector", in.ListenerFilters)
			}
			want := []string{routerFilterName}
			if tt.wantRBAC {
				want = []string{RBACDenyFilterName, RBACAllowFilterName, routerFilterName}
			}
			if got := filterNames(hcmOf(t, in.FilterChains[0])); !slices.Equal(got, want) {
				t.Errorf("http filters = %v, want %v", got, want)
			}
			if tt.bundle != (len(res.Secrets) == 1) {
				t.Errorf("secrets = %v", res.Secrets)
			}
		})
	}
}

func TestClusterMTLS(t *testing.T) {
	t.Parallel()
	res := zeroTrust(t, sidecarNode("frontend"), true)
	socketFor := func(name string) *tlsv3.UpstreamTlsContext {
		i := slices.IndexFunc(res.Clusters, func(c *clusterv3.Cluster) bool { return c.Name == name })
		if i < 0 {
			t.Fatalf("no cluster %s", name)
		}
		c := res.Clusters[i]
		if c.TransportSocket != nil {
			t.Errorf("cluster %s has a default transport socket", name)
		}
		if len(c.TransportSocketMatches) == 0 {
			return nil
		}
		m := c.TransportSocketMatches[0]
		if m.Name != "mtls" || m.Match.Fields["tlsMode"].GetStringValue() != "mtls" {
			t.Errorf("cluster %s match = %v", name, m)
		}
		ctx := &tlsv3.UpstreamTlsContext{}
		if err := m.TransportSocket.GetTypedConfig().UnmarshalTo(ctx); err != nil {
			t.Fatal(err)
		}
		return ctx
	}
	http := socketFor("default/orders:80")
	san := http.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
	if len(san) != 1 || san[0].SanType != tlsv3.SubjectAltNameMatcher_URI || san[0].Matcher.GetExact() != "spiffe://example.org/ns/default/svc/orders" {
		t.Errorf("SAN matchers = %v", san)
	}
	if got := http.CommonTlsContext.AlpnProtocols; !slices.Equal(got, []string{"http/1.1"}) {
		t.Errorf("HTTP ALPN = %v", got)
	}
	if got := socketFor("default/orders:9090").CommonTlsContext.AlpnProtocols; !slices.Equal(got, []string{"h2"}) {
		t.Errorf("HTTP2 ALPN = %v", got)
	}
	if socketFor("default/external:80") != nil {
		t.Error("a service without sidecar endpoints got an mTLS match")
	}
	cla := res.Endpoints[slices.IndexFunc(res.Endpoints, func(c *endpointv3.ClusterLoadAssignment) bool { return c.ClusterName == "default/legacy:80" })]
	var marked []bool
	for _, ep := range cla.Endpoints[0].LbEndpoints {
		marked = append(marked, ep.GetMetadata().GetFilterMetadata()["envoy.transport_socket_match"].GetFields()["tlsMode"].GetStringValue() == "mtls")
	}
	if !slices.Equal(marked, []bool{true, false}) {
		t.Errorf("legacy endpoints marked mtls = %v, want [true false]", marked)
	}
}
