package policy

import (
	"strings"
	"testing"
)

// TestHeaderModifiersLeaveProxyHeaders: a header modifier may not change
// the headers the proxy writes itself (hop-by-hop, framing; on requests
// Host and X-Forwarded-For/-Proto): an error naming the field, where the
// proxy would otherwise refuse the whole route configuration.
func TestHeaderModifiersLeaveProxyHeaders(t *testing.T) {
	t.Parallel()
	const route = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: edge}]
  rules:
    - filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: Host, value: x}, {name: X-Trace, value: "1"}]
            add: [{name: X-Forwarded-For, value: 10.0.0.1}]
            remove: [Connection, x-forwarded-proto, Authorization]
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            set: [{name: Host, value: ok-on-responses}, {name: X-Forwarded-For, value: ok-too}]
            remove: [Transfer-Encoding, Content-Length, Server]
      backendRefs: [{name: s, port: 80}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: s}
spec:
  ports: [{port: 80}]
`
	_, err := LoadFiles(File{Name: "r.yaml", Data: []byte(route)})
	want := []string{
		`r.yaml:16: spec.rules[0].filters[0].requestHeaderModifier.set[0].name: header "Host" cannot be modified: use a URLRewrite filter's hostname`,
		`r.yaml:17: spec.rules[0].filters[0].requestHeaderModifier.add[0].name: header "X-Forwarded-For" cannot be modified: the proxy sets it when it forwards the request`,
		`r.yaml:18: spec.rules[0].filters[0].requestHeaderModifier.remove[0]: header "Connection" cannot be modified: it is hop-by-hop, written by the proxy per connection`,
		`r.yaml:18: spec.rules[0].filters[0].requestHeaderModifier.remove[1]: header "x-forwarded-proto" cannot be modified: the proxy sets it when it forwards the request`,
		`r.yaml:22: spec.rules[0].filters[1].responseHeaderModifier.remove[0]: header "Transfer-Encoding" cannot be modified: it is hop-by-hop, written by the proxy per connection`,
		`r.yaml:22: spec.rules[0].filters[1].responseHeaderModifier.remove[1]: header "Content-Length" cannot be modified: it frames the message, written by the proxy`,
	}
	if err == nil || err.Error() != strings.Join(want, "\n") {
		t.Errorf("errors:\n%v\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}
