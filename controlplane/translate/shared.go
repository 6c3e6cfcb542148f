package translate

import (
	"maps"
	"slices"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/meshgate/meshgate/controlplane/model"
)

// Shared translates one model (with one set of Inputs) for many nodes. What
// does not depend on the node is built once and the same immutable protos
// are handed to every node that needs them: the EDS cluster and load
// assignment of each service port, the outbound route configuration of each
// caller namespace, everything of each Gateway, and the ROOTCA secret. The
// output of Translate is equal, message for message, to TranslateWith's.
//
// Resources returned by Translate share their messages with other nodes'
// and with Shared's memo: callers must not modify them. Safe for concurrent
// use.
type Shared struct {
	model  *model.Model
	inputs Inputs
	rootCA *tlsv3.Secret

	clustersMu sync.Mutex
	clusters   map[string]sharedCluster // by cluster name

	outboundMu sync.Mutex
	outbounds  map[string]*sharedOutbound // by outboundKey
	// outboundOf memoizes, by caller, its entry of outbounds: the sidecars
	// of one service need its reachable set computed once.
	outboundOf map[model.NamespacedName]*sharedOutbound

	gatewaysMu sync.Mutex
	gateways   map[string]*sharedGateway // by namespace/name
}

type sharedCluster struct {
	cluster *clusterv3.Cluster
	cla     *endpointv3.ClusterLoadAssignment
	err     error
}

// sharedOutbound is a sidecar's outbound route configuration and the
// clusters it references.
type sharedOutbound struct {
	routes   *routev3.RouteConfiguration
	clusters *clusterSet
	err      error
}

// clusterSet is a sorted list of shared clusters and their load
// assignments, added to a node's translation whole: at 1000 services, a map
// of them per node, then its sorted keys, was most of a sidecar's
// translation.
type clusterSet struct {
	names     []string // sorted
	clusters  []*clusterv3.Cluster
	endpoints []*endpointv3.ClusterLoadAssignment
	// err is the first error of the clusters, in name order.
	err error
}

// sharedGateway is what a gateway node receives, secrets aside.
type sharedGateway struct {
	listeners []*listenerv3.Listener
	routes    []*routev3.RouteConfiguration
	clusters  *clusterSet
	err       error
}

// NewShared returns an empty memo for translating m with in.
func NewShared(m *model.Model, in Inputs) *Shared {
	s := &Shared{
		model:      m,
		inputs:     in,
		clusters:   map[string]sharedCluster{},
		outbounds:  map[string]*sharedOutbound{},
		outboundOf: map[model.NamespacedName]*sharedOutbound{},
		gateways:   map[string]*sharedGateway{},
	}
	if len(in.TrustBundle) > 0 {
		s.rootCA = rootCASecret(in.TrustBundle)
	}
	return s
}

// Model is the model s translates.
func (s *Shared) Model() *model.Model { return s.model }

// Translate builds the resources of one node, as TranslateWith(s.Model(),
// node, inputs) does, reusing what other nodes already built.
func (s *Shared) Translate(node NodeInfo) (*Resources, error) {
	return translateNode(newTranslator(s.model, s.inputs, s), node)
}

// cluster returns the shared cluster and load assignment of a service port.
func (s *Shared) cluster(svc *model.Service, port *model.ServicePort) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, error) {
	s.clustersMu.Lock()
	defer s.clustersMu.Unlock()
	sc, ok := s.clusters[port.Cluster]
	if !ok {
		c, cla, err := buildCluster(s.model, len(s.inputs.TrustBundle) > 0, svc, port)
		sc = sharedCluster{cluster: c, cla: cla, err: err}
		s.clusters[port.Cluster] = sc
	}
	return sc.cluster, sc.cla, sc.err
}

// clusterSet returns the set of the named shared clusters (already built).
func (s *Shared) clusterSet(names []string) *clusterSet {
	s.clustersMu.Lock()
	defer s.clustersMu.Unlock()
	set := &clusterSet{names: names,
		clusters:  make([]*clusterv3.Cluster, len(names)),
		endpoints: make([]*endpointv3.ClusterLoadAssignment, len(names))}
	for i, name := range names {
		sc := s.clusters[name]
		set.clusters[i], set.endpoints[i] = sc.cluster, sc.cla
		if sc.err != nil && set.err == nil {
			set.err = sc.err
		}
	}
	return set
}

// outbound returns the shared outbound route configuration of a sidecar of
// caller and adds its clusters to t. Callers in one namespace that may call
// the same services share it.
func (s *Shared) outbound(t *translator, caller model.NamespacedName) *routev3.RouteConfiguration {
	s.outboundMu.Lock()
	o, ok := s.outboundOf[caller]
	s.outboundMu.Unlock()
	if !ok {
		key, reachable := s.outboundKey(caller)
		s.outboundMu.Lock()
		if o, ok = s.outbounds[key]; !ok {
			sub := newTranslator(s.model, s.inputs, s)
			mayCall := func(*model.Service) bool { return true }
			if reachable != nil {
				mayCall = func(svc *model.Service) bool { return reachable[svc] }
			}
			rc := sub.buildOutboundRoutes(caller.Namespace, mayCall)
			o = &sharedOutbound{routes: rc, clusters: s.clusterSet(slices.Sorted(maps.Keys(sub.clusters))), err: sub.err}
			s.outbounds[key] = o
		}
		s.outboundOf[caller] = o
		s.outboundMu.Unlock()
	}
	if o.err != nil {
		t.fail(o.err)
	}
	t.addClusterSet(o.clusters)
	return o.routes
}

// outboundKey identifies the outbound configuration of caller: its
// namespace, and with the Authorized scope the set of services it may call
// (then also returned; nil means every service).
func (s *Shared) outboundKey(caller model.NamespacedName) (string, map[*model.Service]bool) {
	if s.model.Mesh.OutboundScope != model.OutboundScopeAuthorized {
		return caller.Namespace, nil
	}
	callable := s.model.CallableBy(caller)
	reachable := make(map[*model.Service]bool)
	bits := make([]byte, (len(callable)+7)/8)
	for i, ok := range callable {
		if ok {
			reachable[s.model.Services[i]] = true
			bits[i/8] |= 1 << (i % 8)
		}
	}
	return caller.Namespace + "\x00" + string(bits), reachable
}

// gateway adds the shared translation of the node's Gateway to res and t.
func (s *Shared) gateway(t *translator, res *Resources, node NodeInfo) error {
	key := node.Namespace + "/" + node.Gateway
	s.gatewaysMu.Lock()
	g, ok := s.gateways[key]
	if !ok {
		sub := newTranslator(s.model, s.inputs, s)
		part := &Resources{}
		err := sub.buildGateway(part, node)
		g = &sharedGateway{listeners: part.Listeners, routes: part.Routes,
			clusters: s.clusterSet(slices.Sorted(maps.Keys(sub.clusters))), err: err}
		if err == nil {
			g.err = sub.err
		}
		s.gateways[key] = g
	}
	s.gatewaysMu.Unlock()
	if g.err != nil {
		return g.err
	}
	res.Listeners = append(res.Listeners, g.listeners...)
	res.Routes = append(res.Routes, g.routes...)
	t.addClusterSet(g.clusters)
	return nil
}

// LoadAssignment returns the shared ClusterLoadAssignment of a service port
// of s.Model(): the message every node's translation that includes the
// port's cluster carries. It lets a caller replace only the assignments whose
// endpoints changed (see model.Model.EndpointChanges) instead of translating
// every node again.
func (s *Shared) LoadAssignment(svc *model.Service, port *model.ServicePort) (*endpointv3.ClusterLoadAssignment, error) {
	_, cla, err := s.cluster(svc, port)
	return cla, err
}
