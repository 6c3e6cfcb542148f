package translate

import (
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/meshgate/meshgate/controlplane/model"
)

// Cache is Translate memoized across the nodes of one model (with one set
// of Inputs): what does not depend on the node is built once and the same
// immutable messages are handed to every node that needs them: the EDS
// cluster and load assignment of each service port, the outbound route
// configuration of each caller namespace (and, with the Authorized
// outbound scope, reachable set), everything of each Gateway, and the
// ROOTCA secret. Its output is equal, message for message, to Translate's:
// the same code builds both (parts).
//
// Resources returned by Translate share their messages with other nodes'
// and with the Cache: callers must not modify them. Safe for concurrent
// use.
type Cache struct {
	direct
	rootCASecret *tlsv3.Secret

	clustersMu sync.Mutex
	clusters   map[string]*cachedCluster // by cluster name

	outboundMu sync.Mutex
	outbounds  map[string]*cachedOutbound // by outboundKey
	// outboundOf memoizes, by caller, its entry of outbounds: the sidecars
	// of one service need its reachable set computed once.
	outboundOf map[model.NamespacedName]*cachedOutbound
	// outboundPerCaller: mesh routes' authorization names identities, so
	// the outbound configuration differs between the callers of one
	// namespace (rulesForCaller).
	outboundPerCaller bool

	gatewaysMu sync.Mutex
	gateways   map[model.NamespacedName]*cachedGateway
}

type cachedCluster struct {
	cluster *clusterv3.Cluster
	cla     *endpointv3.ClusterLoadAssignment
	err     error
}

type cachedOutbound struct {
	part *outboundPart
	err  error
}

type cachedGateway struct {
	part *gatewayPart
	err  error
}

// NewCache returns an empty memo for translating m with in.
func NewCache(m *model.Model, in Inputs) *Cache {
	c := &Cache{
		direct:     direct{model: m, inputs: in},
		clusters:   map[string]*cachedCluster{},
		outbounds:  map[string]*cachedOutbound{},
		outboundOf: map[model.NamespacedName]*cachedOutbound{},
		gateways:   map[model.NamespacedName]*cachedGateway{},

		outboundPerCaller: outboundDependsOnCaller(m),
	}
	if in.mtls() {
		c.rootCASecret = rootCASecret(in.TrustBundle)
	}
	return c
}

// Model is the model c translates.
func (c *Cache) Model() *model.Model { return c.model }

// Translate builds the resources of one node, as Translate(c.Model(),
// inputs, node) does, reusing what other nodes already built.
func (c *Cache) Translate(node NodeInfo) (*Resources, error) {
	return translateNode(c, node)
}

// LoadAssignment returns the shared ClusterLoadAssignment of a service port
// of c.Model(): the message every node's translation that includes the
// port's cluster carries. It lets a caller replace only the assignments whose
// endpoints changed (see model.Model.EndpointChanges) instead of translating
// every node again.
func (c *Cache) LoadAssignment(svc *model.Service, port *model.ServicePort) (*endpointv3.ClusterLoadAssignment, error) {
	_, cla, err := c.cluster(svc, port)
	return cla, err
}

func (c *Cache) cluster(svc *model.Service, port *model.ServicePort) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, error) {
	c.clustersMu.Lock()
	defer c.clustersMu.Unlock()
	cc, ok := c.clusters[port.Cluster]
	if !ok {
		cc = &cachedCluster{}
		cc.cluster, cc.cla, cc.err = c.direct.cluster(svc, port)
		c.clusters[port.Cluster] = cc
	}
	return cc.cluster, cc.cla, cc.err
}

// outbound: callers in one namespace that may call the same services share
// one outbound configuration.
func (c *Cache) outbound(caller model.NamespacedName) (*outboundPart, error) {
	c.outboundMu.Lock()
	o, ok := c.outboundOf[caller]
	c.outboundMu.Unlock()
	if !ok {
		key, reachable := c.outboundKey(caller)
		c.outboundMu.Lock()
		if o, ok = c.outbounds[key]; !ok {
			mayCall := func(*model.Service) bool { return true }
			if reachable != nil {
				mayCall = func(svc *model.Service) bool { return reachable[svc] }
			}
			o = &cachedOutbound{}
			o.part, o.err = buildOutbound(c, caller, mayCall)
			c.outbounds[key] = o
		}
		c.outboundOf[caller] = o
		c.outboundMu.Unlock()
	}
	return o.part, o.err
}

// outboundKey identifies the outbound configuration of caller: its
// namespace, and with the Authorized scope the set of services it may call
// (then also returned; nil means every service).
func (c *Cache) outboundKey(caller model.NamespacedName) (string, map[*model.Service]bool) {
	base := caller.Namespace
	if c.outboundPerCaller {
		// Mesh routes' authorization is resolved for the caller
		// (rbac.go).
		base = caller.Namespace + "\x00" + caller.Name
	}
	if c.model.Mesh.OutboundScope != model.OutboundScopeAuthorized {
		return base, nil
	}
	callable := c.model.CallableBy(caller)
	reachable := make(map[*model.Service]bool)
	bits := make([]byte, (len(callable)+7)/8)
	for i, ok := range callable {
		if ok {
			reachable[c.model.Services[i]] = true
			bits[i/8] |= 1 << (i % 8)
		}
	}
	return base + "\x00" + string(bits), reachable
}

func (c *Cache) gateway(namespace, name string) (*gatewayPart, error) {
	key := model.NamespacedName{Namespace: namespace, Name: name}
	c.gatewaysMu.Lock()
	defer c.gatewaysMu.Unlock()
	g, ok := c.gateways[key]
	if !ok {
		g = &cachedGateway{}
		if gw := c.model.Gateway(namespace, name); gw != nil {
			g.part, g.err = buildGateway(c, gw)
		}
		c.gateways[key] = g
	}
	return g.part, g.err
}

func (c *Cache) rootCA() *tlsv3.Secret { return c.rootCASecret }
