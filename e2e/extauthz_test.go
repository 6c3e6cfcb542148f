package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// extAuthFilter is an HTTPRoute ExternalAuth filter (HTTP) calling the
// authz service (YAML, indented for a rule's filters).
const extAuthFilter = `
      filters:
        - type: ExternalAuth
          externalAuth:
            protocol: HTTP
            backendRef: {name: authz, port: 80}
            http:
              path: /check
              allowedHeaders: [x-api-key]
              allowedResponseHeaders: [x-user]
            forwardBody: {maxSize: 16}`

// startHTTPAuthService starts the authz service: it denies a request
// whose X-Api-Key is "bad" with 401, a body and headers, and allows any
// other, adding X-User and X-Other (not allowed upstream). It records
// what it saw in the response headers of an allowed request's backend
// through X-User: "alice|<method>|<path>|<X-Api-Key>|<X-Secret>".
func startHTTPAuthService(c *cluster) *testBackend {
	return startTestBackend(c, "authz", func(_ *testBackend, w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("X-Api-Key") == "bad" {
			w.Header().Set("WWW-Authenticate", `ApiKey realm="orders"`)
			w.Header().Set("X-Deny-Reason", "revoked")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, "key revoked\n")
			return true
		}
		w.Header().Set("X-User", strings.Join([]string{"alice", r.Method, r.URL.RequestURI(), r.Header.Get("X-Api-Key"),
			r.Header.Get("X-Secret")}, "|"))
		w.Header().Set("X-Other", "not for the upstream")
		return true
	})
}

// TestHTTPRouteExternalAuthHTTP: an HTTPRoute ExternalAuth filter with an
// HTTP authorization service, at the gateway (a Gateway route) and at a
// sidecar (a mesh route): an allowed request reaches the backend with the
// header the service added (only the allowed one), the service having
// seen the method, the path after its prefix, the allowed header and not
// the others; a denied one gets the service's status, headers and body
// and never reaches the backend; a route of the same listener without
// the filter is not checked.
func TestHTTPRouteExternalAuthHTTP(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	authz := startHTTPAuthService(c)
	api := startTestBackend(c, "api", func(_ *testBackend, w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("X-Seen-User", r.Header.Get("X-User"))
		w.Header().Set("X-Seen-Other", r.Header.Get("X-Other"))
		return false
	})
	c.policy("extauthz.yaml", yamlDocs(edgeGateway, meshServices("client"), serviceOf("api", "api"), serviceOf("authz", "authz"), `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api-edge}
spec:
  parentRefs: [{name: edge}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /public}}]
      backendRefs: [{name: api, port: 80}]
    - backendRefs: [{name: api, port: 80}]`+extAuthFilter+`
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api-mesh}
spec:
  parentRefs: [{group: meshgate.dev, kind: Service, name: api}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /public}}]
      backendRefs: [{group: meshgate.dev, kind: Service, name: api, port: 80}]
    - backendRefs: [{group: meshgate.dev, kind: Service, name: api, port: 80}]`+extAuthFilter+`
`))
	c.startControlPlane()
	for _, e := range startBothEntries(c, "api") {
		checks, served := authz.requests.Load(), api.requests.Load()
		r, err := e.get("/orders?id=7", "X-Api-Key: good", "X-Secret: s")
		if err != nil {
			t.Fatalf("%s: allowed request: %v", e.name, err)
		}
		if r.status != http.StatusOK || r.header.Get("X-Backend") != "api" {
			t.Fatalf("%s: allowed request: %d %q, headers %v; want the backend's 200", e.name, r.status, r.body, r.header)
		}
		if got, want := r.header.Get("X-Seen-User"), "alice|GET|/check/orders?id=7|good|"; got != want {
			t.Errorf("%s: the backend saw X-User %q, want %q (the service saw method, prefixed path, allowed header, not X-Secret)", e.name, got, want)
		}
		if got := r.header.Get("X-Seen-Other"); got != "" {
			t.Errorf("%s: the backend saw X-Other %q: not an allowed response header", e.name, got)
		}

		r, err = e.get("/orders", "X-Api-Key: bad")
		if err != nil {
			t.Fatalf("%s: denied request: %v", e.name, err)
		}
		if r.status != http.StatusUnauthorized || r.body != "key revoked\n" || r.header.Get("X-Backend") != "" {
			t.Errorf("%s: denied request: %d %q, headers %v; want the service's 401 and body", e.name, r.status, r.body, r.header)
		}
		if got := r.header.Get("WWW-Authenticate"); got != `ApiKey realm="orders"` {
			t.Errorf("%s: denied request: WWW-Authenticate %q", e.name, got)
		}
		if got := r.header.Get("X-Deny-Reason"); got != "revoked" {
			t.Errorf("%s: denied request: X-Deny-Reason %q (allowed_client_headers unset: every header)", e.name, got)
		}

		before := authz.requests.Load()
		r, err = e.get("/public/x", "X-Api-Key: bad")
		if err != nil || r.status != http.StatusOK || r.header.Get("X-Backend") != "api" {
			t.Errorf("%s: a route without the filter: %v %+v; want the backend's 200", e.name, err, r)
		}
		if got := authz.requests.Load() - before; got != 0 {
			t.Errorf("%s: a route without the filter was checked %d times", e.name, got)
		}
		if got, want := authz.requests.Load()-checks, int64(2); got != want {
			t.Errorf("%s: %d checks, want %d", e.name, got, want)
		}
		if got, want := api.requests.Load()-served, int64(2); got != want {
			t.Errorf("%s: the backend served %d requests, want %d (the denied one never reaching it)", e.name, got, want)
		}
	}
}

// extAuthRoutes are HTTPRoutes named <name>-edge (at the edge gateway) and
// <name>-mesh (on Service api) for paths under /<name>, to api.
func extAuthRoutes(names ...string) string {
	var docs []string
	for _, name := range names {
		docs = append(docs, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: `+name+`-edge}
spec:
  parentRefs: [{name: edge}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /`+name+`}}]
      backendRefs: [{name: api, port: 80}]
`, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: `+name+`-mesh}
spec:
  parentRefs: [{group: meshgate.dev, kind: Service, name: api}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /`+name+`}}]
      backendRefs: [{group: meshgate.dev, kind: Service, name: api, port: 80}]
`)
	}
	return yamlDocs(docs...)
}

// TestSecurityPolicyExtAuthFailureModes: a SecurityPolicy extAuth section
// on HTTPRoutes, at the gateway and at a sidecar, with an authorization
// service that does not answer checks of /…/slow paths: past the policy's
// timeout, failureMode Open lets the request through (counted as
// failure_mode_allowed in /stats) and Closed denies it with 403; answered
// checks allow with the header the service added.
func TestSecurityPolicyExtAuthFailureModes(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	startTestBackend(c, "authz", func(b *testBackend, w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/slow") {
			select { // no answer: the proxy's timeout ends the check
			case <-r.Context().Done():
			case <-b.closed:
			}
			return true
		}
		w.Header().Set("X-User", "alice")
		return true
	})
	startTestBackend(c, "api", func(_ *testBackend, w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("X-Seen-User", r.Header.Get("X-User"))
		return false
	})
	policy := func(name, mode string, routes ...string) string {
		return `
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: ` + name + `}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: ` + routes[0] + `}, {group: gateway.networking.k8s.io, kind: HTTPRoute, name: ` + routes[1] + `}]
  extAuth:
    http:
      backendRef: {name: authz, port: 80}
      headersToBackend: [x-user]
    failureMode: ` + mode + `
    timeout: 1s
`
	}
	c.policy("extauthz.yaml", yamlDocs(edgeGateway, meshServices("client"), serviceOf("api", "api"), serviceOf("authz", "authz"),
		extAuthRoutes("open", "closed"), `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: root-edge}
spec:
  parentRefs: [{name: edge}]
  rules: [{backendRefs: [{name: api, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: root-mesh}
spec:
  parentRefs: [{group: meshgate.dev, kind: Service, name: api}]
  rules: [{backendRefs: [{group: meshgate.dev, kind: Service, name: api, port: 80}]}]
`, policy("fail-open", "Open", "open-edge", "open-mesh"), policy("fail-closed", "Closed", "closed-edge", "closed-mesh")))
	c.startControlPlane()
	for _, e := range startBothEntries(c, "api") {
		for _, tt := range []struct {
			path   string
			status int
			user   string
		}{
			{"/open/x", http.StatusOK, "alice"},
			{"/closed/x", http.StatusOK, "alice"},
			{"/open/slow", http.StatusOK, ""},
			{"/closed/slow", http.StatusForbidden, ""},
		} {
			r, err := e.get(tt.path)
			if err != nil {
				t.Fatalf("%s: %s: %v", e.name, tt.path, err)
			}
			if r.status != tt.status || r.header.Get("X-Seen-User") != tt.user {
				t.Errorf("%s: %s: %d, X-Seen-User %q; want %d, %q", e.name, tt.path, r.status, r.header.Get("X-Seen-User"), tt.status, tt.user)
			}
		}
		var stats struct {
			ExtAuthz map[string]uint64 `json:"ext_authz"`
		}
		if err := adminGet(e.admin, "", "/stats", &stats); err != nil {
			t.Fatal(err)
		}
		if stats.ExtAuthz["failure_mode_allowed"] != 1 || stats.ExtAuthz["error"] != 1 {
			t.Errorf("%s: ext_authz stats %v; want one failure_mode_allowed, one error", e.name, stats.ExtAuthz)
		}
	}
}

// grpcAuthService is an envoy.service.auth.v3 Authorization service: it
// denies a request whose x-api-key is "bad" (401, a header, a body) and
// allows any other, adding X-User and removing X-Drop; it keeps the last
// CheckRequest.
type grpcAuthService struct {
	authv3.UnimplementedAuthorizationServer
	last atomic.Pointer[authv3.CheckRequest]
}

func (s *grpcAuthService) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	s.last.Store(req)
	h := req.GetAttributes().GetRequest().GetHttp()
	if h.GetHeaders()["x-api-key"] == "bad" {
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
				Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-deny-reason", Value: "revoked"}}},
				Body:    "key revoked\n",
			}},
		}, nil
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers:         []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-user", Value: "alice"}}},
			HeadersToRemove: []string{"x-drop"},
		}},
	}, nil
}

// startGRPCAuthService serves a grpcAuthService at ${authz}.
func startGRPCAuthService(c *cluster) *grpcAuthService {
	c.t.Helper()
	ln, err := net.Listen("tcp", c.addr("authz"))
	if err != nil {
		c.t.Fatal(err)
	}
	svc := &grpcAuthService{}
	srv := grpc.NewServer()
	authv3.RegisterAuthorizationServer(srv, svc)
	go func() { _ = srv.Serve(ln) }()
	c.t.Cleanup(srv.Stop)
	return svc
}

// grpcAuthzService is the authz Service on an HTTP/2 port.
const grpcAuthzService = `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: authz}
spec:
  ports: [{port: 80, protocol: HTTP2}]
  endpoints: [{address: "${authz}"}]
`

// TestSecurityPolicyExtAuthService: a SecurityPolicy extAuth section (gRPC)
// on a Service is enforced by the service's sidecar (its inbound
// listener), whoever calls: a call through the gateway with a bad key is
// denied there with the service's 401, a good one reaches the app.
func TestSecurityPolicyExtAuthService(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	svc := startGRPCAuthService(c)
	c.policy("extauthz.yaml", yamlDocs(edgeGateway, meshServices("orders"), grpcAuthzService, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orders-edge}
spec:
  parentRefs: [{name: edge}]
  rules: [{backendRefs: [{name: orders, port: 80}]}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: orders-authz}
spec:
  targetRefs: [{kind: Service, name: orders}]
  extAuth:
    grpc: {backendRef: {name: authz, port: 80}}
    headersToExtAuth: [x-api-key]
`))
	c.startControlPlane()
	c.startInstance(c.sidecar, "orders", "orders", "v1")
	c.gateway("edge")
	gw := "http://" + c.addr("gw")
	eventually(t, 15*time.Second, "orders via the gateway", func() error {
		r, err := do(http.MethodGet, gw+"/", "X-Api-Key: good")
		if err != nil {
			return err
		}
		if r.status != http.StatusOK {
			return fmt.Errorf("%d %.200s", r.status, r.body)
		}
		return nil
	})
	if h := svc.last.Load().GetAttributes().GetRequest().GetHttp(); h.GetHeaders()["x-api-key"] != "good" {
		t.Errorf("the sidecar's CheckRequest: %v", h)
	}
	r, err := do(http.MethodGet, gw+"/", "X-Api-Key: bad")
	if err != nil {
		t.Fatal(err)
	}
	if r.status != http.StatusUnauthorized || r.body != "key revoked\n" {
		t.Errorf("a bad key: %d %q; want the service's 401 from orders' sidecar", r.status, r.body)
	}
}

// TestSecurityPolicyExtAuthGateway: a SecurityPolicy extAuth section on a
// Gateway checks every route of its listeners that has no external
// authorization of its own; a route with an ExternalAuth filter is checked
// by its own service only.
func TestSecurityPolicyExtAuthGateway(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	gatewayAuthz := startGRPCAuthService(c)
	own := startTestBackend(c, "own", func(_ *testBackend, w http.ResponseWriter, _ *http.Request) bool {
		w.Header().Set("X-User", "bob")
		return true
	})
	startTestBackend(c, "api", func(_ *testBackend, w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("X-Seen-User", r.Header.Get("X-User"))
		return false
	})
	c.policy("extauthz.yaml", yamlDocs(edgeGateway, serviceOf("api", "api"), serviceOf("own", "own"), grpcAuthzService, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api-edge}
spec:
  parentRefs: [{name: edge}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /own}}]
      filters:
        - type: ExternalAuth
          externalAuth: {protocol: HTTP, backendRef: {name: own, port: 80}, http: {allowedResponseHeaders: [x-user]}}
      backendRefs: [{name: api, port: 80}]
    - backendRefs: [{name: api, port: 80}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: edge-authz}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  extAuth:
    grpc: {backendRef: {name: authz, port: 80}}
`))
	c.startControlPlane()
	c.gateway("edge")
	gw := "http://" + c.addr("gw")
	eventually(t, 15*time.Second, "api via the gateway", func() error {
		r, err := do(http.MethodGet, gw+"/")
		if err != nil {
			return err
		}
		if r.status != http.StatusOK || r.header.Get("X-Seen-User") != "alice" {
			return fmt.Errorf("%d %v", r.status, r.header)
		}
		return nil
	})
	if r, err := do(http.MethodGet, gw+"/", "X-Api-Key: bad"); err != nil || r.status != http.StatusUnauthorized {
		t.Errorf("the gateway's authorization, a bad key: %v %+v; want 401", err, r)
	}
	checks, ownChecks := gatewayAuthz.last.Load(), own.requests.Load()
	r, err := do(http.MethodGet, gw+"/own", "X-Api-Key: bad")
	if err != nil || r.status != http.StatusOK || r.header.Get("X-Seen-User") != "bob" {
		t.Errorf("a route with its own ExternalAuth: %v %+v; want 200 checked by its own service", err, r)
	}
	if gatewayAuthz.last.Load() != checks || own.requests.Load() != ownChecks+1 {
		t.Errorf("a route with its own ExternalAuth was checked by the gateway's service, or not by its own")
	}
}

// TestHTTPRouteExternalAuthGRPC: an HTTPRoute ExternalAuth filter with a
// gRPC authorization service (grpc-go, envoy.service.auth.v3), at the
// gateway and at a sidecar: the CheckRequest carries the source and
// destination, the method, path, host and allowed headers; an allowed
// request reaches the backend with the header the service added and
// without the one it removed; a denied one gets the service's status,
// header and body.
func TestHTTPRouteExternalAuthGRPC(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	svc := startGRPCAuthService(c)
	api := startTestBackend(c, "api", func(_ *testBackend, w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("X-Seen-User", r.Header.Get("X-User"))
		w.Header().Set("X-Seen-Drop", r.Header.Get("X-Drop"))
		return false
	})
	filter := `
      filters:
        - type: ExternalAuth
          externalAuth:
            protocol: GRPC
            backendRef: {name: authz, port: 80}
            grpc: {allowedHeaders: [x-api-key, x-drop]}`
	c.policy("extauthz.yaml", yamlDocs(edgeGateway, meshServices("client"), serviceOf("api", "api"), grpcAuthzService, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api-edge}
spec:
  parentRefs: [{name: edge}]
  rules:
    - backendRefs: [{name: api, port: 80}]`+filter+`
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api-mesh}
spec:
  parentRefs: [{group: meshgate.dev, kind: Service, name: api}]
  rules:
    - backendRefs: [{group: meshgate.dev, kind: Service, name: api, port: 80}]`+filter+`
`))
	c.startControlPlane()
	for _, e := range startBothEntries(c, "api") {
		served := api.requests.Load()
		r, err := e.get("/orders?id=7", "X-Api-Key: good", "X-Drop: x", "X-Secret: s")
		if err != nil {
			t.Fatalf("%s: allowed request: %v", e.name, err)
		}
		if r.status != http.StatusOK || r.header.Get("X-Seen-User") != "alice" || r.header.Get("X-Seen-Drop") != "" {
			t.Errorf("%s: allowed request: %d, headers %v; want the backend's 200 with X-User, without X-Drop", e.name, r.status, r.header)
		}
		attrs := svc.last.Load().GetAttributes()
		h := attrs.GetRequest().GetHttp()
		if h.GetMethod() != http.MethodGet || h.GetPath() != "/orders?id=7" || h.GetHost() == "" ||
			h.GetHeaders()["x-api-key"] != "good" || h.GetHeaders()["x-secret"] != "" ||
			attrs.GetSource().GetAddress().GetSocketAddress().GetAddress() == "" ||
			attrs.GetDestination().GetAddress().GetSocketAddress().GetPortValue() == 0 {
			t.Errorf("%s: CheckRequest attributes %v", e.name, attrs)
		}

		r, err = e.get("/orders", "X-Api-Key: bad")
		if err != nil {
			t.Fatalf("%s: denied request: %v", e.name, err)
		}
		if r.status != http.StatusUnauthorized || r.body != "key revoked\n" || r.header.Get("X-Deny-Reason") != "revoked" {
			t.Errorf("%s: denied request: %d %q, headers %v; want the service's 401, header and body", e.name, r.status, r.body, r.header)
		}
		if got := api.requests.Load() - served; got != 1 {
			t.Errorf("%s: the backend served %d requests, want 1", e.name, got)
		}
	}
}
