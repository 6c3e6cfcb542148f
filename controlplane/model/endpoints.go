package model

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// hash sets m.Version and m.RoutingVersion. The routing content is the model
// without its endpoints but with, per service port, whether any endpoint is a
// sidecar (it decides the cluster's transport_socket_matches); Version also
// covers the endpoints. Compile calls it before the model is shared.
func (m *Model) hash() error {
	var endpoints [][]*Endpoint
	var sidecars []byte
	for _, svc := range m.Services {
		for _, port := range svc.Ports {
			endpoints = append(endpoints, port.Endpoints)
			flag := byte('0')
			if port.HasSidecarEndpoints() {
				flag = '1'
			}
			sidecars = append(sidecars, flag)
			port.Endpoints = nil
		}
	}
	routing, err := json.Marshal(m)
	i := 0
	for _, svc := range m.Services {
		for _, port := range svc.Ports {
			port.Endpoints = endpoints[i]
			i++
		}
	}
	if err != nil {
		return fmt.Errorf("hash model: %w", err)
	}
	endpointContent, err := json.Marshal(endpoints)
	if err != nil {
		return fmt.Errorf("hash model endpoints: %w", err)
	}
	sum := sha256.New()
	sum.Write(routing)
	sum.Write([]byte{0})
	sum.Write(sidecars)
	m.RoutingVersion = hex.EncodeToString(sum.Sum(nil)[:8])
	sum.Reset()
	sum.Write(routing)
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
			if !slices.EqualFunc(port.Endpoints, oldPort.Endpoints, equalEndpoints) {
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
