package xdscheck

import (
	"slices"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/reflect/protoreflect"

	// The capture listener filters, registered for Any resolution.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
)

// The listener filters of a transparent sidecar's capture listener
// (docs/xds.md, "Transparent capture").
const (
	OriginalDstType   protoreflect.FullName = "envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
	HTTPInspectorType protoreflect.FullName = "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
)

// Enum numbers of the ORIGINAL_DST cluster.
const (
	enumClusterOriginalDst = 4 // Cluster.DiscoveryType.ORIGINAL_DST
	enumClusterProvided    = 6 // Cluster.LbPolicy.CLUSTER_PROVIDED
)

// captureSubset is the capture part of docs/xds.md: the listener filters
// of a capture listener and the destination match of its chains.
func captureSubset() Rules {
	return Rules{
		OriginalDstType:   Allow(),
		HTTPInspectorType: Allow(),
	}
}

// extendCapture lets a listener read the original destination of its
// connections (original_dst, first), inspect their first bytes
// (tls_inspector, http_inspector) and choose its chains by destination;
// lets a cluster be ORIGINAL_DST.
func extendCapture(subset Rules) {
	subset["envoy.config.listener.v3.ListenerFilter"].With("typed_config", Field{AnyTypes: []protoreflect.FullName{tlsInspectorType, OriginalDstType, HTTPInspectorType}})
	listener := subset["envoy.config.listener.v3.Listener"]
	chainKinds := listener.check
	listener.
		With("listener_filters", Field{MaxItems: 3}).
		With("listener_filters_timeout", Field{}).
		With("continue_on_listener_filters_timeout", Field{}).
		With("default_filter_chain", Field{}).
		CheckedBy(func(m protoreflect.Message) []Violation {
			l, ok := m.Interface().(*listenerv3.Listener)
			if !ok {
				return nil
			}
			if hasOriginalDst(l) {
				return checkCaptureListener(l)
			}
			if v := checkNoCapture(l); v != nil {
				return v
			}
			if chainKinds != nil {
				return chainKinds(m)
			}
			return nil
		})
	match := subset["envoy.config.listener.v3.FilterChainMatch"]
	match.required = slices.DeleteFunc(slices.Clone(match.required), func(n protoreflect.Name) bool { return n == "transport_protocol" })
	// CidrRange's own rule is the RBAC filter's, when it is registered.
	match.With("prefix_ranges", Field{MaxItems: maxPrefixRanges, Only: Allow("address_prefix", "prefix_len").Requires("address_prefix", "prefix_len")}).
		With("destination_port", Field{}).
		CheckedBy(func(m protoreflect.Message) []Violation {
			fm, ok := m.Interface().(*listenerv3.FilterChainMatch)
			if ok && fm.GetTransportProtocol() == "" && fm.GetDestinationPort() == nil && len(fm.GetPrefixRanges()) == 0 {
				return []Violation{{Path: "transport_protocol", Reason: "required (or a destination: prefix_ranges, destination_port)"}}
			}
			return nil
		})
	cluster := subset[clusterType]
	cluster.With("type", Field{Enums: append(slices.Clone(cluster.fields["type"].Enums), enumClusterOriginalDst)}).
		With("lb_policy", Field{Enums: append(slices.Clone(cluster.fields["lb_policy"].Enums), enumClusterProvided)})
	clusterCheck := cluster.check
	cluster.CheckedBy(func(m protoreflect.Message) []Violation {
		var out []Violation
		if clusterCheck != nil {
			out = clusterCheck(m)
		}
		c, ok := m.Interface().(*clusterv3.Cluster)
		if !ok {
			return out
		}
		originalDst := c.GetType() == clusterv3.Cluster_ORIGINAL_DST
		switch {
		case originalDst != (c.GetLbPolicy() == clusterv3.Cluster_CLUSTER_PROVIDED):
			out = append(out, Violation{Path: "lb_policy", Reason: "CLUSTER_PROVIDED goes with type ORIGINAL_DST, and only with it"})
		case originalDst && (c.GetLoadAssignment() != nil || c.GetEdsClusterConfig() != nil || len(c.GetHealthChecks()) > 0):
			out = append(out, Violation{Path: "type", Reason: "an ORIGINAL_DST cluster has no endpoints and no health checks"})
		}
		return out
	})
}

// maxPrefixRanges bounds the addresses of one chain's match.
const maxPrefixRanges = 4096

// hasOriginalDst reports whether l reads the original destination.
func hasOriginalDst(l *listenerv3.Listener) bool {
	return slices.ContainsFunc(l.GetListenerFilters(), func(f *listenerv3.ListenerFilter) bool {
		return f.GetTypedConfig().MessageName() == OriginalDstType
	})
}

// checkNoCapture: what only a capture listener has.
func checkNoCapture(l *listenerv3.Listener) []Violation {
	switch {
	case len(l.GetListenerFilters()) > 1:
		return []Violation{{Path: "listener_filters", Reason: "at most 1 entries supported (3 with original_dst)"}}
	case len(l.GetListenerFilters()) == 1 && l.GetListenerFilters()[0].GetTypedConfig().MessageName() == HTTPInspectorType:
		return []Violation{{Path: "listener_filters[0]", Reason: "the http_inspector needs original_dst"}}
	case l.GetDefaultFilterChain() != nil:
		return []Violation{{Path: "default_filter_chain", Reason: "needs the original_dst listener filter"}}
	case l.GetListenerFiltersTimeout() != nil || l.GetContinueOnListenerFiltersTimeout():
		return []Violation{{Path: "listener_filters_timeout", Reason: "needs the original_dst listener filter"}}
	}
	for i, c := range l.GetFilterChains() {
		if m := c.GetFilterChainMatch(); m.GetDestinationPort() != nil || len(m.GetPrefixRanges()) > 0 {
			return []Violation{{Path: "filter_chains[" + strconv.Itoa(i) + "].filter_chain_match", Reason: "prefix_ranges and destination_port need the original_dst listener filter"}}
		}
	}
	return nil
}

// checkCaptureListener: original_dst first; plaintext chains (no
// transport socket, no server names) ending in an HttpConnectionManager
// (alone; each chain may carry its own, as a route configuration per
// service) or a tcp_proxy; a default chain, a tcp_proxy.
func checkCaptureListener(l *listenerv3.Listener) []Violation {
	if l.GetListenerFilters()[0].GetTypedConfig().MessageName() != OriginalDstType {
		return []Violation{{Path: "listener_filters[0]", Reason: "original_dst must come first"}}
	}
	for i, c := range l.GetFilterChains() {
		path := "filter_chains[" + strconv.Itoa(i) + "]"
		if c.GetTransportSocket() != nil || len(c.GetFilterChainMatch().GetServerNames()) > 0 {
			return []Violation{{Path: path, Reason: "a capture listener's chains take the bytes as they come: no transport_socket, no server_names"}}
		}
		last := c.GetFilters()[len(c.GetFilters())-1]
		if last.GetTypedConfig().MessageName() != hcmType {
			continue
		}
		if len(c.GetFilters()) > 1 {
			return []Violation{{Path: path + ".filters", Reason: "an http_connection_manager comes alone"}}
		}
	}
	if d := l.GetDefaultFilterChain(); d != nil {
		fs := d.GetFilters()
		if d.GetFilterChainMatch() != nil || d.GetTransportSocket() != nil || len(fs) == 0 || fs[len(fs)-1].GetTypedConfig().MessageName() != TCPProxyType {
			return []Violation{{Path: "default_filter_chain", Reason: "a tcp_proxy, without filter_chain_match or transport_socket"}}
		}
	}
	return nil
}
