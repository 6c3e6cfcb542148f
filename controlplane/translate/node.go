package translate

import (
	"fmt"
	"net"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/meshgate/meshgate/api/xdsnode"
)

// Proxy roles, from node.metadata.role.
const (
	RoleGateway = xdsnode.RoleGateway
	RoleSidecar = xdsnode.RoleSidecar
	// RoleProxyless is a proxyless gRPC client: no proxy, its own xDS
	// client (proxyless.go).
	RoleProxyless = xdsnode.RoleProxyless
)

// DefaultOutboundAddress is where a sidecar's outbound listener binds when the
// node does not say.
const DefaultOutboundAddress = xdsnode.DefaultOutboundAddress

// NodeInfo is who a proxy is, from its xDS node (see docs/xds.md).
type NodeInfo struct {
	ID        string `json:"id"`
	Role      string `json:"role"`
	Namespace string `json:"namespace"`
	// Gateway is the Gateway a gateway node serves.
	Gateway string `json:"gateway,omitempty"`
	// Service is the service a sidecar fronts.
	Service         string `json:"service,omitempty"`
	InboundAddress  string `json:"inboundAddress,omitempty"`
	AppAddress      string `json:"appAddress,omitempty"`
	OutboundAddress string `json:"outboundAddress,omitempty"`
	// OutboundTCP is a sidecar's outbound TCP listeners
	// (xdsnode.KeyOutboundTCP).
	OutboundTCP string `json:"outboundTCP,omitempty"`
	// CaptureAddress, when set, is a transparent sidecar's capture
	// listener; CaptureUnknown what it does with a destination that is no
	// mesh service (xdsnode.KeyCaptureUnknown).
	CaptureAddress string `json:"captureAddress,omitempty"`
	CaptureUnknown string `json:"captureUnknown,omitempty"`
	// Listeners is, for a proxyless client, the Listener names it
	// subscribed to, comma-separated (the xDS server sets it; a node does
	// not send it).
	Listeners string `json:"listeners,omitempty"`
	// Zone is the proxy's zone (node.locality.zone): the endpoints of
	// clusters that prefer local ones are prioritized by it.
	Zone string `json:"zone,omitempty"`
	// Envoy: the node is an Envoy (node.user_agent_name "envoy"), which
	// resolves the proxy's own certificate from its local SDS server
	// (envoy.go).
	Envoy bool `json:"envoy,omitempty"`
}

// Name is the gateway or service name the node serves.
func (n NodeInfo) Name() string {
	if n.Role == RoleGateway {
		return n.Gateway
	}
	return n.Service
}

// NodeInfoFromNode reads the node identity and metadata a proxy sends
// (api/xdsnode), with their documented defaults.
func NodeInfoFromNode(node *corev3.Node) NodeInfo {
	m := xdsnode.FromNode(node)
	return NodeInfo{
		ID:              node.GetId(),
		Role:            m.Role,
		Namespace:       m.Namespace,
		Gateway:         m.Gateway,
		Service:         m.Service,
		InboundAddress:  m.InboundAddress,
		AppAddress:      m.AppAddress,
		OutboundAddress: m.OutboundAddress,
		OutboundTCP:     m.OutboundTCP,
		CaptureAddress:  m.CaptureAddress,
		CaptureUnknown:  m.CaptureUnknown,
		Zone:            node.GetLocality().GetZone(),
		Envoy:           xdsnode.IsEnvoy(node),
	}
}

// splitAddress parses "host:port".
func splitAddress(field, address string) (string, uint32, error) {
	host, portText, err := net.SplitHostPort(address)
	if err != nil {
		return "", 0, fmt.Errorf("node metadata %s %q: %w", field, address, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || host == "" {
		return "", 0, fmt.Errorf("node metadata %s %q: want host:port with a numeric port", field, address)
	}
	return host, uint32(port), nil
}
