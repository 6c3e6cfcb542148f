package policy

import (
	"errors"

	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// errorStrings loads path and returns every error as a string with the
// "testdata/bad/" prefix removed.
func errorStrings(t *testing.T, paths ...string) []string {
	t.Helper()
	set, err := Load(paths...)
	if err == nil {
		t.Fatalf("Load(%v) succeeded with %d gateways, %d routes, %d services; want errors",
			paths, len(set.Gateways), len(set.HTTPRoutes), len(set.Services))
	}
	if set != nil {
		t.Errorf("Load returned a set along with errors")
	}
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("Load error is %T, want ErrorList: %v", err, err)
	}
	out := make([]string, len(list))
	for i, e := range list {
		out[i] = strings.ReplaceAll(e.Error(), "testdata/bad/", "")
	}
	return out
}

// TestLoadReportsEveryBadInputClass loads one file (or directory) per class
// of bad input and checks the exact errors, in order.
func TestLoadReportsEveryBadInputClass(t *testing.T) {
	t.Parallel()
	tests := []struct {
		path string
		want []string
	}{
		{
			path: "syntax.yaml",
			want: []string{
				`syntax.yaml:5: YAML syntax error: did not find expected key`,
			},
		},
		{
			path: "route-tracing.yaml",
			want: []string{
				`route-tracing.yaml:13: metadata.annotations["meshgate.dev/tracing-sampling"]: invalid sampling "150": want a percentage from 0 to 100`,
				`route-tracing.yaml:23: metadata.annotations["meshgate.dev/tracing-sampling"]: invalid sampling "all": want a percentage from 0 to 100`,
			},
		},
		{
			path: "kinds.yaml",
			want: []string{
				`kinds.yaml:2: kind: unknown kind "Gatway" (want Gateway, HTTPRoute, GRPCRoute, GatewayClass, ReferenceGrant, ListenerSet, BackendTLSPolicy, TCPRoute or TLSRoute in gateway.networking.k8s.io/v1; Service, SecurityPolicy, TrafficPolicy, MeshConfig or ACMEIssuer in meshgate.dev/v1alpha1; Namespace, Secret or ConfigMap in v1)`,
				`kinds.yaml:6: apiVersion: kind Gateway needs apiVersion gateway.networking.k8s.io/v1, not "meshgate.dev/v1alpha1"`,
				`kinds.yaml:12: kind: kind UDPRoute is not supported yet`,
				`kinds.yaml:16: kind: kind is required`,
				`kinds.yaml:19: apiVersion: apiVersion is required`,
				`kinds.yaml:23: a policy document must be a mapping with apiVersion, kind, metadata and spec; got a list`,
			},
		},
		{
			path: "names.yaml",
			want: []string{
				`names.yaml:3: metadata.name: name is required`,
				`names.yaml:11: metadata.name: invalid name "Orders_Service": must be lowercase letters, digits and '-', starting and ending with a letter or digit`,
				`names.yaml:12: metadata.namespace: invalid namespace "-shop": must be lowercase letters, digits and '-', starting and ending with a letter or digit`,
			},
		},
		{
			path: "unknown-fields.yaml",
			want: []string{
				`unknown-fields.yaml:5: metadata.uid: unknown field "uid"`,
				`unknown-fields.yaml:12: spec.listeners[0].Hostname: unknown field "Hostname" (did you mean "hostname"?)`,
				`unknown-fields.yaml:13: spec.listeners[0].tls_mode: unknown field "tls_mode"`,
				`unknown-fields.yaml:14: status: unknown field "status": status is reported by the control plane, not written in policy files`,
				`unknown-fields.yaml:24: spec.ports[0].targetPort: unknown field "targetPort"`,
				`unknown-fields.yaml:25: spec.selector: unknown field "selector"`,
			},
		},
		{
			path: "wrong-types.yaml",
			want: []string{
				`wrong-types.yaml:9: spec.listeners[0].port: expected an integer, got string "8080"`,
				`wrong-types.yaml:12: spec.listeners[0].hostname: expected a string, got a mapping`,
				`wrong-types.yaml:20: spec.ports: expected a list, got a mapping`,
				`wrong-types.yaml:22: spec.endpoints[0].address: expected a string, got a list`,
				`wrong-types.yaml:24: spec.endpoints[0].labels.version: expected a string, got a list`,
				`wrong-types.yaml:32: spec.ports[0].port: integer 99999999999 is out of range`,
				`wrong-types.yaml:33: spec.ports[1].port: expected an integer, got number 8.5`,
			},
		},
		{
			path: "duplicate",
			want: []string{
				`duplicate/b.yaml:5: metadata.name: duplicate Service "default/orders": also defined at duplicate/a.yaml:4`,
			},
		},
		{
			path: "gateway-listeners.yaml",
			want: []string{
				`gateway-listeners.yaml:11: spec.listeners[1].name: duplicate listener name "http" (also spec.listeners[0])`,
				`gateway-listeners.yaml:15: spec.listeners[2].port: port 0 is out of range 1-65535`,
				`gateway-listeners.yaml:20: spec.listeners[3].tls.certificateRefs: at least one certificateRef is required with mode Terminate`,
				`gateway-listeners.yaml:24: spec.listeners[4].protocol: unknown protocol "QUIC" (want HTTP, HTTPS, TCP or TLS)`,
				`gateway-listeners.yaml:25: spec.listeners[5].protocol: protocol is required (HTTP, HTTPS, TCP or TLS)`,
				`gateway-listeners.yaml:30: spec.listeners[6].hostname: invalid hostname "Shop_Example.com": must be a lowercase RFC 1123 hostname, optionally starting with "*."`,
				`gateway-listeners.yaml:31: spec.listeners[7]: listener "conflict" conflicts with listener "http": same port 8080 and no hostname`,
				`gateway-listeners.yaml:38: spec.listeners[9]: listener "other-host-again" conflicts with listener "other-host": same port 8080 and hostname "*.example.com"`,
				`gateway-listeners.yaml:46: spec.listeners[10].allowedRoutes.namespaces.selector: selector is required when from is Selector`,
				`gateway-listeners.yaml:49: spec.listeners[10].allowedRoutes.kinds[0]: route kind "UDPRoute" in group "gateway.networking.k8s.io" is not supported yet (only HTTPRoute, GRPCRoute, TCPRoute and TLSRoute)`,
				`gateway-listeners.yaml:55: spec.listeners: at least one listener is required`,
			},
		},
		{
			path: "gateway-conflict",
			want: []string{
				`gateway-conflict/b.yaml:10: spec.listeners[0].port: Gateway "default/b" listener "http" binds 127.0.0.1:8080, already bound by Gateway "default/a" listener "web" (gateway-conflict/a.yaml:9)`,
				`gateway-conflict/b.yaml:25: spec.listeners[0].port: Gateway "default/all" listener "http" binds 0.0.0.0:8080, already bound by Gateway "default/a" listener "web" (gateway-conflict/a.yaml:9)`,
			},
		},
		{
			path: "gateway-spec.yaml",
			want: []string{
				`gateway-spec.yaml:8: spec.addresses[0].type: address type "Hostname" is not supported: a gateway node binds IP addresses (type IPAddress); resolve the name and write its addresses`,
				`gateway-spec.yaml:20: spec.addresses[0].value: "127.0.0.300" is not a valid IP address`,
				`gateway-spec.yaml:24: spec.infrastructure: infrastructure is not supported yet`,
				`gateway-spec.yaml:27: spec.tls: tls is not supported yet`,
			},
		},
		{
			path: "route-parents.yaml",
			want: []string{
				`route-parents.yaml:41: spec.parentRefs[0].name: gateway "infra/edg" not found`,
				`route-parents.yaml:45: spec.parentRefs[1].sectionName: gateway "infra/edge" has no listener "https"`,
				`route-parents.yaml:49: spec.parentRefs[2].port: listener "http" of gateway "infra/edge" is not on port 9090`,
				`route-parents.yaml:52: spec.parentRefs[3].port: gateway "infra/edge" has no listener on port 7070`,
				`route-parents.yaml:53: spec.parentRefs[4]: gateway "infra/edge" does not accept routes from namespace "default" (allowedRoutes.namespaces.from is Same)`,
				`route-parents.yaml:58: spec.parentRefs[5].name: service "payments" not found`,
				`route-parents.yaml:61: spec.parentRefs[6].port: service "orders" has no port 81`,
				`route-parents.yaml:63: spec.parentRefs[7].kind: parent kind "ConfigMap" in group "" is not supported (want Gateway or ListenerSet, or Service for mesh routes)`,
				`route-parents.yaml:78: spec.hostnames: no hostname of the route matches a listener of gateway "edge"`,
				`route-parents.yaml:78: spec.hostnames[2]: invalid hostname "Bad_Host": must be a lowercase RFC 1123 hostname, optionally starting with "*."`,
				`route-parents.yaml:80: spec.rules[0].backendRefs[0].namespace: service "default/orders" is in another namespace: it needs a ReferenceGrant in namespace "default" from HTTPRoutes of namespace "infra" to it`,
			},
		},
		{
			path: "route-matches.yaml",
			want: []string{
				`route-matches.yaml:16: spec.rules[0].matches[0].path.value: path "orders" must start with "/"`,
				`route-matches.yaml:17: spec.rules[0].matches[1].path.value: path "/a//b" must not contain "//", "/./" or "/../"`,
				`route-matches.yaml:18: spec.rules[0].matches[2].path.value: invalid regular expression "/orders/(\\d+" (RE2 syntax): missing closing )`,
				`route-matches.yaml:19: spec.rules[0].matches[3].path.type: unknown path match type "Glob" (want Exact, PathPrefix or RegularExpression)`,
				`route-matches.yaml:21: spec.rules[0].matches[4].headers[0].name: name is required`,
				"route-matches.yaml:22: spec.rules[0].matches[4].headers[1].name: invalid name \"bad header\": only letters, digits and !#$%&'*+-.^_`|~ are allowed",
				`route-matches.yaml:23: spec.rules[0].matches[4].headers[2].value: invalid regular expression "a(?=b)" (RE2 syntax): invalid or unsupported Perl syntax`,
				`route-matches.yaml:24: spec.rules[0].matches[4].headers[3].name: duplicate match on "x-id"`,
				`route-matches.yaml:25: spec.rules[0].matches[4].headers[4].type: unknown match type "Prefix" (want Exact or RegularExpression)`,
				`route-matches.yaml:28: spec.rules[0].matches[4].queryParams[1].name: duplicate match on "page"`,
				`route-matches.yaml:29: spec.rules[0].matches[4].method: unknown method "FETCH" (want GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE or PATCH)`,
			},
		},
		{
			path: "route-backends.yaml",
			want: []string{
				`route-backends.yaml:20: spec.rules[0].backendRefs[1].name: service "ordrs" not found`,
				`route-backends.yaml:22: spec.rules[0].backendRefs[2].port: port is required: service "orders" has 2 ports`,
				`route-backends.yaml:24: spec.rules[0].backendRefs[3].port: service "orders" has no port 7070`,
				`route-backends.yaml:25: spec.rules[0].backendRefs[3].weight: weight 2000000 is out of range 0-1000000`,
				`route-backends.yaml:26: spec.rules[0].backendRefs[4].name: service "payments/orders" not found`,
				`route-backends.yaml:29: spec.rules[0].backendRefs[5].kind: backend kind "Backend" in group "gateway.envoyproxy.io" is not supported (want Service)`,
				`route-backends.yaml:34: spec.rules[0].backendRefs[6].weight: weight -1 is out of range 0-1000000`,
				"route-backends.yaml:44: spec.rules[0].backendRefs[7].filters[0].responseHeaderModifier.set[0].name: invalid name \"bad header\": only letters, digits and !#$%&'*+-.^_`|~ are allowed",
				`route-backends.yaml:45: spec.rules[0].backendRefs[7].filters[1].type: backendRef filter RequestMirror is not supported yet (only RequestHeaderModifier and ResponseHeaderModifier; put other filters on the rule)`,
			},
		},
		{
			path: "route-filters.yaml",
			want: []string{
				`route-filters.yaml:20: spec.rules[0].filters[1].cors.allowOrigins[0]: invalid origin "example.com" (want *, or http(s)://host[:port], the host possibly *.domain)`,
				`route-filters.yaml:20: spec.rules[0].filters[1].cors.allowOrigins[1]: invalid origin "https://*.example.com:99999": port out of range 1-65535`,
				`route-filters.yaml:20: spec.rules[0].filters[1].cors.allowMethods[1]: "*" cannot be listed alongside other values`,
				`route-filters.yaml:20: spec.rules[0].filters[1].cors.allowHeaders[1]: duplicate "X-A"`,
				`route-filters.yaml:20: spec.rules[0].filters[1].cors.maxAge: -1 seconds: want at least 1`,
				`route-filters.yaml:21: spec.rules[0].filters[2].type: filter ExtensionRef is not supported yet`,
				`route-filters.yaml:25: spec.rules[1].filters[0]: a rule cannot have both a RequestRedirect filter and backendRefs`,
				`route-filters.yaml:26: spec.rules[1].filters[0].requestRedirect.scheme: unknown scheme "ftp" (want http or https)`,
				`route-filters.yaml:26: spec.rules[1].filters[0].requestRedirect.hostname: invalid hostname "*.example.com": wildcards are not allowed here`,
				`route-filters.yaml:26: spec.rules[1].filters[0].requestRedirect.port: port 0 is out of range 1-65535`,
				`route-filters.yaml:26: spec.rules[1].filters[0].requestRedirect.statusCode: status code 200 is not a redirect (want 301, 302, 303, 307 or 308)`,
				`route-filters.yaml:27: spec.rules[1].filters[1]: a rule cannot have both RequestRedirect and URLRewrite filters`,
				`route-filters.yaml:35: spec.rules[2].filters[0].urlRewrite.path.replacePrefixMatch: ReplacePrefixMatch needs every match of the rule to be a PathPrefix match`,
				`route-filters.yaml:40: spec.rules[3].filters[0].requestHeaderModifier.set[1].name: duplicate header "X-A"`,
				"route-filters.yaml:41: spec.rules[3].filters[0].requestHeaderModifier.remove[0]: invalid name \"bad header\": only letters, digits and !#$%&'*+-.^_`|~ are allowed",
				`route-filters.yaml:42: spec.rules[3].filters[1].type: duplicate RequestHeaderModifier filter in one rule`,
				`route-filters.yaml:42: spec.rules[3].filters[1].requestHeaderModifier: requestHeaderModifier is required when type is RequestHeaderModifier`,
				`route-filters.yaml:45: spec.rules[3].filters[2].type: unknown filter type "Teleport"`,
				`route-filters.yaml:46: spec.rules[3].filters[3].type: type is required`,
				`route-filters.yaml:49: spec.rules[3].filters[4].urlRewrite.path.replacePrefixMatch: replacePrefixMatch must not be set when type is ReplaceFullPath`,
				`route-filters.yaml:49: spec.rules[3].filters[4].urlRewrite.path.replaceFullPath: replaceFullPath is required when type is ReplaceFullPath`,
				`route-filters.yaml:54: spec.rules[4].filters[0].requestMirror.backendRef.name: service "ordrs" not found`,
				`route-filters.yaml:55: spec.rules[4].filters[0].requestMirror.percent: percent 150 is out of range 0-100`,
				`route-filters.yaml:59: spec.rules[4].filters[1].requestMirror.fraction.numerator: numerator 3 is out of range 0-2 (the denominator)`,
				`route-filters.yaml:64: spec.rules[4].filters[2].requestMirror.fraction: only one of percent and fraction may be set`,
				`route-filters.yaml:64: spec.rules[4].filters[2].requestMirror.fraction.denominator: denominator 0 must be at least 1`,
				`route-filters.yaml:70: spec.rules[5].filters[0].externalAuth.backendRef.name: service "authz" not found`,
				`route-filters.yaml:71: spec.rules[5].filters[0].externalAuth.grpc: protocol must be GRPC when grpc is set`,
				`route-filters.yaml:72: spec.rules[5].filters[0].externalAuth.http.path: invalid path "/a b" (want at most 1024 characters of a path value)`,
				`route-filters.yaml:72: spec.rules[5].filters[0].externalAuth.http.allowedHeaders[1]: duplicate "X-A"`,
				"route-filters.yaml:72: spec.rules[5].filters[0].externalAuth.http.allowedResponseHeaders[0]: invalid name \"bad header\": only letters, digits and !#$%&'*+-.^_`|~ are allowed",
				`route-filters.yaml:77: spec.rules[6].filters[0].externalAuth.protocol: unknown protocol "SOAP" (want HTTP or GRPC)`,
				`route-filters.yaml:84: spec.rules[7].filters[0].externalAuth.backendRef: a GRPC authorization service needs an HTTP/2 port: service "orders" port 80 has protocol HTTP (want protocol HTTP2 or appProtocol grpc)`,
				`route-filters.yaml:85: spec.rules[7].filters[0].externalAuth.http: protocol must be HTTP when http is set`,
			},
		},
		{
			path: "route-rule-fields.yaml",
			want: []string{
				`route-rule-fields.yaml:14: spec.useDefaultGateways: useDefaultGateways is not supported yet`,
				`route-rule-fields.yaml:18: spec.rules[0].timeouts.request: invalid duration "1.5s": want up to four <number><unit> groups with units h, m, s, ms (e.g. 1m30s)`,
				`route-rule-fields.yaml:22: spec.rules[0].sessionPersistence: sessionPersistence is not supported yet`,
				`route-rule-fields.yaml:25: spec.rules[1].name: duplicate rule name "main" (also spec.rules[0])`,
				`route-rule-fields.yaml:32: spec.rules[2].timeouts.backendRequest: backendRequest timeout 2s cannot be longer than the request timeout 1s`,
				`route-rule-fields.yaml:34: spec.rules[2].retry.codes[0]: status code 200 is out of range 400-599`,
				`route-rule-fields.yaml:34: spec.rules[2].retry.codes[2]: duplicate status code 500`,
				`route-rule-fields.yaml:35: spec.rules[2].retry.attempts: attempts 0 is out of range 1-10`,
				`route-rule-fields.yaml:39: spec.rules[3].retry.attempts: attempts 11 is out of range 1-10`,
				`route-rule-fields.yaml:40: spec.rules[3].retry.backoff: backoff 2m is too long (at most 1m0s)`,
			},
		},
		{
			path: "service.yaml",
			want: []string{
				`service.yaml:5: spec.ports: at least one port is required`,
				`service.yaml:14: metadata.labels.-bad-key: invalid label key "-bad-key": want an optional DNS subdomain and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit`,
				`service.yaml:18: spec.ports[1].port: duplicate port 80 (also spec.ports[0])`,
				`service.yaml:18: spec.ports[1].name: duplicate port name "http" (also spec.ports[0])`,
				`service.yaml:18: spec.ports[1].protocol: unknown protocol "HTTPS" (want HTTP, HTTP2 or TCP)`,
				`service.yaml:19: spec.ports[2].port: port 70000 is out of range 1-65535`,
				`service.yaml:19: spec.ports[2].name: invalid port name "8080": must contain a letter`,
				`service.yaml:20: spec.ports[3].name: invalid port name "Admin": must be lowercase letters, digits and '-', starting and ending with a letter or digit`,
				`service.yaml:22: spec.endpoints[0].address: address "127.0.0.1" must be host:port`,
				`service.yaml:22: spec.endpoints[0].port: port is required: the service has 4 ports (give a port name or number)`,
				`service.yaml:23: spec.endpoints[1].address: address "127.0.0.1:99999": port must be a number in 1-65535`,
				`service.yaml:25: spec.endpoints[2].address: address ":8080" has no host`,
				`service.yaml:26: spec.endpoints[2].port: the service has no port "grpc"`,
				`service.yaml:27: spec.endpoints[3].address: address "localhost:8081": host must be an IP address (DNS names are not supported yet)`,
				`service.yaml:27: spec.endpoints[3].port: port is required: the service has 4 ports (give a port name or number)`,
				`service.yaml:29: spec.endpoints[3].labels["not a key"]: invalid label key "not a key": want an optional DNS subdomain and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit`,
				`service.yaml:30: spec.endpoints[3].labels.version: invalid label value "bad value!": want at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit`,
				`service.yaml:41: spec.ports[3].appProtocol: unknown appProtocol "kubernetes.io/udp" (want kubernetes.io/h2c, grpc, kubernetes.io/ws or http)`,
				`service.yaml:42: spec.ports[4].appProtocol: appProtocol "kubernetes.io/ws" is HTTP/1.1 but protocol is HTTP2: drop one`,
			},
		},
		{
			path: "meshconfig.yaml",
			want: []string{
				`meshconfig.yaml:6: spec.trustDomain: invalid trust domain "Example_Corp": must be dot-separated labels of lowercase letters, digits and '-'`,
				`meshconfig.yaml:7: spec.mtls.mode: unknown mTLS mode "strict" (want STRICT or PERMISSIVE)`,
				`meshconfig.yaml:8: spec.defaultAction: unknown action "REJECT" (want ALLOW or DENY)`,
				`meshconfig.yaml:9: spec.certificateTTL: certificateTTL 30s is shorter than the minimum 1m`,
				`meshconfig.yaml:11: spec.tracing.endpoint: invalid endpoint "collector:4317": want ip:port (a DNS name is not supported yet)`,
				`meshconfig.yaml:12: spec.tracing.protocol: unknown protocol "thrift" (want grpc or http)`,
				`meshconfig.yaml:13: spec.tracing.sampling: sampling 150 is not a percentage from 0 to 100`,
				`meshconfig.yaml:16: spec.outboundScope: unknown outbound scope "Some" (want All or Authorized)`,
			},
		},
		{
			path: "meshconfig-tracing",
			want: []string{
				`meshconfig-tracing/mesh.yaml:6: spec.tracing.endpoint: endpoint is required (the collector's OTLP receiver, ip:port)`,
				`meshconfig-tracing/mesh.yaml:8: spec.tracing.sampling: sampling -1 is not a percentage from 0 to 100`,
				`meshconfig-tracing/mesh.yaml:9: spec.tracing.extra: unknown field "extra"`,
			},
		},
		{
			path: "meshconfig-accesslog",
			want: []string{
				`meshconfig-accesslog/mesh.yaml:7: spec.accessLog.path: invalid path "logs/access.log": want /dev/stdout, /dev/stderr or an absolute file path`,
				`meshconfig-accesslog/mesh.yaml:8: spec.accessLog.format: unknown format "text" (want json)`,
				`meshconfig-accesslog/mesh.yaml:11: spec.accessLog.fields.reason: unknown command operator %UPSTREAM_TRANSPORT_FAILURE_REASON%: the proxy does not implement it (docs/observability.md lists those it does)`,
				`meshconfig-accesslog/mesh.yaml:12: spec.accessLog.fields.when: command operator %START_TIME(%Y)%: START_TIME takes no argument (a START_TIME format is not supported)`,
				`meshconfig-accesslog/mesh.yaml:13: spec.accessLog.fields.ua: command operator %REQ()%: REQ needs a header name: REQ(name) or REQ(name?alternative)`,
				`meshconfig-accesslog/mesh.yaml:14: spec.accessLog.extra: unknown field "extra"`,
			},
		},
		{
			path: "two-meshconfigs",
			want: []string{
				`two-meshconfigs/a.yaml:6: spec.certificateTTL: invalid duration "1.5h": want up to four <number><unit> groups with units h, m, s, ms (e.g. 1m30s)`,
				`two-meshconfigs/b.yaml:4: metadata.name: only one MeshConfig is allowed: "default/mesh" is already defined at two-meshconfigs/a.yaml:4`,
			},
		},
		{
			path: "security-policy.yaml",
			want: []string{
				`security-policy.yaml:21: spec.targetRefs[0].name: service "payments" not found in namespace "default"`,
				`security-policy.yaml:23: spec.targetRefs[2].group: kind Service needs group "" or meshgate.dev, not "gateway.networking.k8s.io"`,
				`security-policy.yaml:24: spec.targetRefs[3].group: kind Gateway needs group gateway.networking.k8s.io, not ""`,
				`security-policy.yaml:25: spec.targetRefs[4].kind: target kind "ConfigMap" is not supported (want Service, Gateway or HTTPRoute)`,
				`security-policy.yaml:26: spec.targetRefs[5].name: httproute "missing" not found in namespace "default"`,
				`security-policy.yaml:27: spec.targetRefs[6]: duplicate target Gateway "edge" (also spec.targetRefs[1])`,
				`security-policy.yaml:28: spec.targetRefs[7].name: name is required`,
				`security-policy.yaml:29: spec.mtls: mtls applies to Service targets only (spec.targetRefs[1] is a Gateway)`,
				`security-policy.yaml:35: spec: a SecurityPolicy needs rules, mtls, jwt, apiKey, basicAuth, extAuth or some of them`,
				`security-policy.yaml:36: spec.targetRefs: at least one targetRef is required (a Service, Gateway or HTTPRoute)`,
				`security-policy.yaml:44: spec.mtls.mode: service "orders" gets mtls.mode STRICT here but PERMISSIVE from SecurityPolicy "rules" (security-policy.yaml:52)`,
				`security-policy.yaml:54: spec.rules[0].name: invalid rule name "Bad_Name": must be lowercase letters, digits and '-', starting and ending with a letter or digit`,
				`security-policy.yaml:55: spec.rules[0].action: unknown action "allow" (want ALLOW or DENY)`,
				`security-policy.yaml:57: spec.rules[0].from[0]: an entry needs at least one of services, identities, namespaces, ipBlocks, principals, claims`,
				`security-policy.yaml:58: spec.rules[0].from[1].services[3]: invalid service "a/b/c": want "name", "namespace/name" (RFC 1123 labels) or "*"`,
				`security-policy.yaml:58: spec.rules[0].from[1].services[4]: invalid service "Front": want "name", "namespace/name" (RFC 1123 labels) or "*"`,
				`security-policy.yaml:59: spec.rules[0].from[1].identities[1]: invalid identity "https://x": must start with "spiffe://"`,
				`security-policy.yaml:59: spec.rules[0].from[1].identities[2]: invalid identity "spiffe://td/a**b": "**" must be a whole segment`,
				`security-policy.yaml:59: spec.rules[0].from[1].identities[3]: invalid identity "spiffe://td/ns x": character ' ' is not allowed in a SPIFFE ID`,
				`security-policy.yaml:60: spec.rules[0].from[1].namespaces[1]: invalid namespace "-ops": must be lowercase letters, digits and '-', starting and ending with a letter or digit`,
				`security-policy.yaml:61: spec.rules[0].from[1].ipBlocks[2]: CIDR "10.0.0.1/8" has bits set after the prefix (want 10.0.0.0/8)`,
				`security-policy.yaml:61: spec.rules[0].from[1].ipBlocks[3]: invalid IP block "300.1.1.1": want a CIDR or an IP address`,
				`security-policy.yaml:61: spec.rules[0].from[1].ipBlocks[4]: invalid IP block "fe80::1%eth0": want a CIDR or an IP address`,
				`security-policy.yaml:62: spec.rules[1].action: action is required (ALLOW or DENY)`,
				`security-policy.yaml:64: spec.rules[1].to[0]: an entry needs at least one of methods, paths, headers`,
				`security-policy.yaml:65: spec.rules[1].to[1].methods[1]: unknown method "fetch" (want GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH)`,
				`security-policy.yaml:66: spec.rules[1].to[1].paths[4]: path "orders" must start with "/"`,
				`security-policy.yaml:66: spec.rules[1].to[1].paths[5]: invalid path pattern "/a//b": empty path segment ("//")`,
				`security-policy.yaml:66: spec.rules[1].to[1].paths[6]: invalid path pattern "/a/**x": "**" must be a whole segment`,
				`security-policy.yaml:66: spec.rules[1].to[1].paths[7]: path "/a?b" must not contain '?' or '#'`,
				`security-policy.yaml:66: spec.rules[1].to[1].paths[8]: path "/a/../b" must not contain "/./" or "/../"`,
				"security-policy.yaml:67: spec.rules[1].to[1].headers[1].name: invalid name \"bad header\": only letters, digits and !#$%&'*+-.^_`|~ are allowed",
				`security-policy.yaml:67: spec.rules[1].to[1].headers[2].value: value is required`,
				"security-policy.yaml:67: spec.rules[1].to[1].headers[3].name: invalid name \":path\": only letters, digits and !#$%&'*+-.^_`|~ are allowed",
				`security-policy.yaml:68: spec.rules[2].name: duplicate rule name "dup" (also spec.rules[1])`,
				`security-policy.yaml:70: spec.rules[2].sources: unknown field "sources"`,
				`security-policy.yaml:79: spec.extAuth.http.backendRef.name: service "authz" not found`,
				`security-policy.yaml:80: spec.extAuth.http.path: invalid path "/a b" (want at most 1024 characters of a path value)`,
				`security-policy.yaml:81: spec.extAuth.http.headersToBackend[1]: duplicate "X-A"`,
				"security-policy.yaml:82: spec.extAuth.headersToExtAuth[0]: invalid name \"bad header\": only letters, digits and !#$%&'*+-.^_`|~ are allowed",
				`security-policy.yaml:83: spec.extAuth.bodyToExtAuth.maxRequestBytes: 2000000 bytes: want 1 to 1048576`,
				`security-policy.yaml:84: spec.extAuth.failureMode: unknown failure mode "Sometimes" (want Open or Closed)`,
				`security-policy.yaml:85: spec.extAuth.timeout: 2m is longer than 1m0s`,
				`security-policy.yaml:92: spec.extAuth.http: http or grpc is required (the authorization service)`,
				`security-policy.yaml:92: spec.extAuth.timeout: 0s is shorter than 1ms`,
				`security-policy.yaml:100: spec.extAuth.grpc: only one of http and grpc may be set`,
				`security-policy.yaml:109: spec.extAuth.grpc.backendRef: a GRPC authorization service needs an HTTP/2 port: service "orders" port 80 has protocol HTTP (want protocol HTTP2 or appProtocol grpc)`,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			got := errorStrings(t, filepath.Join("testdata/bad", tc.path))
			if !slices.Equal(got, tc.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestLoadReportsAllErrorsAtOnce checks that problems of every kind, in
// several files, come back together in file and line order.
func TestLoadReportsAllErrorsAtOnce(t *testing.T) {
	t.Parallel()
	got := errorStrings(t, "testdata/multi")
	want := []string{
		`testdata/multi/a.yaml:11: spec.rules[0].backendRefs[1].name: service "ordrs" not found`,
		`testdata/multi/a.yaml:13: spec.rules[0].backendRefs[1].wieght: unknown field "wieght"`,
		`testdata/multi/a.yaml:24: spec.listeners[0].protocol: protocol UDP is not supported yet (only HTTP, HTTPS, TCP and TLS)`,
		`testdata/multi/b.yaml:6: spec.ports[0].protocol: unknown protocol "UDP" (want HTTP, HTTP2 or TCP)`,
		`testdata/multi/b.yaml:12: YAML syntax error: did not find expected ',' or '}'`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
