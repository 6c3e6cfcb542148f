// Package translate turns the compiled model into the Envoy v3 resources one
// proxy node receives, following the wire contract in docs/xds.md exactly: it
// emits only the fields the meshgate proxy implements, and every resource
// passes its proto's Validate().
//
// Translate is a pure function of the model, the Inputs and the node. Cache
// is the same function memoized across the nodes of one model: what does
// not depend on the node (each service port's cluster and load assignment,
// a sidecar's outbound routes, a Gateway's listeners and routes, the ROOTCA
// secret) is built once and the same immutable messages are handed to every
// node that needs them. Both run the same code, one file per feature:
//
//	gateway.go   what a gateway node receives
//	sidecar.go   what a sidecar receives: inbound and outbound
//	listener.go  Listeners and their HttpConnectionManager
//	route.go     RouteConfigurations: virtual hosts, matches, actions
//	header.go    request and response header modifiers
//	traffic.go   retries, backend request timeouts, mirrors, backendRef filters
//	cluster.go   Clusters
//	endpoint.go  ClusterLoadAssignments (EDS), from the model's endpoint index
//	rbac.go      authorization: the RBAC filters and their per-route configs
//	tls.go       mTLS: transport sockets and the ROOTCA secret (SDS)
//	tracing.go   OpenTelemetry tracing of every listener, and its collector cluster
//	accesslog.go access logs of every listener (the file access logger, JSON)
//
// Each feature has golden pairs, testdata/<feature>/<case>.in.yaml (a
// policy, and what the translation needs besides) and <case>.out.yaml (what
// every node receives), which the data plane's own apply path must accept
// (contract_test.go).
package translate

import (
	"cmp"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/controlplane/model"
)

// Resources is everything one node receives, each slice sorted by name.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	// Secrets served over SDS: the ROOTCA trust bundle when the mesh has a CA.
	Secrets []*tlsv3.Secret
}

// Messages returns every resource, listeners first.
func (r *Resources) Messages() []proto.Message {
	out := make([]proto.Message, 0, len(r.Listeners)+len(r.Routes)+len(r.Clusters)+len(r.Endpoints)+len(r.Secrets))
	for _, l := range r.Listeners {
		out = append(out, l)
	}
	for _, rc := range r.Routes {
		out = append(out, rc)
	}
	for _, c := range r.Clusters {
		out = append(out, c)
	}
	for _, e := range r.Endpoints {
		out = append(out, e)
	}
	for _, sec := range r.Secrets {
		out = append(out, sec)
	}
	return out
}

// Inputs is what a translation needs besides the model and the node.
type Inputs struct {
	// TrustBundle is the PEM bundle of the mesh CA's roots. Empty: the mesh
	// has no CA, and every hop is plaintext.
	TrustBundle []byte
}

// mtls reports whether the mesh has a CA, so that hops between proxies use
// mTLS.
func (in Inputs) mtls() bool { return len(in.TrustBundle) > 0 }

// Translate builds the resources of one node. A node with an unknown role
// gets empty Resources and no error, and so does a gateway node whose
// Gateway does not exist, except for the ROOTCA secret; malformed node
// metadata is an error. With a trust bundle in in, every gateway and
// sidecar node gets the ROOTCA secret, sidecar inbound listeners require
// mTLS (by the service's mode) and clusters use mTLS to endpoints that are
// sidecars. The resources are new messages; Cache.Translate gives equal
// ones, shared between nodes.
func Translate(m *model.Model, in Inputs, node NodeInfo) (*Resources, error) {
	return translateNode(direct{model: m, inputs: in}, node)
}

// parts are the parts of a translation that do not depend on the node:
// built when asked (direct, for Translate) or once per model (Cache). The
// messages they return are never modified afterwards.
type parts interface {
	// translation is the model and inputs the parts are built from.
	translation() (*model.Model, Inputs)
	// cluster is the EDS cluster of a service port and its load
	// assignment.
	cluster(svc *model.Service, port *model.ServicePort) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, error)
	// outbound is the outbound route configuration of a sidecar of the
	// service caller, with the clusters it references.
	outbound(caller model.NamespacedName) (*outboundPart, error)
	// gateway is what every node of the gateway namespace/name receives,
	// secrets aside; nil when the model has no such Gateway.
	gateway(namespace, name string) (*gatewayPart, error)
	// rootCA is the ROOTCA secret of the trust bundle.
	rootCA() *tlsv3.Secret
}

// direct builds every part when asked: Translate's parts.
type direct struct {
	model  *model.Model
	inputs Inputs
}

func (d direct) translation() (*model.Model, Inputs) { return d.model, d.inputs }

func (d direct) cluster(svc *model.Service, port *model.ServicePort) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, error) {
	return buildCluster(d.model, d.inputs, svc, port)
}

func (d direct) outbound(caller model.NamespacedName) (*outboundPart, error) {
	return buildOutbound(d, caller, func(svc *model.Service) bool { return d.model.MayCall(caller, svc) })
}

func (d direct) gateway(namespace, name string) (*gatewayPart, error) {
	gw := d.model.Gateway(namespace, name)
	if gw == nil {
		return nil, nil
	}
	return buildGateway(d, gw)
}

func (d direct) rootCA() *tlsv3.Secret { return rootCASecret(d.inputs.TrustBundle) }

// translateNode builds one node's resources from p.
func translateNode(p parts, node NodeInfo) (*Resources, error) {
	_, in := p.translation()
	res := &Resources{}
	var own []*ownCluster
	var sets []*clusterSet
	switch node.Role {
	case RoleGateway:
		gw, err := p.gateway(node.Namespace, node.Gateway)
		if err != nil {
			return nil, err
		}
		if gw != nil {
			res.Listeners = append(res.Listeners, gw.listeners...)
			res.Routes = append(res.Routes, gw.routes...)
			res.Secrets = append(res.Secrets, gw.secrets...)
			sets = append(sets, gw.clusters)
		}
	case RoleSidecar:
		var err error
		if own, sets, err = sidecar(p, res, node); err != nil {
			return nil, err
		}
	case RoleProxyless:
		set, err := proxyless(p, res, node)
		if err != nil {
			return nil, err
		}
		// Neither secrets (the client's certificate providers read files)
		// nor the tracing collector's cluster.
		res.Clusters, res.Endpoints = mergeClusters(nil, []*clusterSet{set})
		if m, _ := p.translation(); node.Zone != "" {
			preferLocal(m, node.Zone, res.Endpoints)
		}
		slices.SortFunc(res.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.Name, b.Name) })
		return res, nil
	default:
		return res, nil
	}
	if in.mtls() {
		res.Secrets = append([]*tlsv3.Secret{p.rootCA()}, res.Secrets...)
	}
	slices.SortFunc(res.Secrets, func(a, b *tlsv3.Secret) int { return cmp.Compare(a.Name, b.Name) })
	if m, _ := p.translation(); m.Mesh.Tracing != nil && len(res.Listeners) > 0 {
		collector, err := tracingCluster(m.Mesh.Tracing)
		if err != nil {
			return nil, err
		}
		own = append(own, &ownCluster{cluster: collector})
	}
	res.Clusters, res.Endpoints = mergeClusters(own, sets)
	if m, _ := p.translation(); node.Zone != "" {
		preferLocal(m, node.Zone, res.Endpoints)
	}
	slices.SortFunc(res.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(res.Routes, func(a, b *routev3.RouteConfiguration) int { return cmp.Compare(a.Name, b.Name) })
	if node.Envoy {
		if err := forEnvoy(res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// clusterCollector gathers the clusters a part references, once each, in
// the order first referenced; the first error is kept.
type clusterCollector struct {
	p     parts
	names map[string]bool
	list  []*ownCluster
	err   error
}

func newClusterCollector(p parts) *clusterCollector {
	return &clusterCollector{p: p, names: map[string]bool{}}
}

// add adds the cluster of a service port.
func (c *clusterCollector) add(svc *model.Service, port *model.ServicePort) {
	if c.names[port.Cluster] {
		return
	}
	c.names[port.Cluster] = true
	cl, cla, err := c.p.cluster(svc, port)
	if err != nil && c.err == nil {
		c.err = err // it names the cluster
	}
	c.list = append(c.list, &ownCluster{cluster: cl, endpoints: cla})
}

// set returns the collected clusters as a sorted set.
func (c *clusterCollector) set() *clusterSet { return newClusterSet(c.list) }
