package model

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"

	"github.com/meshgate/meshgate/policy"
)

// Endpoints are the endpoints of a port of one of m's services, from the
// model's endpoint index: the Service's spec.endpoints in the policy, or
// what a discovery source found (WithDiscovered). The slice is shared:
// callers must not modify it.
func (m *Model) Endpoints(port *ServicePort) []*Endpoint {
	return m.endpoints[port.Cluster]
}

// HasSidecarEndpoints reports whether some endpoint of the port is a
// sidecar (calls to it use mTLS).
func (m *Model) HasSidecarEndpoints(port *ServicePort) bool {
	return slices.ContainsFunc(m.endpoints[port.Cluster], func(ep *Endpoint) bool { return ep.Sidecar })
}

// DiscoveredService is a service a discovery source (the Consul catalog)
// defines, rather than the policy: its definition, validated with the
// policy as the Service it stands for (Definition), and its endpoints as
// typed values, which go to the model's endpoint index without being part
// of the policy (WithDiscovered). It is immutable once published.
type DiscoveredService struct {
	NamespacedName
	// Source names where it comes from, as errors name a file:
	// "consul:catalog/orders".
	Source string `json:"source"`
	// Port is the service's one port, spoken with Protocol (ProtocolHTTP
	// or ProtocolHTTP2).
	Port     int32  `json:"port"`
	Protocol string `json:"protocol"`
	// Endpoints serve the port.
	Endpoints []*Endpoint `json:"endpoints,omitempty"`
}

// Definition is the Service of the policy that d stands for, without its
// endpoints: what the policy validates with the policy files (a route to
// it, a static Service of the same name).
func (d *DiscoveredService) Definition() *policy.Service {
	return &policy.Service{
		Name: d.Name, Namespace: d.Namespace,
		Source: policy.Source{File: d.Source, Line: 1},
		Spec:   policy.ServiceSpec{Ports: []policy.ServicePort{{Port: d.Port, Protocol: d.Protocol}}},
	}
}

// PolicyService is the Service of the policy with its endpoints: the
// Service a policy file would declare for d.
func (d *DiscoveredService) PolicyService() *policy.Service {
	svc := d.Definition()
	for _, ep := range d.Endpoints {
		svc.Spec.Endpoints = append(svc.Spec.Endpoints, policy.Endpoint{
			Address: net.JoinHostPort(ep.Host, strconv.FormatUint(uint64(ep.Port), 10)),
			Labels:  ep.Labels,
			Sidecar: ep.Sidecar,
		})
	}
	return svc
}

// CheckEndpoints reports what is wrong with d's endpoints, as the policy
// reports it for the endpoints of a Service of a policy file
// (policy.CheckEndpoints).
func (d *DiscoveredService) CheckEndpoints() policy.ErrorList {
	return policy.CheckEndpoints(d.PolicyService())
}

// WithValidEndpoints returns d without the endpoints the policy rejects
// (CheckEndpoints), and their errors: d itself, and no error, when every
// endpoint is valid. An instance registered with a bad address is left out;
// the service and its other instances serve.
func (d *DiscoveredService) WithValidEndpoints() (*DiscoveredService, policy.ErrorList) {
	bad := policy.EndpointErrors(d.PolicyService())
	if len(bad) == 0 {
		return d, nil
	}
	valid := *d
	valid.Endpoints = nil
	var errs policy.ErrorList
	for i, ep := range d.Endpoints {
		if e, ok := bad[i]; ok {
			errs = append(errs, e...)
			continue
		}
		valid.Endpoints = append(valid.Endpoints, ep)
	}
	return &valid, errs
}

// SameDefinition reports whether d and e define the same service (their
// endpoints aside): a model compiled with one's definition serves the
// other's endpoints.
func (d *DiscoveredService) SameDefinition(e *DiscoveredService) bool {
	return d.NamespacedName == e.NamespacedName && d.Source == e.Source && d.Port == e.Port && d.Protocol == e.Protocol
}

// WithDiscovered returns the model with the endpoints of the discovered
// services added to its endpoint index, beside those of the policy's
// Services: a model that shares m's services, gateways and routes (m is
// left as it is). m must have been compiled with the discovered services'
// definitions in its set; a discovered service it does not have (its
// definition was rejected: its status says why) is left out.
func (m *Model) WithDiscovered(discovered []*DiscoveredService) (*Model, error) {
	index := make(map[string][]*Endpoint, len(m.static)+len(discovered))
	maps.Copy(index, m.static)
	for _, d := range discovered {
		svc := m.services[d.NamespacedName]
		var port *ServicePort
		if svc != nil {
			port = svc.Port(d.Port)
		}
		if port == nil {
			continue
		}
		if _, dup := index[port.Cluster]; dup {
			return nil, fmt.Errorf("discovered service %s (%s): cluster %s has endpoints already", d.NamespacedName, d.Source, port.Cluster)
		}
		if len(d.Endpoints) > 0 {
			index[port.Cluster] = d.Endpoints
		}
	}
	out := *m
	out.endpoints = index
	if err := out.hashEndpoints(); err != nil {
		return nil, err
	}
	return &out, nil
}

// hashRouting sets m.routingDigest: a hash of the model's content, its
// endpoints aside. Compile calls it before the model is shared.
func (m *Model) hashRouting() error {
	routing, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("hash model: %w", err)
	}
	sum := sha256.Sum256(routing)
	m.routingDigest = sum[:]
	return nil
}

// hashEndpoints sets m.Version and m.RoutingVersion from the routing digest
// and the endpoint index. RoutingVersion covers, of the endpoints, only
// whether each service port has a sidecar endpoint (it decides the
// cluster's transport_socket_matches); Version covers them all.
func (m *Model) hashEndpoints() error {
	var endpoints [][]*Endpoint
	var sidecars []byte
	for _, svc := range m.Services {
		for _, port := range svc.Ports {
			endpoints = append(endpoints, m.Endpoints(port))
			flag := byte('0')
			if m.HasSidecarEndpoints(port) {
				flag = '1'
			}
			sidecars = append(sidecars, flag)
		}
	}
	endpointContent, err := json.Marshal(endpoints)
	if err != nil {
		return fmt.Errorf("hash model endpoints: %w", err)
	}
	sum := sha256.New()
	sum.Write(m.routingDigest)
	sum.Write([]byte{0})
	sum.Write(sidecars)
	m.RoutingVersion = hex.EncodeToString(sum.Sum(nil)[:8])
	sum.Reset()
	sum.Write(m.routingDigest)
	sum.Write([]byte{0})
	sum.Write(endpointContent)
	m.Version = hex.EncodeToString(sum.Sum(nil)[:8])
	return nil
}

// EndpointChanges compares m with prev. When they differ in their endpoints
// only (equal RoutingVersion), it returns the clusters whose endpoints differ,
// sorted, and true; an empty list when the models are equal. Otherwise
// (anything else differs, or either is nil) it returns false: m must be
// translated whole.
func (m *Model) EndpointChanges(prev *Model) ([]string, bool) {
	if m == nil || prev == nil || m.RoutingVersion == "" || m.RoutingVersion != prev.RoutingVersion ||
		len(m.Services) != len(prev.Services) {
		return nil, false
	}
	var changed []string
	for i, svc := range m.Services {
		old := prev.Services[i]
		if svc.NamespacedName != old.NamespacedName || len(svc.Ports) != len(old.Ports) {
			return nil, false // a hash collision: be safe
		}
		for j, port := range svc.Ports {
			oldPort := old.Ports[j]
			if port.Cluster != oldPort.Cluster {
				return nil, false
			}
			if !slices.EqualFunc(m.Endpoints(port), prev.Endpoints(oldPort), equalEndpoints) {
				changed = append(changed, port.Cluster)
			}
		}
	}
	slices.Sort(changed)
	return changed, true
}

func equalEndpoints(a, b *Endpoint) bool {
	return a.Host == b.Host && a.Port == b.Port && a.Sidecar == b.Sidecar && maps.Equal(a.Labels, b.Labels)
}
