package conformance

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// document is one policy file for meshgate: one resource per file, so that
// meshgate's file:line messages name the resource.
type document struct {
	key  objKey
	file string
	yaml []byte
}

// translator turns the fake cluster's objects into meshgate policy:
//   - a Kubernetes Service becomes a meshgate Service with the same name,
//     namespace and HTTP ports, whose endpoints are the echo backends of the
//     Deployments its selector matches or, without a selector, of the pods
//     its EndpointSlices list by IP (the sidecars of those backends in a
//     mesh namespace); headless Services alike;
//   - Gateway API documents (Gateway, HTTPRoute, GRPCRoute, ReferenceGrant,
//     GatewayClass, ListenerSet) are passed as they are, without status and server-set
//     metadata but their generation and creationTimestamp (the oldest of
//     conflicting routes wins) (meshgate's status carries it as
//     observedGeneration); a Gateway without spec.addresses gets one
//     loopback IP of its own (two Gateways on port 80 are two load
//     balancers in Kubernetes);
//   - a pod of a mesh namespace that no Service selects (a client only)
//     gets a meshgate Service named after its Deployment, for its sidecar's
//     identity;
//   - Namespaces are passed with their labels (allowedRoutes selectors);
//   - Secrets are passed with their type and data (the certificates of
//     HTTPS listeners);
//   - BackendTLSPolicies are passed as they are, ConfigMaps with their
//     data (the CA bundles the policies name); a Service port targeting
//     8443 (the echo backend's TLS port) reaches the backend's TLS port,
//     as an HTTP port whose TLS the policy sets;
//   - Deployments, Pods and EndpointSlices are not policy.
type translator struct {
	addrs    map[objKey]string
	backends map[objKey]*backend
}

func (tr translator) translate(o *objects) []document {
	var docs []document
	add := func(key objKey, v map[string]any) {
		b, err := yaml.Marshal(v)
		if err != nil {
			panic(fmt.Sprintf("marshalling %s: %v", key, err)) // the runner's own maps
		}
		file := strings.ToLower(fmt.Sprintf("%s_%s_%s.yaml", key.kind, key.namespace, key.name))
		docs = append(docs, document{key: key, file: file, yaml: b})
	}
	for _, s := range o.services {
		add(keyOf("Service", &s), tr.service(s, o.endpointSlices))
	}
	for _, b := range tr.backends {
		for _, sc := range b.sidecars {
			if sc.workload {
				add(objKey{kind: "Service", namespace: b.namespace, name: sc.service}, map[string]any{
					"apiVersion": "meshgate.dev/v1alpha1",
					"kind":       "Service",
					"metadata":   meta(sc.service, b.namespace, nil),
					"spec": map[string]any{
						"ports":     []any{map[string]any{"name": "http", "port": 80}},
						"endpoints": []any{map[string]any{"address": sc.addrs.inbound, "sidecar": true}},
					},
				})
			}
		}
	}
	for _, n := range o.namespaces {
		add(keyOf("Namespace", &n), map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": meta(n.Name, "", n.Labels)})
	}
	for _, g := range o.gatewayClasses {
		add(keyOf("GatewayClass", &g), gatewayAPI("GatewayClass", &g, g.Spec))
	}
	for _, g := range o.gateways {
		k := keyOf("Gateway", &g)
		spec := g.Spec.DeepCopy()
		if len(spec.Addresses) == 0 && tr.addrs[k] != "" {
			spec.Addresses = append(spec.Addresses, gatewaySpecAddress(tr.addrs[k]))
		}
		add(k, gatewayAPI("Gateway", &g, spec))
	}
	for _, r := range o.httpRoutes {
		add(keyOf("HTTPRoute", &r), gatewayAPI("HTTPRoute", &r, r.Spec))
	}
	for _, r := range o.grpcRoutes {
		add(keyOf("GRPCRoute", &r), gatewayAPI("GRPCRoute", &r, r.Spec))
	}
	for _, r := range o.tcpRoutes {
		add(keyOf("TCPRoute", &r), gatewayAPI("TCPRoute", &r, r.Spec))
	}
	for _, r := range o.tlsRoutes {
		add(keyOf("TLSRoute", &r), gatewayAPI("TLSRoute", &r, r.Spec))
	}
	for _, g := range o.referenceGrants {
		add(keyOf("ReferenceGrant", &g), gatewayAPI("ReferenceGrant", &g, g.Spec))
	}
	for _, ls := range o.listenerSets {
		add(keyOf("ListenerSet", &ls), gatewayAPI("ListenerSet", &ls, ls.Spec))
	}
	for _, sec := range o.secrets {
		doc := map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": meta(sec.Name, sec.Namespace, sec.Labels), "type": string(sec.Type)}
		if len(sec.Data) > 0 {
			doc["data"] = sec.Data // []byte: base64, as Kubernetes writes it
		}
		if len(sec.StringData) > 0 {
			doc["stringData"] = sec.StringData
		}
		add(keyOf("Secret", &sec), doc)
	}
	for _, p := range o.backendTLS {
		add(keyOf("BackendTLSPolicy", &p), gatewayAPI("BackendTLSPolicy", &p, p.Spec))
	}
	for _, cm := range o.configMaps {
		doc := map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(cm.Name, cm.Namespace, cm.Labels)}
		if len(cm.Data) > 0 {
			doc["data"] = cm.Data
		}
		add(keyOf("ConfigMap", &cm), doc)
	}
	sort.Slice(docs, func(i, j int) bool { return docs[i].file < docs[j].file })
	return docs
}

// echoTLSPort is the port the suite's echo backend serves TLS on in its
// pod (HTTPS_PORT's default).
const echoTLSPort = 8443

func meta(name, namespace string, lbls map[string]string) map[string]any {
	m := map[string]any{"name": name}
	if namespace != "" {
		m["namespace"] = namespace
	}
	if len(lbls) > 0 {
		m["labels"] = lbls
	}
	return m
}

// gatewayAPI is the document of a Gateway API object: its name, namespace,
// labels and generation (the observedGeneration meshgate's status
// carries), and spec.
func gatewayAPI(kind string, o metav1.Object, spec any) map[string]any {
	m := meta(o.GetName(), o.GetNamespace(), o.GetLabels())
	if o.GetGeneration() > 0 {
		m["generation"] = o.GetGeneration()
	}
	if created := o.GetCreationTimestamp(); !created.IsZero() {
		m["creationTimestamp"] = created.UTC().Format(time.RFC3339)
	}
	return map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1",
		"kind":       kind,
		"metadata":   m,
		"spec":       spec,
	}
}

// service is the meshgate Service for a Kubernetes Service. Ports that are
// neither HTTP nor h2c (TCP, TLS, UDP) are left out, but for a Service of
// TCP echo backends (TCPRoute), whose ports are TCP ports; appProtocol is
// passed as it is. The endpoints of a port are the echo backends of the pods
// behind it (their sidecars in a mesh namespace), on the backend's port for
// the pod port targeted (3001 and h2c ports: the h2c one; others, and every
// port of a gRPC echo backend: the HTTP one). The pods are those its selector matches or, for a Service without a
// selector, those the ready addresses of its EndpointSlices name (by pod
// IP). A headless Service (clusterIP: None) is one like the others: routing
// to it is routing to its endpoints.
func (tr translator) service(s corev1.Service, slices []discoveryv1.EndpointSlice) map[string]any {
	var ports, endpoints []any
	tcpOnly := tr.tcpBackends(s)
	for _, p := range s.Spec.Ports {
		protocol, ok := httpProtocol(p)
		tlsPort := p.TargetPort.IntValue() == echoTLSPort
		if tlsPort {
			protocol, ok = "HTTP", true
		}
		if tcpOnly && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
			// A Service of TCP echo backends (TCPRoute): a TCP port.
			protocol, ok = "TCP", true
		}
		if !ok {
			continue
		}
		port := map[string]any{"port": p.Port, "protocol": protocol}
		// A TLS port's appProtocol (HTTPS) is the BackendTLSPolicy's to
		// say: meshgate's Service port is HTTP.
		if app := ptr.Deref(p.AppProtocol, ""); app != "" && !tlsPort {
			port["appProtocol"] = app
		}
		ref := any(p.Port)
		if p.Name != "" {
			port["name"] = p.Name
			ref = p.Name
		}
		ports = append(ports, port)
		var targets []podPort
		if len(s.Spec.Selector) > 0 {
			targets = tr.selected(s, p)
		} else {
			targets = tr.sliceTargets(s, p, slices)
		}
		for _, t := range targets {
			if sc := t.pod.sidecars[s.Name]; sc != nil {
				endpoints = append(endpoints, map[string]any{"address": sc.addrs.inbound, "port": ref, "sidecar": true})
				continue
			}
			if isMeshNamespace(s.Namespace) {
				continue // its sidecar is not started yet
			}
			target := t.pod.httpPort
			h2 := protocol == "HTTP2" || ptr.Deref(p.AppProtocol, "") == "kubernetes.io/h2c"
			switch {
			case protocol == "TCP" && t.port == 8443:
				target = t.pod.h2cPort // a TCP echo backend's TLS port
			case tlsPort && t.pod.httpsPort != "":
				target = t.pod.httpsPort
			case !t.pod.grpc && (t.port == 3001 || h2):
				target = t.pod.h2cPort // the gRPC echo serves h2c on its HTTP port
			case t.port == 8443:
				target = t.pod.httpsPort // an HTTPS echo backend (TLS passthrough)
			}
			endpoints = append(endpoints, map[string]any{"address": "127.0.0.1:" + target, "port": ref})
		}
	}
	spec := map[string]any{"ports": ports}
	if len(endpoints) > 0 {
		spec["endpoints"] = endpoints
	}
	return map[string]any{
		"apiVersion": "meshgate.dev/v1alpha1",
		"kind":       "Service",
		"metadata":   meta(s.Name, s.Namespace, s.Labels),
		"spec":       spec,
	}
}

// tcpBackends reports whether the pods s selects are TCP echo backends
// (and there is at least one).
func (tr translator) tcpBackends(s corev1.Service) bool {
	if len(s.Spec.Selector) == 0 || len(s.Spec.Ports) == 0 {
		return false
	}
	targets := tr.selected(s, s.Spec.Ports[0])
	for _, t := range targets {
		if !t.pod.tcp {
			return false
		}
	}
	return len(targets) > 0
}

// podPort is a pod behind a Service port and the pod port it targets (0
// when the target is a port name).
type podPort struct {
	pod  *backend
	port int
}

// selected is the pods s's selector matches, by pod name, with p's target
// port.
func (tr translator) selected(s corev1.Service, p corev1.ServicePort) []podPort {
	selector := labels.SelectorFromSet(s.Spec.Selector)
	var out []podPort
	for _, b := range tr.backends {
		if b.namespace == s.Namespace && selector.Matches(labels.Set(b.labels)) {
			out = append(out, podPort{pod: b, port: p.TargetPort.IntValue()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pod.pod < out[j].pod.pod })
	return out
}

// sliceTargets is the pods the EndpointSlices of s (those of its namespace
// labelled kubernetes.io/service-name: NAME) list for port p (the slice port
// of p's name), by pod name: every address of an endpoint not marked
// unready that is the IP of a pod the runner runs. Other addresses (FQDN
// slices, IPs of no pod) reach nothing in the runner's network namespace and
// are left out, as are slices without a port of p's name.
func (tr translator) sliceTargets(s corev1.Service, p corev1.ServicePort, slices []discoveryv1.EndpointSlice) []podPort {
	byIP := map[string]*backend{}
	for _, b := range tr.backends {
		byIP[b.ip] = b
	}
	seen := map[*backend]bool{}
	var out []podPort
	for _, es := range slices {
		if es.Namespace != s.Namespace || es.Labels[discoveryv1.LabelServiceName] != s.Name {
			continue
		}
		target, ok := 0, false
		for _, sp := range es.Ports {
			if ptr.Deref(sp.Name, "") == p.Name && ptr.Deref(sp.Protocol, corev1.ProtocolTCP) == corev1.ProtocolTCP {
				target, ok = int(ptr.Deref(sp.Port, 0)), true
				break
			}
		}
		if !ok {
			continue
		}
		for _, ep := range es.Endpoints {
			if !ptr.Deref(ep.Conditions.Ready, true) {
				continue
			}
			for _, addr := range ep.Addresses {
				if b := byIP[addr]; b != nil && !seen[b] {
					seen[b] = true
					out = append(out, podPort{pod: b, port: target})
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pod.pod < out[j].pod.pod })
	return out
}

// httpProtocol is the meshgate protocol of a Service port, if it is HTTP
// (its appProtocol, if any, is passed as the meshgate Service port's).
func httpProtocol(p corev1.ServicePort) (string, bool) {
	if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
		return "", false
	}
	app := ""
	if p.AppProtocol != nil {
		app = *p.AppProtocol
	}
	switch {
	case app == "kubernetes.io/h2c" || app == "grpc":
		return "HTTP", true // appProtocol makes it HTTP/2
	case p.Name == "grpc" || strings.HasPrefix(p.Name, "grpc-"):
		return "HTTP2", true
	case app == "http" || app == "kubernetes.io/ws" || app == "" && (p.Name == "" || p.Name == "http" || strings.HasPrefix(p.Name, "http-") || strings.HasSuffix(p.Name, "-port")):
		return "HTTP", true
	}
	return "", false
}

func isMeshNamespace(ns string) bool {
	return strings.HasPrefix(ns, "gateway-conformance-mesh")
}
