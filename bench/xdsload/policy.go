package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Names of the generated policy.
const (
	gatewayName  = "edge"
	gatewayPort  = 18080
	servicePort  = 80
	addedService = "svc-added"
	namespace    = "default"
)

// Outbound scopes of the generated mesh (-scope).
const (
	// scopeAll is today's mesh: no MeshConfig, every sidecar receives
	// every service.
	scopeAll = "all"
	// scopeAuthorized is a zero-trust mesh (defaultAction DENY) with
	// outboundScope Authorized: each service is callable by its two
	// neighbours and the gateway, so a sidecar receives only a few services.
	scopeAuthorized = "authorized"
)

// serviceName is the name of the i-th generated service.
func serviceName(i int) string { return fmt.Sprintf("svc-%04d", i) }

// clusterName is the xDS cluster of a service's port (docs/xds.md).
func clusterName(service string) string {
	return fmt.Sprintf("%s/%s:%d", namespace, service, servicePort)
}

// endpointAddr is the address of endpoint e of service i; generation g
// moves endpoint 0 of service 0 for the endpoint change, to a port no other
// endpoint of it has (so that the change's watch holds only once the move
// arrives). Nothing listens on these addresses: xdsload's streams only
// receive configuration.
func endpointAddr(i, e, g int) string {
	port := 20000 + e
	if i == 0 && e == 0 {
		port += 1000 * g
	}
	return fmt.Sprintf("127.%d.%d.%d:%d", 1+i/65536, (i/256)%256, i%256, port)
}

// policyFiles is the generated policy: services (with endpoints; with
// endpointsConsul only svc-added), routes and, with scopeAuthorized, the
// MeshConfig and SecurityPolicies.
type policyFiles struct {
	services string
	routes   string
	security string // "" with scopeAll: no file
}

// files are the policy's file names and contents, in the order writePolicy
// renames them; files without content are left out.
func (p policyFiles) files() [][2]string {
	out := [][2]string{{"services.yaml", p.services}, {"routes.yaml", p.routes}}
	if p.security != "" {
		out = append(out, [2]string{"security.yaml", p.security})
	}
	return out
}

// callers are the services allowed to call service i of n with
// scopeAuthorized: its two neighbours and the gateway (whose identity is
// the gateway's name, see enroll); svc-0000 is a shared dependency
// callable by every identity ("*"), so that the endpoint change reaches
// every stream.
func callers(i, n int) []string {
	if i == 0 {
		return []string{"*"}
	}
	var out []string
	for _, j := range []int{(i - 1 + n) % n, (i + 1) % n} {
		if name := serviceName(j); j != i && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return append(out, gatewayName)
}

// generatePolicy returns a policy with n services of two endpoints each,
// one Gateway routing a path prefix to each service, and a mesh HTTPRoute
// (header canary split) on every tenth service. withAdded adds one more
// service and its gateway route (the "policy change"); endpointGen moves one
// endpoint of svc-0000 (the "endpoint change"). With scopeAuthorized it also
// writes a MeshConfig (defaultAction DENY, outboundScope Authorized) and one
// SecurityPolicy per service allowing its callers; the added service, like
// svc-0000, is callable by every identity, so both changes still reach
// every stream. With endpointsConsul the n services have no Service
// document (they are registered in Consul, see consulRegistrations, and
// endpointGen is unused): the routes and SecurityPolicies name them, and
// the control plane validates them together with the discovered services;
// svc-added stays a static Service.
func generatePolicy(n int, scope, endpoints string, withAdded bool, endpointGen int) policyFiles {
	var svc, rt, sec strings.Builder
	if endpoints == endpointsConsul {
		// Never an empty file: the services come from Consul.
		fmt.Fprintf(&svc, "# %s..%s are registered in Consul (xdsload -endpoints consul)\n", serviceName(0), serviceName(n-1))
	}
	writeService := func(name string, i int) {
		fmt.Fprintf(&svc, "---\napiVersion: meshgate.dev/v1alpha1\nkind: Service\nmetadata: {name: %s}\nspec:\n  ports: [{name: http, port: %d}]\n  endpoints:\n", name, servicePort)
		for e := 0; e < 2; e++ {
			fmt.Fprintf(&svc, "    - address: %s\n", endpointAddr(i, e, endpointGen))
		}
	}
	writeGatewayRoute := func(name string) {
		fmt.Fprintf(&rt, "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: gw-%s}\nspec:\n  parentRefs: [{name: %s}]\n  rules:\n    - matches: [{path: {type: PathPrefix, value: /%s}}]\n      backendRefs: [{name: %s, port: %d}]\n",
			name, gatewayName, name, name, servicePort)
	}
	for i := 0; i < n && endpoints != endpointsConsul; i++ {
		writeService(serviceName(i), i)
	}
	fmt.Fprintf(&rt, "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: %s}\nspec:\n  gatewayClassName: meshgate\n  listeners:\n    - {name: http, protocol: HTTP, port: %d}\n", gatewayName, gatewayPort)
	for i := 0; i < n; i++ {
		name := serviceName(i)
		writeGatewayRoute(name)
		if i%10 == 0 && i+1 < n {
			fmt.Fprintf(&rt, "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: mesh-%s}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: %s, port: %d}]\n  rules:\n    - matches: [{headers: [{name: x-canary, value: \"true\"}]}]\n      backendRefs: [{name: %s, port: %d}]\n    - backendRefs: [{name: %s, port: %d}]\n",
				name, name, servicePort, serviceName(i+1), servicePort, name, servicePort)
		}
	}
	if withAdded {
		writeService(addedService, n)
		writeGatewayRoute(addedService)
	}
	if scope == scopeAuthorized {
		writeCallers := func(name string, from []string) {
			fmt.Fprintf(&sec, "---\napiVersion: meshgate.dev/v1alpha1\nkind: SecurityPolicy\nmetadata: {name: callers-%s}\nspec:\n  targetRefs: [{kind: Service, name: %s}]\n  rules:\n    - name: callers\n      action: ALLOW\n      from: [{services: [%s]}]\n",
				name, name, quoteList(from))
		}
		sec.WriteString("apiVersion: meshgate.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec:\n  defaultAction: DENY\n  outboundScope: Authorized\n")
		for i := 0; i < n; i++ {
			writeCallers(serviceName(i), callers(i, n))
		}
		if withAdded {
			writeCallers(addedService, []string{"*"})
		}
	}
	return policyFiles{services: svc.String(), routes: rt.String(), security: sec.String()}
}

// quoteList is names as the items of a YAML flow sequence ("*" must be
// quoted: an unquoted * starts an alias).
func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}
