package dataplane

import (
	"net/http"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/meshgate/meshgate/dataplane/meshtls/meshtlstest"
)

// TestPlaintextOutboundHasNoPeerIdentity: on a plaintext listener, an
// outbound one included, an RBAC authenticated principal never matches,
// even the proxy's own identity, as in Envoy (there is no peer
// certificate): the control plane resolves mesh-route rules for the
// caller instead of relying on the proxy.
func TestPlaintextOutboundHasNoPeerIdentity(t *testing.T) {
	t.Parallel()
	mesh := meshtlstest.NewCA(t, "mesh")
	cp := startControlPlane(t)
	p := startIdentityProxy(t, cp, meshtlstest.NewIdentity(ordersID, mesh.Issue(t, ordersID)))
	rbac := &hcmv3.HttpFilter{Name: "meshgate.rbac.allow", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &rbacv3.RBAC{
		Rules: &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_ALLOW, Policies: map[string]*rbacconfigv3.Policy{"own-identity": {
			Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_Any{Any: true}}},
			Principals: []*rbacconfigv3.Principal{{Identifier: &rbacconfigv3.Principal_Authenticated_{Authenticated: &rbacconfigv3.Principal_Authenticated{
				PrincipalName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: ordersID}},
			}}}},
		}}},
	})}}
	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend(t, "a"),
		mutate: func(s *snapshot) {
			s.listeners[0].TrafficDirection = corev3.TrafficDirection_OUTBOUND
			s.hcm.HttpFilters = append([]*hcmv3.HttpFilter{rbac}, s.hcm.HttpFilters...)
		}}.build(t))
	client := &http.Client{Timeout: 5 * time.Second}
	var status int
	// 404 until the route configuration arrives.
	eventually(t, "the outbound listener to answer with its routes", func() bool {
		addr := p.ListenerAddrs()["edge"]
		if addr == "" {
			return false
		}
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		status = resp.StatusCode
		return status != http.StatusNotFound
	})
	if status != http.StatusForbidden {
		t.Errorf("plaintext outbound request with an authenticated principal of the proxy's own identity: %d, want 403", status)
	}
}
