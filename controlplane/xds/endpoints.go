package xds

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/controlplane/translate"
)

// errPerProxyEndpoints: a changed cluster's load assignment differs from
// proxy to proxy (it prefers local endpoints): every node is translated.
var errPerProxyEndpoints = errors.New("per-proxy load assignments (preferLocal)")

// endpointSwap is the replacement of one distinct EDS type snapshot (most
// nodes share theirs).
type endpointSwap struct {
	ts *typeSnapshot
}

// setEndpointsLocked serves m, which differs from the served model only in
// the endpoints of the changed clusters (model.Model.EndpointChanges): it
// translates and encodes those clusters' load assignments once, swaps them
// into every node snapshot that holds them (every other resource, and its
// encoding, stays as is: the translation of m would give the same), and
// answers the nodes' open EDS watches. s.shared and s.encoder start a new
// generation for m, for nodes that connect later. A node whose swapped
// snapshot would have no endpoint left is held (setSnapshotLocked); a node
// already held has a snapshot older than the served model, so it is
// translated whole.
//
// It returns an error, having changed nothing, when a changed cluster cannot
// be translated; the caller then takes the full path.
func (s *Server) setEndpointsLocked(ctx context.Context, m *model.Model, changed []string) error {
	replacements := make(map[string]*encoded, len(changed))
	if len(changed) == 0 {
		// The same content: the current generation translates m as it
		// does the served model.
		s.model = m
	} else {
		shared := translate.NewCache(m, translate.Inputs{TrustBundle: s.bundle})
		enc := newEncoder()
		for _, svc := range m.Services {
			for _, port := range svc.Ports {
				if _, found := slices.BinarySearch(changed, port.Cluster); !found {
					continue
				}
				if translate.PrefersLocal(port) {
					return fmt.Errorf("cluster %q: %w", port.Cluster, errPerProxyEndpoints)
				}
				cla, err := shared.LoadAssignment(svc, port)
				if err != nil {
					return fmt.Errorf("cluster %q: %w", port.Cluster, err)
				}
				e, err := enc.encode(resourcev3.EndpointType, port.Cluster, cla)
				if err != nil {
					return err
				}
				replacements[port.Cluster] = e
			}
		}
		s.model, s.shared, s.encoder = m, shared, enc
	}
	swaps := map[*typeSnapshot]*endpointSwap{}
	for _, id := range slices.Sorted(maps.Keys(s.nodes)) {
		n := s.nodes[id]
		if n.held != "" { // including a first snapshot held (resumeHoldReasonLocked)
			s.updateNodeLocked(ctx, id, n)
			continue
		}
		if n.snap == nil {
			continue
		}
		old := n.snap.types[resourcev3.EndpointType]
		var swap *endpointSwap
		if old != nil && len(replacements) > 0 {
			var ok bool
			if swap, ok = swaps[old]; !ok {
				swap = swapEndpoints(old, replacements)
				swaps[old] = swap
			}
		}
		if swap == nil {
			// The node holds none of the changed clusters: its snapshot
			// is m's translation.
			n.policyVersion = m.PolicyVersion
			continue
		}
		snap := &nodeSnapshot{types: maps.Clone(n.snap.types)}
		snap.types[resourcev3.EndpointType] = swap.ts
		s.setSnapshotLocked(ctx, id, n, snap, snap.version())
	}
	return nil
}

// swapEndpoints returns old with the replacements of the clusters it holds;
// nil when it holds none of them.
func swapEndpoints(old *typeSnapshot, replacements map[string]*encoded) *endpointSwap {
	var list, changed []*encoded
	for i, e := range old.list {
		r, ok := replacements[e.name]
		if !ok {
			continue
		}
		if list == nil {
			list = slices.Clone(old.list)
		}
		list[i] = r
		changed = append(changed, r)
	}
	if list == nil {
		return nil
	}
	ts := newTypeSnapshot(list)
	ts.prevVersion, ts.changed = old.version, changed // old.list is sorted: so is changed
	return &endpointSwap{ts: ts}
}
