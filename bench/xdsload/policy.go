package main

import (
	"fmt"
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

// serviceName is the name of the i-th generated service.
func serviceName(i int) string { return fmt.Sprintf("svc-%04d", i) }

// clusterName is the xDS cluster of a service's port (docs/xds.md).
func clusterName(service string) string {
	return fmt.Sprintf("%s/%s:%d", namespace, service, servicePort)
}

// endpointAddr is the address of endpoint e of service i; generation g
// moves endpoint 0 of service 0 for the endpoint change. Nothing listens on
// these addresses: xdsload's streams only receive configuration.
func endpointAddr(i, e, g int) string {
	port := 20000 + e
	if i == 0 && e == 0 {
		port += g
	}
	return fmt.Sprintf("127.%d.%d.%d:%d", 1+i/65536, (i/256)%256, i%256, port)
}

// policyFiles is the generated policy: services (with endpoints) and routes.
type policyFiles struct {
	services string
	routes   string
}

// generatePolicy returns a policy with n services of two endpoints each,
// one Gateway routing a path prefix to each service, and a mesh HTTPRoute
// (header canary split) on every tenth service. withAdded adds one more
// service and its gateway route (the "policy change"); endpointGen moves one
// endpoint of svc-0000 (the "endpoint change").
func generatePolicy(n int, withAdded bool, endpointGen int) policyFiles {
	var svc, rt strings.Builder
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
	for i := 0; i < n; i++ {
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
	return policyFiles{services: svc.String(), routes: rt.String()}
}
